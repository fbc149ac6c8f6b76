"""notify's gRPC handlers: request -> command (api.convert) -> use case -> reply."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.notify.api import convert
from services.notify.use_cases.inbox import PersonalView
from services.notify.use_cases.notices import Sending
from services.notify.use_cases.operations import Operations
from services.runtime.access import current_caller
from services.runtime.errors import each_item

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class NotifyApi(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, sending: Sending, personal: PersonalView, operations: Operations) -> None:
        self._sending = sending
        self._personal = personal
        self._operations = operations

    async def SendNotice(
        self, request: notify_pb2.SendNoticeRequest, context: Context
    ) -> notify_pb2.SendNoticeResponse:
        caller = current_caller()
        notice = convert.notice_of(
            request, caller, lambda kind: self._sending.check_caller(caller, kind)
        )
        accepted = await self._sending.send(notice)
        return notify_pb2.SendNoticeResponse(
            notice_id=str(accepted.notice_id), coalesced=accepted.coalesced
        )

    async def SendNotices(
        self, request: notify_pb2.SendNoticesRequest, context: Context
    ) -> notify_pb2.SendNoticesResponse:
        caller = current_caller()
        notices = each_item(
            "notices",
            request.notices,
            lambda item: convert.notice_of(
                item, caller, lambda kind: self._sending.check_caller(caller, kind)
            ),
        )
        accepted = await self._sending.send_many(notices)
        return notify_pb2.SendNoticesResponse(
            answers=[
                notify_pb2.SendNoticeResponse(notice_id=str(a.notice_id), coalesced=a.coalesced)
                for a in accepted
            ]
        )

    async def SendOperatorAlert(
        self, request: notify_pb2.SendOperatorAlertRequest, context: Context
    ) -> notify_pb2.SendOperatorAlertResponse:
        accepted = await self._sending.send(convert.alert_of(request, current_caller()))
        return notify_pb2.SendOperatorAlertResponse(notice_id=str(accepted.notice_id))

    async def ListInbox(
        self, request: notify_pb2.ListInboxRequest, context: Context
    ) -> notify_pb2.ListInboxResponse:
        account_id = convert.token_account()
        before, size = convert.page_of(request.page)
        records = await self._personal.inbox(
            account_id, unread_only=request.unread_only, before_seq=before, limit=size + 1
        )
        return convert.inbox_message(records, size)

    async def MarkRead(
        self, request: notify_pb2.MarkReadRequest, context: Context
    ) -> notify_pb2.MarkReadResponse:
        account_id = convert.token_account()
        marked = await self._personal.mark_read(account_id, convert.notice_ids_of(request))
        return notify_pb2.MarkReadResponse(marked=marked)

    async def GetPreferences(
        self, request: notify_pb2.GetPreferencesRequest, context: Context
    ) -> notify_pb2.GetPreferencesResponse:
        muted = await self._personal.muted_kinds(convert.token_account())
        return notify_pb2.GetPreferencesResponse(muted_kinds=convert.kinds_message(muted))

    async def UpdatePreferences(
        self, request: notify_pb2.UpdatePreferencesRequest, context: Context
    ) -> notify_pb2.UpdatePreferencesResponse:
        account_id = convert.token_account()
        muted = await self._personal.mute(account_id, convert.muted_kinds_of(request))
        return notify_pb2.UpdatePreferencesResponse(muted_kinds=convert.kinds_message(muted))

    async def ListDeliveries(
        self, request: notify_pb2.ListDeliveriesRequest, context: Context
    ) -> notify_pb2.ListDeliveriesResponse:
        account_id, before, size = convert.account_page_of(request)
        records = await self._operations.deliveries_of_account(
            account_id, before_seq=before, limit=size + 1
        )
        deliveries, token = convert.deliveries_page(records, size)
        return notify_pb2.ListDeliveriesResponse(deliveries=deliveries, next_page_token=token)

    async def GetDeliveryStats(
        self, request: notify_pb2.GetDeliveryStatsRequest, context: Context
    ) -> notify_pb2.GetDeliveryStatsResponse:
        since, until = convert.stats_window_of(request)
        return convert.stats_message(await self._operations.stats(since, until))

    async def ListDeadLetters(
        self, request: notify_pb2.ListDeadLettersRequest, context: Context
    ) -> notify_pb2.ListDeadLettersResponse:
        before, size = convert.page_of(request.page)
        records = await self._operations.dead_letters(before_seq=before, limit=size + 1)
        deliveries, token = convert.deliveries_page(records, size)
        return notify_pb2.ListDeadLettersResponse(deliveries=deliveries, next_page_token=token)

    async def RetryDeadLetter(
        self, request: notify_pb2.RetryDeadLetterRequest, context: Context
    ) -> notify_pb2.RetryDeadLetterResponse:
        record = await self._operations.retry_dead(convert.delivery_id_of(request))
        return notify_pb2.RetryDeadLetterResponse(delivery=convert.delivery_message(record))
