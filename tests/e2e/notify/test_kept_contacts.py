"""notify keeps the contacts it looked up for money notices and drops them when
identity announces a change (WatchContactChanges), against the real identity."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2
from mamoru.notify.v1 import notify_pb2

from services.runtime.access import bearer_metadata
from tests.e2e.notify.test_notify_service import FAST, TIMEOUT, people, start
from tests.e2e.runtime.test_metrics import scrape_until, value
from tests.harness import Cluster
from tests.support.people import code_in

KEPT = "mamoru_notify_kept_contacts"


async def mail_mentioning(cluster: Cluster, to: str, text: str) -> None:
    """Wait until a message to ``to`` mentions ``text``."""
    async with asyncio.timeout(TIMEOUT):
        while not [m for m in cluster.smtp.to(to) if text in m.html()]:
            await cluster.smtp.wait_for(len(cluster.smtp.messages) + 1, within=TIMEOUT)


def payment(account_id: str, movement_id: str) -> notify_pb2.SendNoticeRequest:
    return notify_pb2.SendNoticeRequest(
        account_id=account_id,
        kind=notify_pb2.NOTICE_KIND_PAYMENT,
        money=notify_pb2.MoneyParams(
            amount=common_pb2.Money(amount_minor=480, currency="JPY"),
            counterparty="まもるカフェ",
            movement_id=movement_id,
        ),
        idempotency_key=f"notice:{movement_id}",
    )


async def test_a_changed_address_is_used_for_the_next_payment_notice(cluster: Cluster) -> None:
    await start(cluster, with_risk=True)
    old, new = "kept-old@example.jp", "kept-new@example.jp"
    identity = people(cluster)
    someone = await identity.register(old)
    notify = cluster.stub("notify", as_="identity")
    first = str(uuid.uuid4())
    await notify.SendNotice(payment(someone.account_id, first), timeout=TIMEOUT)
    await mail_mentioning(cluster, old, first)
    await scrape_until(
        cluster.metrics_url("notify"),
        lambda samples: value(samples, KEPT) == 1,
        "the payer's contacts kept after the first notice",
    )

    session = await identity.sign_in(someone)
    person = bearer_metadata(session.access_token)
    gateway = cluster.stub("identity", as_="gateway")
    added = await gateway.AddContact(
        identity_pb2.AddContactRequest(
            kind=identity_pb2.CONTACT_KIND_EMAIL,
            address=new,
            make_primary=True,
            device_proof=someone.session_proof("AddContact", session),
        ),
        metadata=person,
        timeout=TIMEOUT,
    )
    (code_message,) = await cluster.smtp.wait_for(1, within=TIMEOUT, to=new)
    await gateway.VerifyContact(
        identity_pb2.VerifyContactRequest(
            contact_id=added.contact.contact_id, code=code_in(code_message)
        ),
        metadata=person,
        timeout=TIMEOUT,
    )
    await scrape_until(
        cluster.metrics_url("notify"),
        lambda samples: value(samples, KEPT) == 0,
        "the kept contacts dropped on identity's announcement",
    )

    second = str(uuid.uuid4())
    await notify.SendNotice(payment(someone.account_id, second), timeout=TIMEOUT)
    await mail_mentioning(cluster, new, second)


async def test_nothing_is_kept_while_identity_is_away_and_its_return_starts_afresh(
    cluster: Cluster,
) -> None:
    identity_env = {"IDENTITY_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    await cluster.start("identity", env=identity_env)
    # Retries that outlast notify's channel reconnecting to identity once it is back
    # (about a second): eight fast ones could all fall inside it and dead-letter the
    # notice this test waits for.
    await cluster.start("notify", env={**FAST, "NOTIFY_MAX_ATTEMPTS": "100"})
    someone = await people(cluster).register("kept-away@example.jp")
    notify = cluster.stub("notify", as_="identity")
    first = str(uuid.uuid4())
    await notify.SendNotice(payment(someone.account_id, first), timeout=TIMEOUT)
    await mail_mentioning(cluster, someone.email, first)
    await scrape_until(
        cluster.metrics_url("notify"),
        lambda samples: value(samples, KEPT) == 1,
        "the payer's contacts kept after the first notice",
    )

    await cluster.stop("identity")
    # Changes made meanwhile would go unannounced: nothing kept may be trusted.
    await scrape_until(
        cluster.metrics_url("notify"),
        lambda samples: value(samples, KEPT) == 0,
        "the kept contacts dropped once identity's stream ended",
    )
    await cluster.start("identity", env=identity_env)

    second = str(uuid.uuid4())
    await notify.SendNotice(payment(someone.account_id, second), timeout=TIMEOUT)
    await mail_mentioning(cluster, someone.email, second)
