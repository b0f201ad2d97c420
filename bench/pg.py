"""A fresh PostgreSQL database for one benchmark run, on a server named by an administrator's URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new database `prefix_<random>` on the server of `admin_url` (a role that may
    create databases), dropped at the end even while daemons still hold connections to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield name, urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
