"""People in one Chromium for the e2e tests: each in a browser context of its own (its own
session cookie: its own identity), with camera and microphone granted and its console kept
for the failure report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from playwright.sync_api import Browser, BrowserContext, Page


@dataclass
class Visitor:
    name: str
    context: BrowserContext
    page: Page
    console: list[str] = field(default_factory=list)


V = TypeVar("V", bound=Visitor)


def new_visitor(browser: Browser, name: str, wait_ms: int, kind: type[V] = Visitor) -> V:
    context = browser.new_context()
    context.grant_permissions(["camera", "microphone"])
    page = context.new_page()
    page.set_default_timeout(wait_ms)
    visitor = kind(name, context, page)
    page.on("console", lambda msg: visitor.console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: visitor.console.append(f"pageerror: {err}"))
    return visitor


@contextmanager
def visitors(make: Callable[[str], V], names: list[str]) -> Iterator[list[V]]:
    """``make(name)`` for each name; every context closed (console printed) at the end."""
    made: list[V] = []
    try:
        for name in names:
            made.append(make(name))
        yield made
    finally:
        for visitor in made:
            if visitor.console:
                print(f"--- console of {visitor.name} ---\n" + "\n".join(visitor.console[-60:]))
            visitor.context.close()
