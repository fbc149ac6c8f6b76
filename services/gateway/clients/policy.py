"""Risk's partner kill switch, followed through WatchPolicies like every other switch."""

from __future__ import annotations

import uuid

from services.runtime.peers import PolicyView


class PartnerSwitch:
    def __init__(self, view: PolicyView) -> None:
        self.view = view

    def suspended(self, partner_id: uuid.UUID) -> bool:
        policy = self.view.policy
        return policy is not None and str(partner_id) in policy.suspended_partners
