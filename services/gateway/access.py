"""Who may call what around the gateway.

The gateway serves no business RPC over gRPC (its mTLS port carries health and
reflection only), so its own policy is empty. Partners reach it over HTTP with
OAuth2 access tokens; their scopes are in ``domain/partners.py``. Operators
manage partners with ``python -m services.gateway.admin`` against the gateway's
database. Outbound, the gateway calls as principal ``gateway``:

* wallet: AuthorizePayment, CapturePayment, VoidAuthorization, RefundPayment and
  AcceptCashTopUp, each with the ``x-merchant-key`` of the merchant the partner
  acts for (see ``services/wallet/access.py``);
* risk: GetPolicies and WatchPolicies, to follow the partner kill switch.
"""

from services.runtime.access import Access

ACCESS: dict[str, Access] = {}

OUTBOUND: dict[str, tuple[str, ...]] = {
    "wallet": (
        "AuthorizePayment",
        "CapturePayment",
        "VoidAuthorization",
        "RefundPayment",
        "AcceptCashTopUp",
    ),
    "risk": ("GetPolicies", "WatchPolicies"),
}
