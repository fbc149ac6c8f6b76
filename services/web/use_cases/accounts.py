"""What a person does with their account from a browser, over identity's RPCs.

Every call that names a device carries a fresh proof by the browser session's own
key; calls for the person carry their access token, refreshed shortly before it
expires. Nothing here returns a token to the pages: tokens stay in the session.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import jwt
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.access import bearer_metadata
from services.web.clients.calls import Refused, call
from services.web.domain.sessions import BrowserSession

# Refresh this long before the access token would expire, so a page's calls never race it.
REFRESH_MARGIN_SECONDS = 30.0
METHOD_NAMES = {
    pb.CHALLENGE_METHOD_PASSKEY: "passkey",
    pb.CHALLENGE_METHOD_TOTP: "totp",
    pb.CHALLENGE_METHOD_EMAIL_CODE: "email_code",
    pb.CHALLENGE_METHOD_RECOVERY_CODE: "recovery_code",
}
# Sign-in methods identity never lets open the wallet (the same inbox as a reset,
# a lost device, someone else's ID): such a session must sign in afresh.
NEVER_FOR_MONEY = frozenset({"email_code", "recovery_code", "external"})
LANGUAGE = {"ja": pb.LANGUAGE_JA, "en": pb.LANGUAGE_EN}


def _methods(access_token: str) -> list[str]:
    """The ``amr`` of the person's own access token, read to choose the next page;
    identity checks it again on every call, so it is not verified here."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return []
    methods = claims.get("amr", [])
    return [str(m) for m in methods] if isinstance(methods, list) else []


@dataclass(frozen=True)
class Where:
    """The browser as identity sees it: its session's device label, IP and user agent."""

    ip: str
    user_agent: str

    def client(self, session: BrowserSession) -> common_pb2.ClientContext:
        return common_pb2.ClientContext(
            ip_address=self.ip, device_id=session.device_label, user_agent=self.user_agent[:200]
        )


