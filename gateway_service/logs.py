"""Logging: one JSON object per line in production, readable lines on a console."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

ACCESS_LOGGER = "gateway_service.access"
_HANDLER_MARK = "_authgate_gateway"
# PERF: json.dumps(..., default=str) builds a new encoder per call; this one is reused
# (same settings, so the same output).
_ENCODER = json.JSONEncoder(default=str)


def _access_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "access", None)
    return fields if record.name == ACCESS_LOGGER and isinstance(fields, dict) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the access fields or the message."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for one record."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = _access_fields(record)
        if fields is not None:
            entry["message"] = "request"
            entry.update(fields)
            return _ENCODER.encode(entry)
        entry["message"] = record.getMessage()
        # Any other line written while a traced request runs (an upstream failure, a Redis
        # warning) joins its trace; with tracing off the current span is the invalid no-op.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
            entry["span_id"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            # NOTE: tracebacks go to our log only, never into a response.
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class ConsoleFormatter(logging.Formatter):
    """Lines for people: `... gateway_service.access GET /api/v1/auth 200 3.1ms rid=...`."""

    def __init__(self) -> None:
        """The usual `time level logger message` layout for non-access lines."""
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The access line in its short form; any other record as usual."""
        fields = _access_fields(record)
        if fields is None:
            return super().formatMessage(record)
        line = (
            f"{record.asctime} {record.levelname} {record.name} "
            f"{fields.get('method')} {fields.get('route')} "
            f"{fields.get('status')} {fields.get('duration_ms') or 0.0:.1f}ms "
            f"rid={fields.get('request_id')} user={fields.get('user_id') or '-'} "
            f"ip={fields.get('client_ip') or '-'}"
        )
        trace_id = fields.get("trace_id")
        return f"{line} trace={trace_id}" if trace_id else line


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send the gateway's loggers to stderr as JSON or console lines (idempotent)."""
    logger = logging.getLogger("gateway_service")
    handler = next((h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    logger.setLevel(level)
    logger.propagate = False
