"""Property-based bad input: schemathesis generates requests from the service's own
OpenAPI schema, valid and invalid, and sends them to the real service over HTTP
(real PostgreSQL and Redis). No answer may be a 5xx, and every answer must match
the schema: its documented status codes, content type and body.

At least 1,000 cases per run: ``CASES_PER_OPERATION`` for each scoring and label
operation, fewer for the bodiless GETs; the session's total is asserted at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import LiveServer
from sankofa.api.app import create_app
from sankofa.settings import Settings

CASES_PER_OPERATION = 250
#: Every case sent, by operation and status, for the total asserted at the end.
SENT: Counter[tuple[str, int]] = Counter()

schema = schemathesis.openapi.from_dict(create_app(Settings(environment="test")).openapi())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", autouse=True)
def at_least_a_thousand_cases() -> Iterator[None]:
    yield
    if SENT:  # the module ran (not deselected to a single operation)
        total = sum(SENT.values())
        by_status = Counter[int]()
        for (_, status), n in SENT.items():
            by_status[status] += n
        print(f"schemathesis: {total} cases, by status {dict(sorted(by_status.items()))}")
        if len({op for op, _ in SENT}) == len(list(schema.get_all_operations())):
            assert total >= 1000, total


@schema.parametrize()
@settings(
    max_examples=CASES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_generated_requests_get_documented_answers_and_no_5xx(
    case: schemathesis.Case, live_server: LiveServer
) -> None:
    response = case.call_and_validate(base_url=live_server.url, checks=CHECKS, timeout=30)
    SENT[(f"{case.method} {case.path}", response.status_code)] += 1
