"""The multi-institution topology on PostgreSQL that the operations tests share."""

from __future__ import annotations

import pytest

from daemons.demo import start_deployment


@pytest.fixture(scope="module")
def topology(tmp_path_factory, pg_database_factory):
    """One toplevel, two institutions (2 + 1 render nodes), toplevel and institutions on PostgreSQL."""
    urls = {name: pg_database_factory() for name in ("toplevel", "institution-1", "institution-2")}
    running = start_deployment(tmp_path_factory.mktemp("topology"),
                               institution_names=["North Hospital", "South Clinic"],
                               nodes_per_institution=[2, 1], database_urls=urls)
    yield running
    running.stop()
