"""A browser-like visitor for tests against a real Daphne: its own cookies (so its own
identity) and, optionally, its own client address.

Any 127.x.y.z is a loopback address on Linux, so a visitor ``Visitor("127.0.0.2")`` reaches
a server bound to 127.0.0.1 from another source address: the server sees another client
address, as it would another machine.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar

from tests.support.ingest import multipart


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    url: str

    def json(self) -> dict:
        return json.loads(self.body or "{}")


class _SourceHandler(urllib.request.HTTPHandler):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def http_open(self, req):
        return self.do_open(http.client.HTTPConnection, req, source_address=(self.source, 0))


class Visitor:
    """One browser: a cookie jar, a source address; pages asked for as HTML."""

    def __init__(self, source: str = "127.0.0.1") -> None:
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            _SourceHandler(source), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def request(
        self, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        headers = {"Accept": "text/html", **(headers or {})}
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            with self.opener.open(req, timeout=60) as response:
                return Reply(
                    response.status, dict(response.headers), response.read().decode(), response.url
                )
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read().decode(), url)

    def post_form(self, server, path: str, fields: dict[str, str], *, page: str) -> Reply:
        """Load ``page`` (for the CSRF cookie), then post the form as the browser does."""
        first = self.request(server.url + page)
        assert first.status == 200, first
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": csrf}).encode()
        return self.request(server.url + path, data=data, headers={"Referer": server.url + page})

    def create_room(self, server, name: str, kind: str = "mesh") -> Reply:
        return self.post_form(server, "/rooms/", {"name": name, "kind": kind}, page="/")

    def create_stream(self, server, title: str = "Test show") -> Reply:
        return self.post_form(server, "/streams/new/", {"title": title}, page="/streams/")

    def new_stream(self, server, title: str = "Test show") -> tuple[str, str]:
        """Create a stream; its slug and the publish key shown once."""
        reply = self.create_stream(server, title)
        assert reply.status == 200 and "/publish/" in reply.url, (reply.status, reply.body[:500])
        slug = reply.url.rstrip("/").split("/")[-2]
        key = re.search(r'data-testid="new-key">(sk_[^<]+)<', reply.body).group(1)
        return slug, key

    def post_chunk(self, server, slug: str, key: str, seq: int, data: bytes) -> Reply:
        """One chunk by HTTP POST from this visitor's address (no cookies needed)."""
        body, content_type = multipart({"seq": str(seq)}, data)
        headers = {
            "Content-Type": content_type,
            "Authorization": f"Bearer {key}",
            "Accept": "application/json",
        }
        return self.request(f"{server.url}/streams/{slug}/ingest/", data=body, headers=headers)
