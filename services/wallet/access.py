"""Who may call each wallet RPC. A person's calls need a token with audience
``wallet`` (issued by identity's ExchangeToken after step-up). Group-ID tokens
are admitted by the interceptor only so that the handler can refuse them with
PERMISSION_DENIED and the reason WALLET_AUDIENCE_REQUIRED (see
``api.callers.payer_claims``) instead of an UNAUTHENTICATED that reads like a bad token."""

from services.runtime.access import Access, allow

PAYER = allow("gateway", "web", audiences=["wallet", "group"])
# Store systems: a register with the shared ``pos`` certificate, or the partner
# gateway acting for a merchant it holds the key of; both send ``x-merchant-key``.
STORE = allow("pos", "gateway")
OPERATOR = allow("operator")

ACCESS: dict[str, Access] = {
    "Enroll": PAYER,
    "GetBalance": PAYER,
    "ListTransactions": PAYER,
    "RegisterFundingSource": PAYER,
    "ListFundingSources": PAYER,
    "RemoveFundingSource": PAYER,
    "TopUpFromCard": PAYER,
    "TopUpFromPoints": PAYER,
    "IssueCashTopUpCode": PAYER,
    "AcceptCashTopUp": STORE,
    "IssuePaymentCode": PAYER,
    "AuthorizePayment": STORE,
    "CapturePayment": STORE,
    "VoidAuthorization": STORE,
    "RefundPayment": allow("pos", "gateway", "operator"),
    "RegisterMerchant": OPERATOR,
    "RegisterStore": OPERATOR,
    "ReportUnauthorized": PAYER,
    "FreezeWallet": OPERATOR,
    "UnfreezeWallet": OPERATOR,
    "CompensateCase": OPERATOR,
    "Reconcile": OPERATOR,
    "NotifyBalanceHolders": OPERATOR,
    "RegisterPayoutAccount": PAYER,
    "ClaimPayout": PAYER,
    "ListUnclaimedBalances": OPERATOR,
    "CloseWallet": allow("identity"),
}
