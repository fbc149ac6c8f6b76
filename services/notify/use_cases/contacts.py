"""Contacts notify keeps between notices, for as long as identity's change stream
vouches for them.

Identity announces every account whose registered contacts change
(WatchContactChanges); notify keeps the answers of its look-ups only while that
stream is open, drops an account's answer when it is announced, and drops them
all whenever the stream is (re)opened: what changed while it was closed is not
known. A look-up that overlapped an announcement is used once, never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from services.notify.domain.routing import Recipient, RegisteredContacts
from services.notify.use_cases.ports import ContactDirectory

# Which opening of the change stream is current (None: no stream is open).
StreamOpening = Callable[[], object | None]


class KeptContacts:
    """A bounded ``ContactDirectory`` in front of identity's, least recently used first out."""

    def __init__(
        self, directory: ContactDirectory, *, capacity: int, stream: StreamOpening
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._directory = directory
        self._capacity = capacity
        self._stream = stream
        self._opening: object | None = None
        self._entries: OrderedDict[str, RegisteredContacts] = OrderedDict()
        self._keys_of_account: dict[str, set[str]] = {}
        # Counts every forgetting, so a look-up can tell one happened meanwhile.
        self._forgettings = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        self._current_opening()
        return len(self._entries)

    def holds(self, recipient: Recipient) -> bool:
        self._current_opening()
        return recipient.key in self._entries

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        opening = self._current_opening()
        if pending_contact_id or opening is None:
            return await self._directory.registered_contacts(
                recipient, pending_contact_id=pending_contact_id
            )
        key = recipient.key
        kept = self._entries.get(key)
        if kept is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return kept
        self.misses += 1
        before = self._forgettings
        answer = await self._directory.registered_contacts(recipient)
        if self._forgettings == before and self._current_opening() == opening:
            self._keep(key, answer)
        return answer

    def forget(self, account_ids: Iterable[str]) -> None:
        """Identity announced that these accounts' contacts changed."""
        for account_id in account_ids:
            self._forgettings += 1
            for key in self._keys_of_account.pop(account_id, ()):
                self._entries.pop(key, None)

    def _current_opening(self) -> object | None:
        opening = self._stream()
        if opening != self._opening:
            # The stream closed or opened again since the answers were kept.
            self._opening = opening
            self._forgettings += 1
            self._entries.clear()
            self._keys_of_account.clear()
        return opening

    def _keep(self, key: str, answer: RegisteredContacts) -> None:
        self._entries[key] = answer
        self._keys_of_account.setdefault(answer.account_id, set()).add(key)
        while len(self._entries) > self._capacity:
            old_key, old = self._entries.popitem(last=False)
            keys = self._keys_of_account.get(old.account_id)
            if keys is not None:
                keys.discard(old_key)
                if not keys:
                    del self._keys_of_account[old.account_id]
