"""Who may call what around the operators' console.

The console serves no RPC over gRPC (its mTLS port carries health and reflection
only), so its own policy is empty. Operators reach it over HTTP and sign in with
their own name and password (``CONSOLE_OPERATORS``). Outbound it presents the
``operator`` certificate, the same principal as the ``mamoru`` command, and
passes the signed-in operator's name (``x-operator``) so risk's audit shows who
acted; it calls only the RPCs below, each already open to ``operator``.
"""

from services.runtime.access import Access

ACCESS: dict[str, Access] = {}

# The certificate the console presents to its peers (and the pod label of its
# NetworkPolicy): operators' tools share one principal rather than a new one.
PRINCIPAL = "operator"

OUTBOUND: dict[str, tuple[str, ...]] = {
    "identity": ("ForceCredentialReset",),
    "wallet": ("CompensateCase",),
    "risk": (
        "ListDecisions",
        "GetPolicies",
        "SetPolicy",
        "ListPolicyChanges",
        "ListAlerts",
        "UpdateAlert",
        "GetCase",
        "ListCases",
        "UpdateCase",
        "ConfirmFraud",
        "FindAffectedAccounts",
    ),
}
