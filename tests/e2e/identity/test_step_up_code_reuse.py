"""A signed-in person who steps up with the authenticator code they just used is
told to wait for the next one, and the security log says why the step-up failed."""

from __future__ import annotations

import json
import time

import grpc
import pyotp
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.checks import reason_of, refused
from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, bearer, client


async def _step_up_failures(identity: IdentityOnCluster, account_id: str) -> list[dict[str, str]]:
    log = await identity.operator.GetSecurityLog(
        pb.GetSecurityLogRequest(account_id=account_id), timeout=TIMEOUT
    )
    return [json.loads(e.details_json or "{}") for e in log.events if e.kind == "step_up.failed"]


async def test_stepping_up_with_the_code_used_for_enrolment_says_wait_for_the_next_one(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    begun = await identity.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(), metadata=bearer(session), timeout=TIMEOUT
    )
    totp = pyotp.TOTP(begun.secret)
    # The next step's code: identity accepts it now, and it stays the "just used"
    # one for the whole of the current step, however slow the calls below are.
    step = int(time.time()) // 30 + 1
    code = totp.at(step * 30)
    await identity.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(
            enrollment_id=begun.enrollment_id,
            code=code,
            device_proof=person.session_proof("ConfirmTotpEnrollment", session),
        ),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )

    challenge = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client(person.device, person.ip)),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )
    reused = await refused(
        identity.stub.StepUp(
            pb.StepUpRequest(challenge_id=challenge.challenge_id, totp_code=code),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
    )
    assert reused is not None
    assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(reused) == "TOTP_CODE_ALREADY_USED"
    assert "wait for the next one" in (reused.details() or "")
    assert {"method": "totp", "reason": "code_already_used"} in await _step_up_failures(
        identity, person.account_id
    )

    # A wrong code is still just wrong, and logged as such.
    wrong = await refused(
        identity.stub.StepUp(
            pb.StepUpRequest(challenge_id=challenge.challenge_id, totp_code="000000"
                             if code != "000000" else "111111"),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
    )  # fmt: skip
    assert wrong is not None and wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert {"method": "totp", "reason": "wrong_answer"} in await _step_up_failures(
        identity, person.account_id
    )
