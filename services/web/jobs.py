"""The web service's background work: the HTTP server itself, and expired sessions."""

from __future__ import annotations

from services.runtime.http import bind, http_server
from services.runtime.jobs import Background, every
from services.runtime.logging import get_logger
from services.web.storage.sessions import SessionStore

__all__ = ["bind", "housekeeping", "http_server"]

_log = get_logger("mamoru.web.jobs")
HOUSEKEEPING_SECONDS = 300.0


def housekeeping(store: SessionStore) -> Background:
    """Delete browser sessions idle past their expiry."""
    return every(HOUSEKEEPING_SECONDS, store.forget_expired, log=_log, event="web.housekeeping")
