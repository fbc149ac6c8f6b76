"""Who may call what around the web pages.

The web service serves no business RPC over gRPC (its mTLS port carries health
and reflection only), so its own policy is empty. People reach it over HTTP with
a session cookie; outbound, it calls as principal ``web``, with the person's own
tokens, proving the key its browser session holds:

* identity: registration, sign-in (password, second factor, passkey), refresh,
  sign-out, step-up, the wallet token exchange, factors, the password reset,
  the contact-change freeze, sessions and devices;
* wallet: the person's own calls (enrolment, balance, history, cards, top-up,
  payment codes, the "this wasn't me" report).
"""

from services.runtime.access import Access

ACCESS: dict[str, Access] = {}

OUTBOUND: dict[str, tuple[str, ...]] = {
    "identity": (
        "Register",
        "VerifyEmail",
        "Login",
        "SendSignInCode",
        "VerifySecondFactor",
        "BeginPasskeyLogin",
        "FinishPasskeyLogin",
        "RefreshSession",
        "Logout",
        "BeginStepUp",
        "StepUp",
        "ExchangeToken",
        "BeginPasskeyRegistration",
        "FinishPasskeyRegistration",
        "BeginTotpEnrollment",
        "ConfirmTotpEnrollment",
        "ListFactors",
        "RemoveFactor",
        "RegenerateRecoveryCodes",
        "RequestPasswordReset",
        "CompletePasswordReset",
        "FreezeContactChange",
        "ListSessions",
        "RevokeSession",
        "ListDevices",
        "RevokeDevice",
    ),
    "wallet": (
        "Enroll",
        "GetBalance",
        "ListTransactions",
        "RegisterFundingSource",
        "ListFundingSources",
        "TopUpFromCard",
        "IssuePaymentCode",
        "ReportUnauthorized",
    ),
}
