"""IdentityService over gRPC: validate the request, call the use case, translate the answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.identity.v1 import identity_pb2_grpc

from services.identity.device_proof import MAX_PROOF_LENGTH
from services.identity.domain import credentials as cred
from services.identity.domain.sessions import IssuedSession, PendingChallenge
from services.identity.revocations import RevocationFeed
from services.identity.use_cases import Identity
from services.runtime.access import current_caller, current_claims
from services.runtime.errors import Unauthenticated
from services.runtime.tokens import TokenClaims
from services.runtime.validation import Violations

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_CHALLENGE_METHODS = {
    cred.PASSKEY: pb.CHALLENGE_METHOD_PASSKEY,
    cred.TOTP: pb.CHALLENGE_METHOD_TOTP,
    cred.EMAIL_CODE: pb.CHALLENGE_METHOD_EMAIL_CODE,
    cred.RECOVERY_CODE: pb.CHALLENGE_METHOD_RECOVERY_CODE,
}
_AUTH_METHODS = {
    cred.PASSWORD: pb.AUTH_METHOD_PASSWORD,
    cred.PASSKEY: pb.AUTH_METHOD_PASSKEY,
    cred.TOTP: pb.AUTH_METHOD_TOTP,
    cred.EMAIL_CODE: pb.AUTH_METHOD_EMAIL_CODE,
    cred.RECOVERY_CODE: pb.AUTH_METHOD_RECOVERY_CODE,
    cred.EXTERNAL: pb.AUTH_METHOD_EXTERNAL,
}
_PROFILE_TEXT = ("display_name", "family_name", "given_name")
_CLEARABLE = frozenset({*_PROFILE_TEXT, "birth_date"})
_MAX_NAME = 200
_MAX_PASSWORD_INPUT = 1024
_MAX_CODE = 64
_MAX_TOKEN = 512
_MAX_JSON = 64 * 1024


def _device_proof(check: Violations, value: str) -> str:
    # Only its size is checked here: a proof that does not verify is the same as none
    # (a new device), so that its answer tells nothing an honest one would not.
    check.require(len(value) <= MAX_PROOF_LENGTH, "device_proof", "is too long")
    return value


def _bearer(context: Context) -> str:
    """The bearer token of the call, already verified by the access interceptor."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            return value.partition(" ")[2].strip()
    return ""


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _session_tokens(issued: IssuedSession) -> pb.SessionTokens:
    return pb.SessionTokens(
        access_token=issued.access_token,
        access_token_expires_at=_timestamp(issued.access_expires_at),
        refresh_token=issued.refresh_token,
        session_id=str(issued.session_id),
        assurance_level=issued.assurance_level,
    )


def _claims() -> TokenClaims:
    claims = current_claims()
    if claims is None:
        raise Unauthenticated("TOKEN_REQUIRED", "bearer token required")
    return claims


def _password(check: Violations, field: str, value: str) -> None:
    # Length rules of a new password are checked by the policy; this only bounds the input.
    check.require(bool(value), field, "is required")
    check.require(len(value) <= _MAX_PASSWORD_INPUT, field, "is too long")


def _code(check: Violations, field: str, value: str) -> None:
    check.text(field, value, max_length=_MAX_CODE, required=True, single_line=True)


def _required_uuid(check: Violations, field: str, value: str) -> uuid.UUID:
    parsed = check.uuid(field, value)
    return parsed if parsed is not None else uuid.UUID(int=0)


def _language(check: Violations, field: str, value: int) -> int:
    check.require(value in pb.Language.values(), field, "is not a known language")
    return value


def _factor(row: Any) -> pb.Factor:
    return pb.Factor(
        factor_id=str(row["id"]),
        method=_CHALLENGE_METHODS[row["kind"]],
        name=row["name"],
        created_at=_timestamp(row["created_at"]),
        last_used_at=_timestamp(row["last_used_at"]),
        suspended=row["suspended"],
    )


def _contact(row: Any) -> pb.Contact:
    return pb.Contact(
        contact_id=str(row["id"]),
        kind=row["kind"],
        address=row["address"],
        verified=row["verified"],
        primary=row["is_primary"],
        created_at=_timestamp(row["created_at"]),
    )


