"""Names people type, on a real Daphne with PostgreSQL: stream titles, room names and
display names share one cleaner (``rtcsite.text.clean_title``).

PostgreSQL refuses a NUL in text (SQLite stores it), so a title with one was a 500 there;
bidi controls (U+202E) were stored and drew the lobby backwards. Each must now be a form
error on the page, and a title that only needs tidying shows tidied in the lobby.
"""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

pytestmark = pytest.mark.timeout(180)

SPOOFS = {
    "nul": "Nice\x00show",
    "bidi": "Official \u202egnirts\u202c stream",
    "isolate": "\u2067Free\u2069 prizes",
    "zero-width": "Nice\u200bshow",
    "nul and bidi": "\u202eevil\x00",
}


class Browser:
    """A cookie jar and the CSRF token, posting forms as the site's pages do."""

    def __init__(self, server):
        self.server = server
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar := CookieJar())
        )
        self.get("/")
        self.csrf = next(c.value for c in jar if c.name == "csrftoken")

    def get(self, path: str) -> str:
        with self.opener.open(self.server.url + path, timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> tuple[str, str]:
        """(final URL path after redirects, page HTML); a 500 raises ``HTTPError``."""
        form = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": self.csrf}).encode()
        request = urllib.request.Request(
            self.server.url + path, data=form, headers={"Referer": self.server.url + "/"}
        )
        with self.opener.open(request, timeout=30) as response:
            return urllib.parse.urlsplit(response.url).path, response.read().decode()


def messages(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<li class="message [^"]*">([^<]*)</li>', page)]


def test_names_with_controls_are_form_errors_on_postgres(postgres_url, daphne_factory):
    server = daphne_factory({"DATABASE_URL": postgres_url})
    browser = Browser(server)
    for label, spoof in SPOOFS.items():
        try:
            path, page = browser.post("/streams/new/", {"title": spoof})
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{label}: HTTP {exc.code}\n{server.log()}") from None
        assert path == "/streams/", (label, path)
        assert any("invisible or control" in m for m in messages(page)), (label, messages(page))

        path, page = browser.post("/rooms/", {"name": spoof, "kind": "mesh"})
        assert path == "/", (label, path)
        assert messages(page), label  # the form's own NUL check or the shared cleaner

        path, page = browser.post("/me/name/", {"name": spoof, "next": "/"})
        assert any("invisible or control" in m for m in messages(page)), (label, messages(page))

    # What only needs tidying is tidied: NFC and whitespace, in the lobby as on the page.
    path, page = browser.post("/streams/new/", {"title": "  Cafe\u0301 \t night\u00a0 live "})
    assert re.fullmatch(r"/streams/[a-z0-9-]+/publish/", path), path
    path, page = browser.post("/rooms/", {"name": " Cafe\u0301   crew ", "kind": "mesh"})
    assert path == "/rooms/cafe-crew/", path

    lobby = browser.get("/")
    assert ">Café night live</a>" in lobby
    assert "Café crew" in lobby
    for spoof in SPOOFS.values():
        assert spoof not in lobby
    for ch in ("\x00", "\u202e", "\u2067", "\u200b"):
        assert ch not in lobby, f"U+{ord(ch):04X} reached the lobby"
    assert "Traceback" not in server.log()
