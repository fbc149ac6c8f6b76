"""Who may call each notify RPC. Which notice kinds a caller may send is
checked per kind in the handler: only identity sends security kinds, identity
and wallet money kinds, operators marketing news."""

from services.runtime.access import Access, allow

PERSON = allow("gateway", audiences=["group"])
OPERATOR = allow("operator")

ACCESS: dict[str, Access] = {
    "SendNotice": allow("identity", "wallet", "operator"),
    "SendNotices": allow("identity", "wallet"),
    "SendOperatorAlert": allow("risk"),
    "ListInbox": PERSON,
    "MarkRead": PERSON,
    "GetPreferences": PERSON,
    "UpdatePreferences": PERSON,
    "ListDeliveries": OPERATOR,
    "GetDeliveryStats": OPERATOR,
    "ListDeadLetters": OPERATOR,
    "RetryDeadLetter": OPERATOR,
}
