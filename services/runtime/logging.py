"""One log format for the whole process: structlog events and standard-library records alike.

Every line carries ``service``, an ISO-8601 UTC ``timestamp``, ``level``, the
structlog context variables bound for the current RPC (``rpc_method``,
``request_id``) and, while a span is active, the OpenTelemetry ``trace_id`` and
``span_id`` so a line can be found from a trace and the other way round.

Lines are JSON off a terminal (what collectors ingest) and structlog's console
renderer on one. Records from grpc, asyncpg, aiosmtpd and any other library that
uses the standard ``logging`` module go through the same formatter.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from opentelemetry import trace
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")

# Remembers the handler installed by the last configure_logging call, so a second
# call replaces it instead of writing every line twice; other handlers (pytest's
# log capture, for one) are left in place.
_installed_handler: logging.Handler | None = None


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the active span's trace and span id in the hex form tracing backends show."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(span_context.trace_id)
        event_dict["span_id"] = trace.format_span_id(span_context.span_id)
    return event_dict


# Shared by structlog loggers and by standard-library records (as the formatter's
# foreign_pre_chain). It depends on nothing configure_logging receives, so loggers
# that cached it on first use stay correct when logging is configured again.
_SHARED_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.PositionalArgumentsFormatter(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    add_trace_ids,
]


# Tracebacks as data, without each frame's local variables: those hold request
# fields, tokens and connection strings (a database URL with its password).
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


# Libraries that log a full traceback on every retry while a server is away
# (asyncpg restoring its pool's minimum of connections): one line each instead.
_RETRYING_LIBRARIES = ("asyncpg",)


def _quiet_library_retries(record: logging.LogRecord) -> bool:
    if record.exc_info and record.name.startswith(_RETRYING_LIBRARIES):
        error = record.exc_info[1]
        if isinstance(error, Exception):
            lines = str(error).splitlines()
            reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
            record.msg, record.args = f"{record.getMessage()}: {reason}", ()
            record.exc_info, record.exc_text = None, None
    return True


def configure_logging(
    service: str,
    *,
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Send every log line of this process to ``stream`` (standard output by default).

    ``fmt`` is ``json``, ``console``, or ``auto`` (console on a terminal, JSON
    otherwise); ``level`` is ``debug``, ``info``, ``warning`` or ``error``. Calling
    it again replaces the previous output and settings.
    """
    global _installed_handler
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    output = sys.stdout if stream is None else stream
    as_json = fmt == "json" or (fmt == "auto" and not _is_terminal(output))

    renderer: list[Processor]
    if as_json:
        renderer = [_DICT_TRACEBACKS, structlog.processors.JSONRenderer()]
    else:
        # The console renderer lays out exceptions itself and needs them unformatted.
        renderer = [structlog.dev.ConsoleRenderer(colors=_is_terminal(output))]

    handler = logging.StreamHandler(output)
    handler.addFilter(_quiet_library_retries)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _service_adder(service),
                *renderer,
            ],
        )
    )

    # No line shows the caller's source position, thread or process, so records
    # skip looking them up (a stack walk per line): the standard library's own
    # advice for cheap logging, and it holds for every record of the process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

    root = logging.getLogger()
    if _installed_handler is not None:
        root.removeHandler(_installed_handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _installed_handler = handler
    # Python warnings (deprecations from dependencies) then arrive in the same format.
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            # Events below the level are dropped before any processor does work.
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; ``name`` (usually ``__name__``) becomes the ``logger`` field."""
    if name is None:
        return structlog.stdlib.get_logger()
    return structlog.stdlib.get_logger(name)


def _service_adder(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = service
        return event_dict

    return add_service


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
