"""How a background job logs its failures: an outage once, a bug every time.

A job that retries (the outbox relay, notify's worker, a LISTEN loop, a policy
refresh) meets two kinds of failure. The database or a peer being away is an
outage: it fails every retry until it ends, so it is logged once, as one line
without a traceback, and its end once with how long it lasted. Anything else is
a bug and is logged with its traceback each time.
"""

from __future__ import annotations

import time
from typing import Any

from services.runtime.errors import transient_kind


def one_line(error: BaseException) -> str:
    """The error's type and the first line of its text, short enough for a log field."""
    lines = str(error).splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text[:300]


class OutageLog:
    """Failure logging of one retrying job; see the module docstring."""

    def __init__(self, logger: Any, event: str) -> None:
        self._log = logger
        self._event = event
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException, **fields: Any) -> None:
        kind = transient_kind(error)
        if kind is None:
            self._log.error(self._event, exc_info=error, **fields)
            return
        if self._down_since is not None:
            self._log.debug(self._event, kind=kind, reason=one_line(error), **fields)
            return
        self._down_since = time.monotonic()
        self._log.warning(self._event, kind=kind, reason=one_line(error), **fields)

    def ok(self) -> None:
        """The job just did its work: an outage, if one was logged, is over."""
        if self._down_since is None:
            return
        down = round(time.monotonic() - self._down_since, 1)
        self._down_since = None
        self._log.info(f"{self._event}.recovered", down_seconds=down)
