"""A PostgreSQL server of the test's own, which the test may stop and start again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service.conftest import LocalPostgres, local_postgres


@pytest.fixture
def own_pg() -> Iterator[LocalPostgres]:
    pg = local_postgres("trainpool-own-pg-")
    try:
        yield pg
    finally:
        pg.remove()
