import wrapt
from asyncpg.connection import Connection
from asyncpg.prepared_stmt import PreparedStatement
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.tracing import configure_tracing, shutdown_tracing


def wrapper_depth(function: object) -> int:
    depth = 0
    while isinstance(function, wrapt.BaseObjectProxy):
        depth += 1
        function = function.__wrapped__
    return depth


def test_shutdown_unpatches_asyncpg_so_tracing_can_be_configured_again():
    configure_tracing("wallet", exporter=InMemorySpanExporter())
    assert wrapper_depth(PreparedStatement.fetch) == 1
    assert wrapper_depth(Connection.fetch) == 1
    shutdown_tracing()
    assert wrapper_depth(PreparedStatement.fetch) == 0
    assert wrapper_depth(Connection.fetch) == 0

    configure_tracing("wallet", exporter=InMemorySpanExporter())
    try:
        assert wrapper_depth(PreparedStatement.fetch) == 1
    finally:
        shutdown_tracing()


def test_the_provider_names_the_service_and_exports_nothing_without_an_endpoint():
    provider = configure_tracing("risk")
    try:
        assert provider.resource.attributes["service.name"] == "mamoru-risk"
        # No endpoint and no exporter: spans are made (trace ids reach the logs)
        # but no processor sends them anywhere.
        assert provider._active_span_processor._span_processors == ()
    finally:
        shutdown_tracing()