def _profile(row: Any) -> pb.Profile:
    profile = pb.Profile(
        account_id=str(row["id"]),
        language=row["language"],
        created_at=_timestamp(row["created_at"]),
    )
    for field in _PROFILE_TEXT:
        if row[field] is not None:
            setattr(profile, field, row[field])
    if row["birth_date"] is not None:
        profile.birth_date = row["birth_date"].isoformat()
    return profile


class IdentityApi(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity, feed: RevocationFeed, stopping: asyncio.Event) -> None:
        self.identity = identity
        self.feed = feed
        self.stopping = stopping

    # Registration and sign-in -------------------------------------------------

    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        check = Violations()
        check.email("email", request.email)
        _password(check, "password", request.password)
        display_name = None
        if request.HasField("display_name"):
            display_name = check.text("display_name", request.display_name, max_length=_MAX_NAME)
        _language(check, "language", request.language)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        expires_at = await self.identity.register(
            email=request.email,
            password=request.password,
            display_name=display_name,
            language=request.language,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.RegisterResponse(code_expires_at=_timestamp(expires_at))

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: Context
    ) -> pb.VerifyEmailResponse:
        check = Violations()
        check.email("email", request.email)
        _code(check, "code", request.code)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        account_id = await self.identity.verify_email(
            email=request.email,
            code=request.code,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.VerifyEmailResponse(account_id=str(account_id))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        check = Violations()
        check.text("identifier", request.identifier, max_length=254, required=True)
        _password(check, "password", request.password)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        result = await self.identity.login(
            identifier=request.identifier,
            password=request.password,
            client=request.client,
            device_proof=request.device_proof,
        )
        if isinstance(result, PendingChallenge):
            return pb.LoginResponse(
                challenge=pb.Challenge(
                    challenge_id=str(result.challenge_id),
                    methods=[_CHALLENGE_METHODS[m] for m in result.methods],
                )
            )
        return pb.LoginResponse(session=_session_tokens(result))

    async def SendSignInCode(
        self, request: pb.SendSignInCodeRequest, context: Context
    ) -> pb.SendSignInCodeResponse:
        check = Violations()
        challenge_id = _required_uuid(check, "challenge_id", request.challenge_id)
        check.raise_if_any()
        expires_at = await self.identity.send_sign_in_code(challenge_id)
        return pb.SendSignInCodeResponse(code_expires_at=_timestamp(expires_at))

    async def VerifySecondFactor(
        self, request: pb.VerifySecondFactorRequest, context: Context
    ) -> pb.VerifySecondFactorResponse:
        check = Violations()
        challenge_id = _required_uuid(check, "challenge_id", request.challenge_id)
        answer = request.WhichOneof("answer")
        check.require(answer is not None, "answer", "one of the answers is required")
        value = getattr(request, answer) if answer else ""
        if answer == "passkey_assertion_json":
            check.text(answer, value, max_length=_MAX_JSON, required=True)
        elif answer:
            _code(check, answer, value)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        method = {
            "totp_code": cred.TOTP,
            "email_code": cred.EMAIL_CODE,
            "recovery_code": cred.RECOVERY_CODE,
            "passkey_assertion_json": cred.PASSKEY,
        }[answer or ""]
        issued = await self.identity.verify_second_factor(
            challenge_id=challenge_id,
            answer=method,
            value=value,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.VerifySecondFactorResponse(session=_session_tokens(issued))

    async def BeginPasskeyLogin(
        self, request: pb.BeginPasskeyLoginRequest, context: Context
    ) -> pb.BeginPasskeyLoginResponse:
        check = Violations()
        check.text("identifier", request.identifier, max_length=254)
        challenge_id = check.uuid("challenge_id", request.challenge_id, required=False)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        ceremony_id, options = await self.identity.begin_passkey_login(
            identifier=request.identifier,
            challenge_id=challenge_id,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.BeginPasskeyLoginResponse(ceremony_id=str(ceremony_id), options_json=options)

    async def FinishPasskeyLogin(
        self, request: pb.FinishPasskeyLoginRequest, context: Context
    ) -> pb.FinishPasskeyLoginResponse:
        check = Violations()
        ceremony_id = _required_uuid(check, "ceremony_id", request.ceremony_id)
        check.text("assertion_json", request.assertion_json, max_length=_MAX_JSON, required=True)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        issued = await self.identity.finish_passkey_login(
            ceremony_id=ceremony_id,
            assertion_json=request.assertion_json,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.FinishPasskeyLoginResponse(session=_session_tokens(issued))

    async def RefreshSession(
        self, request: pb.RefreshSessionRequest, context: Context
    ) -> pb.RefreshSessionResponse:
        check = Violations()
        check.text(
            "refresh_token",
            request.refresh_token,
            max_length=_MAX_TOKEN,
            required=True,
            single_line=True,
        )
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        issued = await self.identity.refresh(
            refresh_token=request.refresh_token,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.RefreshSessionResponse(session=_session_tokens(issued))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self.identity.logout(_claims())
        return pb.LogoutResponse()

    # Step-up and exchange -----------------------------------------------------

    async def BeginStepUp(
        self, request: pb.BeginStepUpRequest, context: Context
    ) -> pb.BeginStepUpResponse:
        check = Violations()
        check.client("client", request.client, required=False)
        check.raise_if_any()
        challenge_id, methods, options = await self.identity.begin_step_up(
            _claims(), request.client
        )
        return pb.BeginStepUpResponse(
            challenge_id=str(challenge_id),
            methods=[_CHALLENGE_METHODS[m] for m in methods if m in _CHALLENGE_METHODS],
            passkey_options_json=options,
        )

    async def StepUp(self, request: pb.StepUpRequest, context: Context) -> pb.StepUpResponse:
        check = Violations()
        challenge_id = _required_uuid(check, "challenge_id", request.challenge_id)
        answer = request.WhichOneof("answer")
        check.require(answer is not None, "answer", "one of the answers is required")
        value = getattr(request, answer) if answer else ""
        if answer == "passkey_assertion_json":
            check.text(answer, value, max_length=_MAX_JSON, required=True)
        elif answer == "password":
            _password(check, answer, value)
        elif answer:
            _code(check, answer, value)
        check.raise_if_any()
        method = {
            "totp_code": cred.TOTP,
            "passkey_assertion_json": cred.PASSKEY,
            "password": cred.PASSWORD,
        }[answer or ""]
        issued = await self.identity.step_up(
            _claims(), challenge_id=challenge_id, answer=method, value=value
        )
        return pb.StepUpResponse(session=_session_tokens(issued))

    async def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: Context
    ) -> pb.ExchangeTokenResponse:
        check = Violations()
        check.text("audience", request.audience, max_length=64, required=True, single_line=True)
        check.text("passkey_assertion_json", request.passkey_assertion_json, max_length=_MAX_JSON)
        challenge_id = check.uuid("challenge_id", request.challenge_id, required=False)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        token, expires_at = await self.identity.exchange_token(
            _claims(),
            audience=request.audience,
            passkey_assertion_json=request.passkey_assertion_json,
            challenge_id=challenge_id,
            client=request.client,
            access_token=_bearer(context),
            device_proof=request.device_proof,
        )
        return pb.ExchangeTokenResponse(access_token=token, expires_at=_timestamp(expires_at))

    # Factors ------------------------------------------------------------------

    async def BeginPasskeyRegistration(
        self, request: pb.BeginPasskeyRegistrationRequest, context: Context
    ) -> pb.BeginPasskeyRegistrationResponse:
        check = Violations()
        check.client("client", request.client)
        check.raise_if_any()
        ceremony_id, options = await self.identity.begin_passkey_registration(
            _claims(), request.client
        )
        return pb.BeginPasskeyRegistrationResponse(
            ceremony_id=str(ceremony_id), options_json=options
        )

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context
    ) -> pb.FinishPasskeyRegistrationResponse:
        check = Violations()
        ceremony_id = _required_uuid(check, "ceremony_id", request.ceremony_id)
        check.text(
            "attestation_json", request.attestation_json, max_length=_MAX_JSON, required=True
        )
        check.text("name", request.name, max_length=100, single_line=True)
        check.client("client", request.client)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        factor = await self.identity.finish_passkey_registration(
            _claims(),
            ceremony_id=ceremony_id,
            attestation_json=request.attestation_json,
            name=request.name,
            client=request.client,
            access_token=_bearer(context),
            device_proof=request.device_proof,
        )
        return pb.FinishPasskeyRegistrationResponse(factor=_factor(factor))

    async def BeginTotpEnrollment(
        self, request: pb.BeginTotpEnrollmentRequest, context: Context
    ) -> pb.BeginTotpEnrollmentResponse:
        enrollment_id, secret, uri = await self.identity.begin_totp(_claims())
        return pb.BeginTotpEnrollmentResponse(
            enrollment_id=str(enrollment_id), secret=secret, provisioning_uri=uri
        )

    async def ConfirmTotpEnrollment(
        self, request: pb.ConfirmTotpEnrollmentRequest, context: Context
    ) -> pb.ConfirmTotpEnrollmentResponse:
        check = Violations()
        enrollment_id = _required_uuid(check, "enrollment_id", request.enrollment_id)
        _code(check, "code", request.code)
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        claims = _claims()
        factor, codes = await self.identity.confirm_totp(
            claims,
            enrollment_id=enrollment_id,
            code=request.code,
            client=_client_from_claims(claims),
            access_token=_bearer(context),
            device_proof=request.device_proof,
        )
        return pb.ConfirmTotpEnrollmentResponse(factor=_factor(factor), recovery_codes=codes)

    async def ListFactors(
        self, request: pb.ListFactorsRequest, context: Context
    ) -> pb.ListFactorsResponse:
        rows = await self.identity.list_factors(_claims())
        return pb.ListFactorsResponse(factors=[_factor(row) for row in rows])

    async def RemoveFactor(
        self, request: pb.RemoveFactorRequest, context: Context
    ) -> pb.RemoveFactorResponse:
        check = Violations()
        factor_id = _required_uuid(check, "factor_id", request.factor_id)
        check.raise_if_any()
        claims = _claims()
        await self.identity.remove_factor(claims, factor_id, _client_from_claims(claims))
        return pb.RemoveFactorResponse()

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: Context
    ) -> pb.RegenerateRecoveryCodesResponse:
        codes = await self.identity.regenerate_recovery_codes(_claims())
        return pb.RegenerateRecoveryCodesResponse(recovery_codes=codes)

    # Passwords ----------------------------------------------------------------

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Context
    ) -> pb.ChangePasswordResponse:
        check = Violations()
        _password(check, "current_password", request.current_password)
        _password(check, "new_password", request.new_password)
        check.raise_if_any()
        claims = _claims()
        issued = await self.identity.change_password(
            claims,
            current_password=request.current_password,
            new_password=request.new_password,
            client=_client_from_claims(claims),
        )
        return pb.ChangePasswordResponse(session=_session_tokens(issued))

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Context
    ) -> pb.RequestPasswordResetResponse:
        check = Violations()
        check.text("identifier", request.identifier, max_length=254, required=True)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        await self.identity.request_password_reset(
            identifier=request.identifier, client=request.client
        )
        return pb.RequestPasswordResetResponse()

    async def CompletePasswordReset(
        self, request: pb.CompletePasswordResetRequest, context: Context
    ) -> pb.CompletePasswordResetResponse:
        check = Violations()
        check.text(
            "reset_token",
            request.reset_token,
            max_length=_MAX_TOKEN,
            required=True,
            single_line=True,
        )
        _password(check, "new_password", request.new_password)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        await self.identity.complete_password_reset(
            reset_token=request.reset_token,
            new_password=request.new_password,
            client=request.client,
        )
        return pb.CompletePasswordResetResponse()

    # Profile and contacts -----------------------------------------------------

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        return pb.GetProfileResponse(profile=_profile(await self.identity.profile(_claims())))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        check = Violations()
        changes: dict[str, Any] = {}
        for field in _PROFILE_TEXT:
            if request.HasField(field):  # type: ignore[arg-type]
                changes[field] = check.text(field, getattr(request, field), max_length=_MAX_NAME)
        if request.HasField("birth_date"):
            try:
                changes["birth_date"] = date.fromisoformat(request.birth_date)
                check.require(len(request.birth_date) == 10, "birth_date", "must be YYYY-MM-DD")
            except ValueError:
                check.add("birth_date", "must be a date as YYYY-MM-DD")
        if request.language:
            changes["language"] = _language(check, "language", request.language)
        for index, name in enumerate(request.clear_fields):
            if name not in _CLEARABLE:
                check.add(
                    f"clear_fields[{index}]", f"must be one of {', '.join(sorted(_CLEARABLE))}"
                )
            elif name in changes:
                check.add(f"clear_fields[{index}]", "cannot clear a field that is also set")
            else:
                changes[name] = None
        check.raise_if_any()
        row = await self.identity.update_profile(_claims(), changes)
        return pb.UpdateProfileResponse(profile=_profile(row))

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        rows = await self.identity.list_contacts(_claims())
        return pb.ListContactsResponse(contacts=[_contact(row) for row in rows])

    async def AddContact(
        self, request: pb.AddContactRequest, context: Context
    ) -> pb.AddContactResponse:
        check = Violations()
        if request.kind == pb.CONTACT_KIND_EMAIL:
            check.email("address", request.address)
        elif request.kind == pb.CONTACT_KIND_PHONE:
            check.require(
                request.address.startswith("+")
                and request.address[1:].isdigit()
                and 8 <= len(request.address) <= 16,
                "address",
                "must be a phone number in E.164 form (+81...)",
            )
        elif request.kind == pb.CONTACT_KIND_PUSH:
            check.text("address", request.address, max_length=4096, required=True, single_line=True)
        else:
            check.add("kind", "must be EMAIL, PHONE or PUSH")
        _device_proof(check, request.device_proof)
        check.raise_if_any()
        row = await self.identity.add_contact(
            _claims(),
            kind=request.kind,
            address=request.address,
            make_primary=request.make_primary,
            access_token=_bearer(context),
            device_proof=request.device_proof,
        )
        return pb.AddContactResponse(contact=_contact(row))

    async def VerifyContact(
        self, request: pb.VerifyContactRequest, context: Context
    ) -> pb.VerifyContactResponse:
        check = Violations()
        contact_id = _required_uuid(check, "contact_id", request.contact_id)
        _code(check, "code", request.code)
        check.raise_if_any()
        row = await self.identity.verify_contact(
            _claims(), contact_id=contact_id, code=request.code
        )
        return pb.VerifyContactResponse(contact=_contact(row))

    async def RemoveContact(
        self, request: pb.RemoveContactRequest, context: Context
    ) -> pb.RemoveContactResponse:
        check = Violations()
        contact_id = _required_uuid(check, "contact_id", request.contact_id)
        check.raise_if_any()
        await self.identity.remove_contact(_claims(), contact_id)
        return pb.RemoveContactResponse()

    async def FreezeContactChange(
        self, request: pb.FreezeContactChangeRequest, context: Context
    ) -> pb.FreezeContactChangeResponse:
        check = Violations()
        check.text(
            "freeze_token",
            request.freeze_token,
            max_length=_MAX_TOKEN,
            required=True,
            single_line=True,
        )
        check.raise_if_any()
        await self.identity.freeze_contact_change(request.freeze_token)
        return pb.FreezeContactChangeResponse()

    # Sessions and devices -----------------------------------------------------

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        claims = _claims()
        rows = await self.identity.list_sessions(claims)
        return pb.ListSessionsResponse(
            sessions=[
                pb.Session(
                    session_id=str(row["id"]),
                    device_id=row["device_id"],
                    methods=[_AUTH_METHODS[m] for m in row["methods"] if m in _AUTH_METHODS],
                    assurance_level=row["assurance_level"],
                    created_at=_timestamp(row["created_at"]),
                    last_seen_at=_timestamp(row["last_seen_at"]),
                    ip_address=row["ip_address"],
                    current=str(row["id"]) == claims.session_id,
                )
                for row in rows
            ]
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Context
    ) -> pb.RevokeSessionResponse:
        check = Violations()
        session_id = _required_uuid(check, "session_id", request.session_id)
        check.raise_if_any()
        await self.identity.revoke_session(_claims(), session_id)
        return pb.RevokeSessionResponse()

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: Context
    ) -> pb.ListDevicesResponse:
        rows = await self.identity.list_devices(_claims())
        return pb.ListDevicesResponse(
            devices=[
                pb.Device(
                    device_id=row["device_id"],
                    user_agent=row["user_agent"],
                    first_seen_at=_timestamp(row["first_seen_at"]),
                    last_seen_at=_timestamp(row["last_seen_at"]),
                    last_ip_address=row["last_ip"],
                    last_country_code=row["last_country"],
                )
                for row in rows
            ]
        )

    async def RevokeDevice(
        self, request: pb.RevokeDeviceRequest, context: Context
    ) -> pb.RevokeDeviceResponse:
        check = Violations()
        check.text("device_id", request.device_id, max_length=128, required=True, single_line=True)
        check.raise_if_any()
        await self.identity.revoke_device(_claims(), request.device_id)
        return pb.RevokeDeviceResponse()

    # External IDs -------------------------------------------------------------

    async def BeginExternalLogin(
        self, request: pb.BeginExternalLoginRequest, context: Context
    ) -> pb.BeginExternalLoginResponse:
        check = Violations()
        check.text("provider", request.provider, max_length=64, required=True, single_line=True)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        nonce, endpoint = await self.identity.begin_external_login(request.provider)
        return pb.BeginExternalLoginResponse(nonce=nonce, authorization_endpoint=endpoint)

    async def ExternalLogin(
        self, request: pb.ExternalLoginRequest, context: Context
    ) -> pb.ExternalLoginResponse:
        check = Violations()
        _external(check, request.provider, request.id_token, request.nonce)
        check.client("client", request.client)
        check.raise_if_any()
        issued = await self.identity.external_login(
            provider=request.provider,
            id_token=request.id_token,
            nonce=request.nonce,
            client=request.client,
        )
        return pb.ExternalLoginResponse(session=_session_tokens(issued))

    async def LinkExternalIdentity(
        self, request: pb.LinkExternalIdentityRequest, context: Context
    ) -> pb.LinkExternalIdentityResponse:
        check = Violations()
        _external(check, request.provider, request.id_token, request.nonce)
        check.raise_if_any()
        await self.identity.link_external(
            _claims(), provider=request.provider, id_token=request.id_token, nonce=request.nonce
        )
        return pb.LinkExternalIdentityResponse()

    async def UnlinkExternalIdentity(
        self, request: pb.UnlinkExternalIdentityRequest, context: Context
    ) -> pb.UnlinkExternalIdentityResponse:
        check = Violations()
        check.text("provider", request.provider, max_length=64, required=True, single_line=True)
        check.raise_if_any()
        await self.identity.unlink_external(_claims(), request.provider)
        return pb.UnlinkExternalIdentityResponse()

    # Account ------------------------------------------------------------------

    async def CloseAccount(
        self, request: pb.CloseAccountRequest, context: Context
    ) -> pb.CloseAccountResponse:
        check = Violations()
        check.text("reason", request.reason, max_length=1000)
        check.raise_if_any()
        await self.identity.close_account(_claims(), request.reason)
        return pb.CloseAccountResponse()

    # For other services -------------------------------------------------------

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=json.dumps(self.identity.keys.jwks()))

    async def WatchRevocations(
        self, request: pb.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[pb.WatchRevocationsResponse]:
        check = Violations()
        check.require(request.after_sequence >= 0, "after_sequence", "must not be negative")
        check.raise_if_any()
        # Headers at once: a follower counts itself subscribed when they arrive.
        await context.send_initial_metadata(())
        async for sequence, session_id, expires_at in self.feed.stream(
            request.after_sequence, self.stopping
        ):
            yield pb.WatchRevocationsResponse(
                sequence=sequence,
                session_id=session_id,
                expires_at=_timestamp(expires_at),  # type: ignore[arg-type]
            )

    async def GetRegisteredContacts(
        self, request: pb.GetRegisteredContactsRequest, context: Context
    ) -> pb.GetRegisteredContactsResponse:
        check = Violations()
        subject = request.WhichOneof("subject")
        account_id = payer_id = None
        if subject == "account_id":
            account_id = check.uuid("account_id", request.account_id)
        elif subject == "payer_id":
            payer_id = check.uuid("payer_id", request.payer_id)
        else:
            check.add("subject", "account_id or payer_id is required")
        pending = check.uuid("pending_contact_id", request.pending_contact_id, required=False)
        check.raise_if_any()
        account, contacts = await self.identity.registered_contacts(
            account_id=account_id, payer_id=payer_id, pending_contact_id=pending
        )
        response = pb.GetRegisteredContactsResponse(
            account_id=str(account["id"]),
            contacts=[_contact(row) for row in contacts],
            language=account["language"],
        )
        if account["display_name"] is not None:
            response.display_name = account["display_name"]
        return response

    # Operators ----------------------------------------------------------------

    async def ForceCredentialReset(
        self, request: pb.ForceCredentialResetRequest, context: Context
    ) -> AsyncIterator[pb.ForceCredentialResetResponse]:
        check = Violations()
        check.text("reason", request.reason, max_length=1000, required=True)
        resume = check.uuid("resume_job_id", request.resume_job_id, required=False)
        account_ids = []
        for index, raw in enumerate(request.account_ids):
            parsed = check.uuid(f"account_ids[{index}]", raw)
            if parsed is not None:
                account_ids.append(parsed)
        if resume is None:
            check.require(
                request.all_accounts != bool(account_ids),
                "account_ids",
                "give account IDs or all_accounts, not both and not neither",
            )
        check.raise_if_any()
        async for progress in self.identity.force_credential_reset(
            account_ids=account_ids,
            all_accounts=request.all_accounts,
            reason=request.reason,
            resume_job_id=resume,
            actor=current_caller(),
            stop=self.stopping,
        ):
            yield pb.ForceCredentialResetResponse(
                job_id=str(progress.job_id),
                processed=progress.processed,
                total=progress.total,
                done=progress.done,
            )

    async def LockAccount(
        self, request: pb.LockAccountRequest, context: Context
    ) -> pb.LockAccountResponse:
        account_id = _operator_target(request.account_id, request.reason)
        await self.identity.set_locked(
            account_id, locked=True, reason=request.reason, actor=f"operator:{current_caller()}"
        )
        return pb.LockAccountResponse()

    async def UnlockAccount(
        self, request: pb.UnlockAccountRequest, context: Context
    ) -> pb.UnlockAccountResponse:
        account_id = _operator_target(request.account_id, request.reason)
        await self.identity.set_locked(
            account_id, locked=False, reason=request.reason, actor=f"operator:{current_caller()}"
        )
        return pb.UnlockAccountResponse()

    async def GetSecurityLog(
        self, request: pb.GetSecurityLogRequest, context: Context
    ) -> pb.GetSecurityLogResponse:
        check = Violations()
        account_id = _required_uuid(check, "account_id", request.account_id)
        size = request.page.page_size or 50
        check.require(0 < size <= 500, "page.page_size", "must be between 0 and 500")
        check.text("page.page_token", request.page.page_token, max_length=512, single_line=True)
        check.raise_if_any()
        rows, next_token = await self.identity.security_log(
            account_id, page_size=size, page_token=request.page.page_token
        )
        return pb.GetSecurityLogResponse(
            events=[
                pb.SecurityEvent(
                    event_id=str(row["id"]),
                    kind=row["kind"],
                    occurred_at=_timestamp(row["occurred_at"]),
                    ip_address=row["ip_address"],
                    device_id=row["device_id"],
                    session_id=row["session_id"],
                    actor=row["actor"],
                    details_json=json.dumps(row["details"], ensure_ascii=False),
                )
                for row in rows
            ],
            next_page_token=next_token,
        )


def _external(check: Violations, provider: str, id_token: str, nonce: str) -> None:
    check.text("provider", provider, max_length=64, required=True, single_line=True)
    check.text("id_token", id_token, max_length=_MAX_JSON, required=True, single_line=True)
    check.text("nonce", nonce, max_length=_MAX_TOKEN, required=True, single_line=True)


def _operator_target(account_id: str, reason: str) -> uuid.UUID:
    check = Violations()
    parsed = _required_uuid(check, "account_id", account_id)
    check.text("reason", reason, max_length=1000, required=True)
    check.raise_if_any()
    return parsed


def _client_from_claims(claims: TokenClaims) -> Any:
    """Person RPCs without a ClientContext field: the session's device key stands for the client."""
    from mamoru.common.v1 import common_pb2

    return common_pb2.ClientContext(device_id=claims.device_key or "")