class Accounts:
    """``stub`` is identity's (``IdentityServiceStub`` on the channel as ``web``)."""

    def __init__(self, stub: Any, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    # Registration ------------------------------------------------------------------

    async def register(
        self, s: BrowserSession, where: Where, email: str, password: str, name: str
    ) -> None:
        request = pb.RegisterRequest(
            email=email,
            password=password,
            language=LANGUAGE.get(s.lang, pb.LANGUAGE_JA),
            client=where.client(s),
            device_proof=s.proof("Register", email),
        )
        if name:
            request.display_name = name
        await call(self._stub.Register(request, timeout=self._timeout))
        s.pending = {"verify_email": email}

    async def verify_email(self, s: BrowserSession, where: Where, code: str) -> None:
        email = str(s.pending.get("verify_email", ""))
        await call(
            self._stub.VerifyEmail(
                pb.VerifyEmailRequest(
                    email=email,
                    code=code,
                    client=where.client(s),
                    device_proof=s.proof("VerifyEmail", email),
                ),
                timeout=self._timeout,
            )
        )
        s.pending = {"verified_email": email}

    # Sign-in -----------------------------------------------------------------------

    def _signed_in(self, s: BrowserSession, tokens: pb.SessionTokens) -> None:
        s.access_token = tokens.access_token
        s.access_expires_at = float(tokens.access_token_expires_at.seconds)
        s.refresh_token = tokens.refresh_token
        s.session_id = tokens.session_id
        s.assurance_level = tokens.assurance_level
        s.wallet_token, s.wallet_expires_at = "", 0.0
        s.pending = {}

    async def login(self, s: BrowserSession, where: Where, email: str, password: str) -> bool:
        """Password step; True when signed in, False when a second factor is asked for."""
        reply = await call(
            self._stub.Login(
                pb.LoginRequest(
                    identifier=email,
                    password=password,
                    client=where.client(s),
                    device_proof=s.proof("Login", email),
                ),
                timeout=self._timeout,
            )
        )
        if reply.HasField("session"):
            self._signed_in(s, reply.session)
            return True
        s.pending = {
            "challenge_id": reply.challenge.challenge_id,
            "methods": [METHOD_NAMES.get(m, "") for m in reply.challenge.methods],
            "email": email,
        }
        return False

    async def send_sign_in_code(self, s: BrowserSession) -> None:
        challenge_id = str(s.pending.get("challenge_id", ""))
        await call(
            self._stub.SendSignInCode(
                pb.SendSignInCodeRequest(challenge_id=challenge_id), timeout=self._timeout
            )
        )

    async def answer(self, s: BrowserSession, where: Where, **answer: str) -> None:
        challenge_id = str(s.pending.get("challenge_id", ""))
        reply = await call(
            self._stub.VerifySecondFactor(
                pb.VerifySecondFactorRequest(
                    challenge_id=challenge_id,
                    client=where.client(s),
                    device_proof=s.proof("VerifySecondFactor", challenge_id),
                    **answer,
                ),
                timeout=self._timeout,
            )
        )
        self._signed_in(s, reply.session)

    async def begin_passkey_login(self, s: BrowserSession, where: Where) -> str:
        """Options for navigator.credentials.get: for the pending challenge, else usernameless."""
        challenge_id = str(s.pending.get("challenge_id", ""))
        reply = await call(
            self._stub.BeginPasskeyLogin(
                pb.BeginPasskeyLoginRequest(
                    challenge_id=challenge_id,
                    client=where.client(s),
                    device_proof=s.proof("BeginPasskeyLogin", challenge_id),
                ),
                timeout=self._timeout,
            )
        )
        s.pending["ceremony_id"] = reply.ceremony_id
        return str(reply.options_json)

    async def finish_passkey_login(self, s: BrowserSession, where: Where, assertion: str) -> None:
        if s.pending.get("challenge_id"):
            await self.answer(s, where, passkey_assertion_json=assertion)
            return
        ceremony_id = str(s.pending.get("ceremony_id", ""))
        reply = await call(
            self._stub.FinishPasskeyLogin(
                pb.FinishPasskeyLoginRequest(
                    ceremony_id=ceremony_id,
                    assertion_json=assertion,
                    client=where.client(s),
                    device_proof=s.proof("FinishPasskeyLogin", ceremony_id),
                ),
                timeout=self._timeout,
            )
        )
        self._signed_in(s, reply.session)

    async def sign_out(self, s: BrowserSession, where: Where) -> None:
        if s.signed_in:
            # An ended session is signed out either way.
            with contextlib.suppress(Refused):
                await self._person(s, where, "Logout", pb.LogoutRequest())
        s.sign_out()

    # The person's own calls --------------------------------------------------------

    async def fresh_access(self, s: BrowserSession, where: Where) -> str:
        """The person's access token, refreshed when it is about to expire."""
        if not s.signed_in:
            raise Refused("signed_out")
        if s.access_expires_at - REFRESH_MARGIN_SECONDS > time.time():
            return s.access_token
        try:
            reply = await call(
                self._stub.RefreshSession(
                    pb.RefreshSessionRequest(
                        refresh_token=s.refresh_token,
                        client=where.client(s),
                        device_proof=s.proof("RefreshSession", s.refresh_token),
                    ),
                    timeout=self._timeout,
                )
            )
        except Refused as refused:
            if refused.code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"):
                s.sign_out()
                raise Refused("signed_out") from None
            raise
        wallet = (s.wallet_token, s.wallet_expires_at)
        self._signed_in(s, reply.session)
        s.wallet_token, s.wallet_expires_at = wallet
        return s.access_token

    async def _person(self, s: BrowserSession, where: Where, rpc: str, request: Any) -> Any:
        token = await self.fresh_access(s, where)
        try:
            return await call(
                getattr(self._stub, rpc)(
                    request, metadata=bearer_metadata(token), timeout=self._timeout
                )
            )
        except Refused as refused:
            if refused.code == "UNAUTHENTICATED":
                # The session was ended elsewhere (a reset, a sign-out from another device).
                s.sign_out()
                raise Refused("signed_out") from None
            raise

    async def factors(self, s: BrowserSession, where: Where) -> list[pb.Factor]:
        reply = await self._person(s, where, "ListFactors", pb.ListFactorsRequest())
        return list(reply.factors)

    async def remove_factor(self, s: BrowserSession, where: Where, factor_id: str) -> None:
        await self._person(s, where, "RemoveFactor", pb.RemoveFactorRequest(factor_id=factor_id))

    async def begin_passkey_registration(self, s: BrowserSession, where: Where) -> str:
        reply = await self._person(
            s,
            where,
            "BeginPasskeyRegistration",
            pb.BeginPasskeyRegistrationRequest(client=where.client(s)),
        )
        s.pending["registration_ceremony_id"] = reply.ceremony_id
        return str(reply.options_json)

    async def finish_passkey_registration(
        self, s: BrowserSession, where: Where, attestation: str, name: str
    ) -> None:
        token = await self.fresh_access(s, where)
        await self._person(
            s,
            where,
            "FinishPasskeyRegistration",
            pb.FinishPasskeyRegistrationRequest(
                ceremony_id=str(s.pending.pop("registration_ceremony_id", "")),
                attestation_json=attestation,
                name=name,
                client=where.client(s),
                device_proof=s.proof("FinishPasskeyRegistration", token),
            ),
        )

    async def begin_totp(self, s: BrowserSession, where: Where) -> tuple[str, str]:
        reply = await self._person(s, where, "BeginTotpEnrollment", pb.BeginTotpEnrollmentRequest())
        s.pending["totp_enrollment_id"] = reply.enrollment_id
        s.pending["totp_uri"] = reply.provisioning_uri
        s.pending["totp_secret"] = reply.secret
        return str(reply.secret), str(reply.provisioning_uri)

    async def confirm_totp(self, s: BrowserSession, where: Where, code: str) -> list[str]:
        token = await self.fresh_access(s, where)
        reply = await self._person(
            s,
            where,
            "ConfirmTotpEnrollment",
            pb.ConfirmTotpEnrollmentRequest(
                enrollment_id=str(s.pending.get("totp_enrollment_id", "")),
                code=code,
                device_proof=s.proof("ConfirmTotpEnrollment", token),
            ),
        )
        for key in ("totp_enrollment_id", "totp_uri", "totp_secret"):
            s.pending.pop(key, None)
        return list(reply.recovery_codes)

    async def regenerate_recovery_codes(self, s: BrowserSession, where: Where) -> list[str]:
        reply = await self._person(
            s, where, "RegenerateRecoveryCodes", pb.RegenerateRecoveryCodesRequest()
        )
        return list(reply.recovery_codes)

    async def sessions(self, s: BrowserSession, where: Where) -> list[pb.Session]:
        reply = await self._person(s, where, "ListSessions", pb.ListSessionsRequest())
        return list(reply.sessions)

    async def devices(self, s: BrowserSession, where: Where) -> list[pb.Device]:
        reply = await self._person(s, where, "ListDevices", pb.ListDevicesRequest())
        return list(reply.devices)

    async def revoke_session(self, s: BrowserSession, where: Where, session_id: str) -> None:
        await self._person(
            s, where, "RevokeSession", pb.RevokeSessionRequest(session_id=session_id)
        )

    async def revoke_device(self, s: BrowserSession, where: Where, device_id: str) -> None:
        await self._person(s, where, "RevokeDevice", pb.RevokeDeviceRequest(device_id=device_id))

    # The wallet token --------------------------------------------------------------

    async def step_up_options(self, s: BrowserSession, where: Where) -> tuple[list[str], str]:
        reply = await self._person(
            s, where, "BeginStepUp", pb.BeginStepUpRequest(client=where.client(s))
        )
        s.pending["step_up_challenge_id"] = reply.challenge_id
        return [METHOD_NAMES.get(m, "") for m in reply.methods], str(reply.passkey_options_json)

    async def step_up(self, s: BrowserSession, where: Where, **answer: str) -> None:
        reply = await self._person(
            s,
            where,
            "StepUp",
            pb.StepUpRequest(challenge_id=str(s.pending.pop("step_up_challenge_id", "")), **answer),
        )
        self._signed_in(s, reply.session)

    async def wallet_token(self, s: BrowserSession, where: Where) -> str:
        """A wallet-audience token for this session (step up first when it is below level 2)."""
        if s.wallet_token and s.wallet_expires_at - REFRESH_MARGIN_SECONDS > time.time():
            return s.wallet_token
        token = await self.fresh_access(s, where)
        if set(_methods(token)) & NEVER_FOR_MONEY:
            # Identity never lets these open the wallet, whatever is added later.
            raise Refused("fresh_sign_in_needed")
        if s.assurance_level < 2:
            raise Refused("step_up_needed")
        reply = await self._person(
            s,
            where,
            "ExchangeToken",
            pb.ExchangeTokenRequest(
                audience="wallet",
                client=where.client(s),
                device_proof=s.proof("ExchangeToken", token),
            ),
        )
        s.wallet_token = reply.access_token
        s.wallet_expires_at = float(reply.expires_at.seconds)
        return s.wallet_token

    # Mail links --------------------------------------------------------------------

    async def request_reset(self, s: BrowserSession, where: Where, email: str) -> None:
        await call(
            self._stub.RequestPasswordReset(
                pb.RequestPasswordResetRequest(identifier=email, client=where.client(s)),
                timeout=self._timeout,
            )
        )

    async def complete_reset(
        self, s: BrowserSession, where: Where, token: str, password: str
    ) -> None:
        await call(
            self._stub.CompletePasswordReset(
                pb.CompletePasswordResetRequest(
                    reset_token=token, new_password=password, client=where.client(s)
                ),
                timeout=self._timeout,
            )
        )

    async def freeze_contact_change(self, token: str) -> None:
        await call(
            self._stub.FreezeContactChange(
                pb.FreezeContactChangeRequest(freeze_token=token), timeout=self._timeout
            )
        )
