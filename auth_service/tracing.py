"""OpenTelemetry for the auth service: SQL spans under the request's span.

The provider and the per-request SERVER span are shared with the gateway
(authgate_common.tracing). SQLAlchemy's instrumentation is attached to our engine alone
(its `EngineTracer`) rather than through its global instrumentor, which would patch every
engine in the process.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from sqlalchemy import Engine

INSTRUMENTATION_NAME = "auth_service"


def trace_engine(engine: Engine, tracer_provider: trace.TracerProvider) -> None:
    """Give every statement on this engine a client span under the current request's span."""
    tracer = tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    # NOTE: we export metrics with Prometheus, so the instrumentation's pool gauge is a no-op.
    pool_usage = (
        NoOpMeterProvider()
        .get_meter(INSTRUMENTATION_NAME)
        .create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(tracer, engine, pool_usage)
