"""One log format for the whole process: structlog events and standard-library records alike.

Every line carries ``service``, an ISO-8601 UTC ``timestamp``, ``level``, the
structlog context variables bound for the current RPC (``rpc_method``,
``request_id``) and, while a span is active, the OpenTelemetry ``trace_id`` and
``span_id`` so a line can be found from a trace and the other way round.

Lines are JSON off a terminal (what collectors ingest) and structlog's console
renderer on one. structlog events are rendered and written by structlog itself
(the hot path: one line per RPC); records from grpc, asyncpg, aiosmtpd and any
other library that uses the standard ``logging`` module go through a handler
whose formatter runs the same processors and renderer, to the same stream.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, TextIO, cast

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


# What a standard-library record goes through before the renderer (the formatter's
# foreign_pre_chain): the fields structlog's own chain in configure_logging adds to
# its events, read from the record where structlog reads them from its logger.
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


class _Output:
    """Where and how this process writes its lines; ``configure_logging`` changes it.

    structlog loggers are cached on first use, with the processors and the logger
    their first call found, and module-level loggers are used before (and after)
    logging is configured again. So they hold this object, never a stream, a
    level or a service name, and a new configuration reaches them all.
    """

    def __init__(self) -> None:
        self.service = ""
        self.level = logging.INFO
        self.stream: TextIO = sys.stdout
        self.renderer: list[Processor] = []
        # The standard-library handler's lock, so a structlog line and a library
        # record written from two threads never interleave.
        self.lock: threading.RLock | None = None


_output = _Output()

# structlog's method names by level (``exception`` logs at error).
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _drop_below_level(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method_name, logging.INFO) < _output.level:
        raise structlog.DropEvent
    return event_dict


def _add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", "")
    if name:
        event_dict["logger"] = name
    return event_dict


def _add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict["service"] = _output.service
    return event_dict


def _render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    rendered: Any = event_dict
    for processor in _output.renderer:
        rendered = processor(logger, method_name, rendered)
    return rendered


class _Lines:
    """structlog's logger here: each rendered line goes to the configured stream.

    structlog events are rendered and written directly, not through the standard
    library's records, handler and formatter: that path built two ``LogRecord``
    objects and ran the processors twice for each line, and the one line per RPC
    cost the servers more CPU than any other runtime layer but the span.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        stream = _output.stream
        try:
            with _output.lock or contextlib.nullcontext():
                stream.write(line + "\n")
                stream.flush()
        except Exception:
            # As the standard library's handlers do: a line that cannot be written (a
            # closed or broken stream) must never fail the code that logged it.
            with contextlib.suppress(Exception):
                sys.stderr.write("--- Logging error: a log line could not be written ---\n")

    debug = info = warning = warn = error = exception = critical = fatal = msg


def _lines(*args: Any) -> _Lines:
    return _Lines(args[0] if args and isinstance(args[0], str) else "")


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
                _add_service,
                _render,
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

    _output.service = service
    _output.level = logging.getLevelName(level.upper())
    _output.stream = output
    _output.renderer = renderer
    _output.lock = handler.lock
    structlog.configure(
        processors=[
            # Events below the level are dropped before any other processor works.
            _drop_below_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            add_trace_ids,
            _add_service,
            _render,
        ],
        logger_factory=_lines,
        # Level filtering is _drop_below_level's, so a new level reaches cached loggers.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger; ``name`` (usually ``__name__``) becomes the ``logger`` field."""
    if name is None:
        return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger())
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(name))


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
