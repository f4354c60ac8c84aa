"""Shared fixtures: real Daphne servers, a real Redis, real Chromium (Playwright), a fresh
PostgreSQL database.

Nothing here skips: a missing Chromium, Redis or PostgreSQL fails the test with a message
naming what is missing and how to get it (scripts/run-tests installs/starts the first two).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.support.chromium import ChromiumMissing, chromium_path, launched_chromium
from tests.support.daphne import DaphneServer
from tests.support.postgres import PostgresMissing, fresh_database


# --- servers -------------------------------------------------------------------------------
@pytest.fixture
def daphne_factory() -> Iterator[Callable[..., DaphneServer]]:
    """Start Daphne processes on free ports; all are stopped (by PID) after the test."""
    servers: list[DaphneServer] = []

    def start(
        env: dict[str, str] | None = None,
        *,
        migrate: bool = True,
        same_db_as: DaphneServer | None = None,
        **options: Any,
    ) -> DaphneServer:
        """``same_db_as``: another process of the same site (its SQLite file, migrated)."""
        env = dict(env or {})
        if same_db_as is not None:
            env["SQLITE_PATH"] = same_db_as.full_env()["SQLITE_PATH"]
            migrate = False
        server = DaphneServer(env=env, **options)
        servers.append(server)
        return server.start(migrate=migrate)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def live_server_proc() -> Iterator[DaphneServer]:
    """One Daphne with the embedded defaults (SQLite, in-memory layer), per test module."""
    server = DaphneServer().start()
    yield server
    server.stop()


# --- Redis ---------------------------------------------------------------------------------
@pytest.fixture
def redis_url() -> str:
    """A reachable real Redis (``TEST_REDIS_URL``, default 127.0.0.1:6379)."""
    return reachable_redis_url()


def reachable_redis_url() -> str:
    """``redis_url`` for module-scoped fixtures."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"No Redis server at {url} ({exc}). Run the suite with scripts/run-tests (it starts "
            "one), install one with 'apt-get install redis-server', or set TEST_REDIS_URL."
        )
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"rtcsite-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_env(redis_url: str, redis_prefix: str) -> dict[str, str]:
    """Settings for Daphne processes that share the real Redis: channel layer, presence
    keys and the cache (quota counters) under this test's own prefix (deleted afterwards)."""
    return {
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": f"{redis_prefix}-layer",
        "PRESENCE_KEY_PREFIX": f"{redis_prefix}-presence",
        "CACHE_KEY_PREFIX": f"{redis_prefix}-cache",
    }


# --- PostgreSQL ----------------------------------------------------------------------------
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on a real PostgreSQL (``TEST_POSTGRES_URL``, default the local
    ``postgres`` role), as a ``DATABASE_URL``; dropped after the test."""
    try:
        with fresh_database() as url:
            yield url
    except PostgresMissing as exc:
        pytest.fail(str(exc))


# --- Chromium ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium_browser():
    """Debian's Chromium, headless, fake camera/mic, no network beyond 127.0.0.1.

    Module-scoped on purpose: Playwright's sync API keeps an event loop running in the
    main thread while it is open, which would break every asyncio test after it.
    """
    try:
        chromium_path()
    except ChromiumMissing as exc:
        pytest.fail(str(exc))
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def browser_context(chromium_browser):
    context = chromium_browser.new_context()
    context.grant_permissions(["camera", "microphone"])
    yield context
    context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    page.set_default_timeout(15_000)
    yield page
    page.close()


# --- presence ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_presence_backend():
    """Each test gets a new presence backend and sweeper (they belong to one event loop)."""
    from presence import services
    from presence.backends import reset_backend

    reset_backend()
    yield
    services.stop_sweeper()
    reset_backend()


# --- quotas --------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_quota_counters():
    """In-process tests share one LocMemCache: each starts with no quota counted."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
