"""A fresh PostgreSQL database for one test, created and dropped around it.

The suite runs on SQLite; some faults only show on PostgreSQL (it refuses a NUL in text,
where SQLite stores it). ``TEST_POSTGRES_URL`` names a server and a role that may create
databases (default: ``postgres`` on 127.0.0.1:5432, trust auth, as scripts/run-tests and
the CI image have it); each test gets its own database on it, dropped afterwards even if
a server still holds connections to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server (or no right to create a database) at the configured URL."""


def admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_connection(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise PostgresMissing(
            f"No PostgreSQL server at {url} ({str(exc).strip()}). Install one with "
            "'apt-get install postgresql' (trust auth for 'postgres' on 127.0.0.1), or set "
            "TEST_POSTGRES_URL to a role that may create databases."
        ) from exc


@contextmanager
def fresh_database(url: str | None = None) -> Iterator[str]:
    """A new empty database; yields its URL (for ``DATABASE_URL``), drops it afterwards."""
    url = url or admin_url()
    name = f"rtcsite_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection(url) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise PostgresMissing(f"Cannot create a database at {url}: {exc}") from exc
    try:
        yield with_database(url, name)
    finally:
        with _admin_connection(url) as conn:
            # FORCE: a server process that outlived the test may still be connected
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
