"""The contacts notify keeps between notices, against an in-memory identity and a
stand-in for the change stream's state."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from services.notify.domain.kinds import Channel
from services.notify.domain.routing import ContactAddress, Recipient, RegisteredContacts
from services.notify.use_cases.contacts import KeptContacts


@dataclass
class Identity:
    """Answers each account's current primary email; counts the questions."""

    addresses: dict[str, str] = field(default_factory=dict)
    payers: dict[str, str] = field(default_factory=dict)
    asked: int = 0
    # Set to hold the answer until released (a look-up in flight).
    hold: asyncio.Event | None = None
    asking: asyncio.Event = field(default_factory=asyncio.Event)

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        self.asked += 1
        self.asking.set()
        account_id = recipient.account_id or self.payers[recipient.payer_id or ""]
        address = self.addresses[account_id]
        if self.hold is not None:
            await self.hold.wait()
        contact = ContactAddress("c", Channel.EMAIL, address, True, True)
        return RegisteredContacts(account_id=account_id, contacts=(contact,))


@dataclass
class Stream:
    """Which subscription of the change stream is open (None: none is)."""

    opening: object | None = 1.0

    def __call__(self) -> object | None:
        return self.opening


def address_of(answer: RegisteredContacts) -> str:
    return answer.contacts[0].address


def person(identity: Identity, address: str) -> tuple[str, Recipient]:
    account_id = str(uuid.uuid4())
    identity.addresses[account_id] = address
    return account_id, Recipient(account_id=account_id)


async def test_an_answer_is_kept_until_identity_announces_a_change() -> None:
    identity, stream = Identity(), Stream()
    kept = KeptContacts(identity, capacity=10, stream=stream)
    account_id, recipient = person(identity, "old@example.jp")

    await kept.registered_contacts(recipient)
    await kept.registered_contacts(recipient)
    assert identity.asked == 1

    identity.addresses[account_id] = "new@example.jp"
    kept.forget([account_id])

    assert address_of(await kept.registered_contacts(recipient)) == "new@example.jp"
    assert identity.asked == 2


async def test_a_payer_id_answer_is_forgotten_by_its_account() -> None:
    identity = Identity()
    kept = KeptContacts(identity, capacity=10, stream=Stream())
    account_id, _ = person(identity, "old@example.jp")
    payer = str(uuid.uuid4())
    identity.payers[payer] = account_id

    await kept.registered_contacts(Recipient(payer_id=payer))
    assert kept.holds(Recipient(payer_id=payer))
    kept.forget([account_id])

    assert not kept.holds(Recipient(payer_id=payer))


async def test_every_answer_is_dropped_when_the_stream_opens_again() -> None:
    identity, stream = Identity(), Stream()
    kept = KeptContacts(identity, capacity=10, stream=stream)
    _, recipient = person(identity, "p@example.jp")
    await kept.registered_contacts(recipient)

    stream.opening = 2.0
    await kept.registered_contacts(recipient)

    assert identity.asked == 2


async def test_without_a_stream_identity_is_asked_every_time_and_nothing_is_kept() -> None:
    identity, stream = Identity(), Stream(opening=None)
    kept = KeptContacts(identity, capacity=10, stream=stream)
    _, recipient = person(identity, "p@example.jp")

    await kept.registered_contacts(recipient)
    await kept.registered_contacts(recipient)

    assert identity.asked == 2 and len(kept) == 0


async def test_an_answer_that_overlapped_an_announcement_is_used_once_not_kept() -> None:
    identity = Identity(hold=asyncio.Event())
    kept = KeptContacts(identity, capacity=10, stream=Stream())
    account_id, recipient = person(identity, "old@example.jp")

    looking = asyncio.create_task(kept.registered_contacts(recipient))
    await identity.asking.wait()
    kept.forget([account_id])
    assert identity.hold is not None
    identity.hold.set()
    await looking

    assert not kept.holds(recipient)


async def test_a_pending_contact_look_up_is_never_kept() -> None:
    identity = Identity()
    kept = KeptContacts(identity, capacity=10, stream=Stream())
    _, recipient = person(identity, "p@example.jp")

    await kept.registered_contacts(recipient, pending_contact_id=str(uuid.uuid4()))

    assert not kept.holds(recipient)


async def test_the_least_recently_used_answer_leaves_first_when_full() -> None:
    identity = Identity()
    kept = KeptContacts(identity, capacity=2, stream=Stream())
    (_, first), (_, second), (_, third) = (person(identity, f"{n}@example.jp") for n in range(3))

    await kept.registered_contacts(first)
    await kept.registered_contacts(second)
    await kept.registered_contacts(first)
    await kept.registered_contacts(third)

    assert (kept.holds(first), kept.holds(second), kept.holds(third)) == (True, False, True)
