"""Risk's policy as identity enforces it before asking risk anything: blocked networks
and countries, and the networks risk contains during a stuffing wave."""

from __future__ import annotations

from datetime import UTC

from mamoru.risk.v1 import risk_pb2

from services.identity.domain.admission import OPEN_POLICY, AdmissionPolicy, Networks
from services.runtime.countries import CountryLookup
from services.runtime.peers import PolicyView


def admission_policy(policy: risk_pb2.Policy) -> AdmissionPolicy:
    until = (
        policy.containment_until.ToDatetime(tzinfo=UTC)
        if policy.HasField("containment_until")
        else None
    )
    return AdmissionPolicy(
        version=policy.version,
        blocked_networks=Networks(policy.blocked_networks),
        blocked_countries=frozenset(code.upper() for code in policy.blocked_countries),
        contained_networks=Networks(policy.contained_networks),
        containment_until=until,
        containment_alert_id=policy.containment_alert_id,
    )


class PolicyAdmission:
    """The followed policy, parsed once each time it changes rather than per request."""

    def __init__(self, policies: PolicyView | None, country_of: CountryLookup) -> None:
        self._policies = policies
        self._country_of = country_of
        self._parsed_from: risk_pb2.Policy | None = None
        self._current = OPEN_POLICY

    def current(self) -> AdmissionPolicy:
        policy = self._policies.policy if self._policies is not None else None
        # PolicyView replaces the message on every change, so identity is enough.
        if policy is not self._parsed_from:
            self._current = admission_policy(policy) if policy is not None else OPEN_POLICY
            self._parsed_from = policy
        return self._current

    def country_of(self, ip: str) -> str:
        return self._country_of(ip)
