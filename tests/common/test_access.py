"""authgate_common.access: what `security` means, read one way by both services."""

from __future__ import annotations

from typing import Any

import pytest

from authgate_common.access import Access, operation_access

BEARER: dict[str, list[str]] = {"bearerAuth": []}


@pytest.mark.parametrize(
    ("operation", "document", "expected"),
    [
        ({"security": []}, [BEARER], Access.PUBLIC),
        ({"security": [{}]}, [BEARER], Access.PUBLIC),
        ({}, [], Access.PUBLIC),
        ({}, [BEARER], Access.REQUIRED),
        ({"security": [BEARER]}, [], Access.REQUIRED),
        ({"security": [BEARER, {}]}, [], Access.OPTIONAL),
        ({"security": [{}, BEARER]}, [], Access.OPTIONAL),
        ({}, [BEARER, {}], Access.OPTIONAL),
    ],
)
def test_operation_access(
    operation: dict[str, Any], document: list[dict[str, Any]], expected: Access
) -> None:
    assert operation_access(operation, document) is expected
