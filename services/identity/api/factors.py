"""Handlers: passkeys, TOTP and recovery codes."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    bearer,
    caller_claims,
    client_from_claims,
    factor_message,
    refuse_blank,
    uuid_of,
)
from services.runtime.validation import Violations


class FactorRpcs(Handlers):
    async def BeginPasskeyRegistration(
        self, request: pb.BeginPasskeyRegistrationRequest, context: Context
    ) -> pb.BeginPasskeyRegistrationResponse:
        check = Violations()
        check.client("client", request.client)
        check.raise_if_any()
        ceremony_id, options = await self.identity.begin_passkey_registration(
            caller_claims(), request.client
        )
        return pb.BeginPasskeyRegistrationResponse(
            ceremony_id=str(ceremony_id), options_json=options
        )

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context
    ) -> pb.FinishPasskeyRegistrationResponse:
        check = Violations()
        refuse_blank(check, attestation_json=request.attestation_json)
        check.client("client", request.client)
        check.raise_if_any()
        ceremony_id = uuid_of(request.ceremony_id)
        factor = await self.identity.finish_passkey_registration(
            caller_claims(),
            ceremony_id=ceremony_id,
            attestation_json=request.attestation_json,
            name=request.name,
            client=request.client,
            access_token=bearer(context),
            device_proof=request.device_proof,
        )
        return pb.FinishPasskeyRegistrationResponse(factor=factor_message(factor))

    async def BeginTotpEnrollment(
        self, request: pb.BeginTotpEnrollmentRequest, context: Context
    ) -> pb.BeginTotpEnrollmentResponse:
        enrollment_id, secret, uri = await self.identity.begin_totp(caller_claims())
        return pb.BeginTotpEnrollmentResponse(
            enrollment_id=str(enrollment_id), secret=secret, provisioning_uri=uri
        )

    async def ConfirmTotpEnrollment(
        self, request: pb.ConfirmTotpEnrollmentRequest, context: Context
    ) -> pb.ConfirmTotpEnrollmentResponse:
        check = Violations()
        refuse_blank(check, code=request.code)
        check.raise_if_any()
        enrollment_id = uuid_of(request.enrollment_id)
        claims = caller_claims()
        factor, codes = await self.identity.confirm_totp(
            claims,
            enrollment_id=enrollment_id,
            code=request.code,
            client=client_from_claims(claims),
            access_token=bearer(context),
            device_proof=request.device_proof,
        )
        return pb.ConfirmTotpEnrollmentResponse(factor=factor_message(factor), recovery_codes=codes)

    async def ListFactors(
        self, request: pb.ListFactorsRequest, context: Context
    ) -> pb.ListFactorsResponse:
        rows = await self.identity.list_factors(caller_claims())
        return pb.ListFactorsResponse(factors=[factor_message(row) for row in rows])

    async def RemoveFactor(
        self, request: pb.RemoveFactorRequest, context: Context
    ) -> pb.RemoveFactorResponse:
        factor_id = uuid_of(request.factor_id)
        claims = caller_claims()
        await self.identity.remove_factor(claims, factor_id, client_from_claims(claims))
        return pb.RemoveFactorResponse()

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: Context
    ) -> pb.RegenerateRecoveryCodesResponse:
        codes = await self.identity.regenerate_recovery_codes(caller_claims())
        return pb.RegenerateRecoveryCodesResponse(recovery_codes=codes)
