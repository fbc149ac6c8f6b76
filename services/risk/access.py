"""Who may call each risk RPC: assessments come from the services in the money
and sign-in paths; policies, rules, alerts and cases are for operators."""

from services.runtime.access import Access, allow

OPERATOR = allow("operator")

ACCESS: dict[str, Access] = {
    "AssessLogin": allow("identity"),
    "AssessLogins": allow("identity"),
    "AssessRegistration": allow("identity"),
    "AssessTopUp": allow("wallet"),
    "AssessPayment": allow("wallet"),
    "AssessPayments": allow("wallet"),
    "RecordOutcome": allow("identity", "wallet"),
    "RecordOutcomes": allow("identity", "wallet"),
    "ListDecisions": OPERATOR,
    "ListRules": OPERATOR,
    "UpdateRule": OPERATOR,
    "GetPolicies": allow("identity", "wallet", "notify", "gateway", "operator"),
    "SetPolicy": OPERATOR,
    "WatchPolicies": allow("identity", "wallet", "notify", "gateway", "operator"),
    "ListPolicyChanges": OPERATOR,
    "ListAlerts": OPERATOR,
    "UpdateAlert": OPERATOR,
    "OpenCase": allow("wallet", "operator"),
    "GetCase": allow("wallet", "operator"),
    "ListCases": OPERATOR,
    "UpdateCase": OPERATOR,
    "ConfirmFraud": OPERATOR,
    "FindAffectedAccounts": allow("wallet", "operator"),
}
