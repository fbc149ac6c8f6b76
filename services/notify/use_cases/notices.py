"""SendNotice, SendNotices and SendOperatorAlert: accept a notice once per key and wake the
delivery job."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.notify.domain.kinds import NoticeKind, may_send
from services.notify.domain.notices import AcceptedNotice, NewNotice, RateLimit
from services.notify.use_cases.ports import Notices
from services.runtime.errors import PermissionDenied


class Sending:
    def __init__(
        self, notices: Notices, *, rate_limit: RateLimit, on_accepted: Callable[[], None]
    ) -> None:
        self._notices = notices
        self._rate_limit = rate_limit
        self._on_accepted = on_accepted

    @staticmethod
    def check_caller(caller: str, kind: NoticeKind) -> None:
        """Only identity sends security kinds, identity and wallet money kinds,
        operators news."""
        if not may_send(caller, kind):
            raise PermissionDenied(
                "KIND_NOT_ALLOWED_FOR_CALLER", f"this caller may not send {kind.name} notices"
            )

    async def send(self, notice: NewNotice) -> AcceptedNotice:
        accepted = await self._notices.accept(notice, self._rate_limit)
        self._on_accepted()
        return accepted

    async def send_many(self, notices: Sequence[NewNotice]) -> list[AcceptedNotice]:
        """Each notice accepted as ``send`` would, at once; the delivery job woken once."""
        accepted = await self._notices.accept_many(notices, self._rate_limit)
        self._on_accepted()
        return accepted
