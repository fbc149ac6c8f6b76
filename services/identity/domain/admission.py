"""Which password attempts identity refuses before any hash, and why.

A refusal is an answer: the caller gets the wrong password's INVALID_CREDENTIALS and
identity spends no argon2 on it. The rules are pure so that they can be read and
tested on their own; the hashing budget's waiting and the policy's arrival live in
``clients/``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.runtime.errors import Unavailable

# NIST SP 800-63B-4 (3.2.2): no more than 100 consecutive failed attempts on one
# authenticator. Past it only the account's own devices may try its password.
MAX_CONSECUTIVE_FAILURES = 100


class Refusal(enum.StrEnum):
    """Why an attempt got no hash (the metric's ``reason`` label)."""

    RISK_VERDICT = "risk_verdict"
    BLOCKED_NETWORK = "blocked_network"
    BLOCKED_COUNTRY = "blocked_country"
    CONTAINED_NETWORK = "contained_network"
    STUFFING_WAVE = "stuffing_wave"
    FAILURE_CAP = "failure_cap"
    HASH_BUDGET = "hash_budget"


class Lane(enum.Enum):
    """Who a hash is for. A device the account knows (its key proven) is never queued
    behind strangers: it has slots of its own and goes first for the shared ones."""

    KNOWN_DEVICE = "known_device"
    NEW_DEVICE = "new_device"


class AdmittedPlace(Protocol):
    """An attempt's place in a lane of the hashing budget, held from its admission
    (before risk is asked) until its hash starts."""

    def give_up(self) -> None:
        """Leave the place unused (idempotent)."""
        ...


class HashBudgetExhausted(Unavailable):
    """No hashing slot within the lane's bounds; the attempt gets no hash. Where it is
    not answered as a wrong password, the caller is told to try again shortly."""

    def __init__(self) -> None:
        super().__init__("BUSY", "too many password checks at once; try again in a moment")


@dataclass(frozen=True)
class HashSlots:
    """How many hashes may run at once, and how many of them only known devices use."""

    total: int
    for_known_devices: int

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError("at least one hash must be able to run")
        if not 0 <= self.for_known_devices < self.total or (
            self.total == 1 and self.for_known_devices != 0
        ):
            raise ValueError("slots for known devices must leave strangers at least one")

    def may_start(
        self, lane: Lane, *, running_known: int, running_new: int, known_waiting: int
    ) -> bool:
        """Whether a hash of ``lane`` may start now."""
        if running_known + running_new >= self.total:
            return False
        if lane is Lane.KNOWN_DEVICE:
            return True
        # A known device waiting for a slot gets the next one, whoever freed it.
        return known_waiting == 0 and running_new < self.for_strangers

    @property
    def for_strangers(self) -> int:
        return self.total - self.for_known_devices

    def stranger_wait(self, strangers_ahead: int, hash_seconds: float) -> float:
        """About how long a stranger arriving now would wait for a slot, with
        ``strangers_ahead`` hashing or waiting before it."""
        queued_before = max(0, strangers_ahead - self.for_strangers + 1)
        return queued_before / self.for_strangers * hash_seconds


def past_failure_cap(consecutive_failures: int) -> bool:
    """Whether an account's password may no longer be tried from a device it does not know."""
    return consecutive_failures >= MAX_CONSECUTIVE_FAILURES


def new_device_refusal(*, contained: bool, wave: bool, hash_room: bool) -> Refusal | None:
    """Why a password attempt from a device the account does not know is refused before
    risk is asked, if it is: its network is contained, risk reports a stuffing wave, or
    the strangers' lane is full. The account's own devices are never refused here."""
    if contained:
        return Refusal.CONTAINED_NETWORK
    if wave:
        return Refusal.STUFFING_WAVE
    if not hash_room:
        return Refusal.HASH_BUDGET
    return None


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IpAddress | None:
    """The address, an IPv4-mapped IPv6 one as the IPv4 address it carries (so that it
    matches IPv4 networks, as risk matches it)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Networks:
    """A set of CIDRs, matched with one set lookup per distinct prefix length.

    Built once per policy version, so a request's check does not depend on how many
    networks the policy lists (a contained wave spans hundreds of /24s).
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        prefixes: dict[tuple[int, int], set[int]] = {}
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                continue
            shift = network.max_prefixlen - network.prefixlen
            key = (network.version, shift)
            prefixes.setdefault(key, set()).add(int(network.network_address) >> shift)
        self._prefixes = tuple(
            (version, shift, frozenset(s)) for (version, shift), s in prefixes.items()
        )

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        value = int(address)
        return any(
            version == address.version and (value >> shift) in networks
            for version, shift, networks in self._prefixes
        )


NO_NETWORKS = Networks(())


@dataclass(frozen=True)
class AdmissionPolicy:
    """The part of risk's policy identity enforces before asking risk anything."""

    version: int = 0
    blocked_networks: Networks = NO_NETWORKS
    blocked_countries: frozenset[str] = frozenset()
    contained_networks: Networks = NO_NETWORKS
    containment_until: datetime | None = None
    containment_alert_id: str = ""

    def blocked(
        self, address: IpAddress | None, country_of: Callable[[str], str]
    ) -> Refusal | None:
        """Why every attempt from ``address`` is refused, known device or not, if it is."""
        if address is None:
            return None
        if address in self.blocked_networks:
            return Refusal.BLOCKED_NETWORK
        # The country is looked up only while some country is blocked.
        if self.blocked_countries and country_of(str(address)) in self.blocked_countries:
            return Refusal.BLOCKED_COUNTRY
        return None

    def contained(self, address: IpAddress | None, now: datetime) -> bool:
        """Whether ``address`` is in a network risk contains now."""
        return (
            address is not None
            and self.containment_until is not None
            and now < self.containment_until
            and address in self.contained_networks
        )

    def wave(self, now: datetime) -> bool:
        """Whether risk reports a stuffing wave now: an alert's containment is in force.
        While it is, no device an account does not know gets a password hash, from any
        network; the account's own devices and passkeys sign in as ever, and an
        operator who lifts the containment ends it."""
        return (
            bool(self.containment_alert_id)
            and self.containment_until is not None
            and now < self.containment_until
        )


OPEN_POLICY = AdmissionPolicy()
