"""Schema-driven fuzzing of the whole HTTP API (schemathesis against /openapi.json), as
each role: no 5xx, and every response keeps the schema the API declares."""

from __future__ import annotations

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from service.api_harness import make_api

pytestmark = pytest.mark.slow

# Built at import: schemathesis reads the schema when the module is collected.
_API = make_api(f"sqlite:///{tempfile.mkdtemp(prefix='tp-fuzz-')}/pool.db")
_API.submit("member@a")  # something to find
schema = schemathesis.openapi.from_asgi("/openapi.json", _API.client.app)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
ROLES = ["member@a", "org-admin@a", "pool-admin"]


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
# Derandomized: CI sees the same cases every run (a random run once found an unbounded
# integer reaching SQLite; run with derandomize=False to explore further).
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_schema_kept(case: schemathesis.Case, role: str) -> None:
    case.call_and_validate(headers=_API.as_(role), checks=CHECKS)
