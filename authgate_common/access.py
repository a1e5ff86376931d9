"""What an operation's OpenAPI `security` asks of a caller: one reading for both services.

OpenAPI 3.1 §4.8.10: `security` lists alternatives; an empty requirement object `{}`
is the alternative "no credentials". So no list (or only `{}` entries) means public,
`{}` next to a scheme means optional (checked when sent), and schemes alone mean required.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any


class Access(enum.Enum):
    """Whether an operation needs credentials."""

    PUBLIC = "public"
    OPTIONAL = "optional"
    REQUIRED = "required"


def operation_access(
    operation: Mapping[str, Any], document_security: Sequence[Mapping[str, Any]] = ()
) -> Access:
    """The access an operation needs: its own `security`, else the document's."""
    security = operation.get("security", document_security) or []
    named = [requirement for requirement in security if requirement]
    if not named:
        return Access.PUBLIC
    if len(named) < len(security):
        return Access.OPTIONAL
    return Access.REQUIRED
