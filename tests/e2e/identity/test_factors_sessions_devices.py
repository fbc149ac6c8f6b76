"""Second factors, recovery codes, sessions, devices and sign-in codes, over real servers."""

from __future__ import annotations

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.checks import (
    FACTOR_CHANGED_SUBJECTS,
    add_verified_email,
    authenticated_long_ago,
    ended,
    mail_after,
    mail_count,
    notify_accepts,
    notify_refuses_within,
    reason_of,
    refused,
)
from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import (
    SIGN_IN_SUBJECTS,
    TIMEOUT,
    bearer,
    client,
    code_in,
    next_mail,
    next_totp,
    subject_is,
)

pytestmark = pytest.mark.asyncio


async def factors(identity: IdentityOnCluster, session: pb.SessionTokens) -> list[pb.Factor]:
    reply = await identity.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(session), timeout=TIMEOUT
    )
    return list(reply.factors)


async def test_removing_a_factor_needs_step_up_ends_other_sessions_tells_every_address_cools_off(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    await add_verified_email(identity, here, "hanako.work@example.jp")
    passkey = await identity.enrol_passkey(person, here)
    # The second factor is added in a session that showed the first.
    here = await identity.step_up(person, here)
    await identity.enrol_totp(person, here)
    totp = next(f for f in await factors(identity, here) if f.method == pb.CHALLENGE_METHOD_TOTP)
    # The cool-off the enrolment started has run its course.
    await identity.cluster.running["identity"].pool.execute(
        "update accounts set cooloff_until = null, cooloff_started_at = null where id = $1::uuid",
        person.account_id,
    )
    elsewhere = await identity.sign_in_with_totp(person, device="tablet")

    await authenticated_long_ago(identity, here)
    stale = await refused(
        identity.stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=totp.factor_id),
            metadata=bearer(here),
            timeout=TIMEOUT,
        )
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(stale) == "STEP_UP_REQUIRED"
    assert len(await factors(identity, here)) == 2

    stepped = await identity.step_up(person, here)
    mails_before = {
        address: mail_count(identity, address)
        for address in ("hanako@example.jp", "hanako.work@example.jp")
    }
    await identity.stub.RemoveFactor(
        pb.RemoveFactorRequest(factor_id=totp.factor_id),
        metadata=bearer(stepped),
        timeout=TIMEOUT,
    )

    assert [f.factor_id for f in await factors(identity, stepped)] == [passkey.factor_id]
    assert await ended(identity, elsewhere)
    assert not await ended(identity, stepped)
    for address, before in mails_before.items():
        assert await mail_after(identity, address, FACTOR_CHANGED_SUBJECTS, after=before)
    # The removed authenticator app no longer answers a challenge.
    challenge = (await identity.login(person, device="laptop")).challenge
    assert pb.CHALLENGE_METHOD_TOTP not in challenge.methods
    wrong = await refused(
        identity.answer(
            person,
            challenge.challenge_id,
            client("laptop", person.ip),
            totp_code=await next_totp(person.totp_secret),
        )
    )
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED

    # The cool-off: the wallet opens only with the passkey enrolled before the removal.
    wallet = identity.exchange_request(person, stepped)
    cooling = await refused(
        identity.stub.ExchangeToken(wallet, metadata=bearer(stepped), timeout=TIMEOUT)
    )
    assert cooling.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(cooling) == "COOLOFF"
    assert person.authenticator is not None
    step = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client(person.device, person.ip)),
        metadata=bearer(stepped),
        timeout=TIMEOUT,
    )
    wallet.challenge_id = step.challenge_id
    wallet.passkey_assertion_json = person.authenticator.get(step.passkey_options_json)
    wallet.device_proof = person.proof("ExchangeToken", stepped.access_token)
    exchanged = await identity.stub.ExchangeToken(wallet, metadata=bearer(stepped), timeout=TIMEOUT)
    assert exchanged.access_token


async def test_a_factor_of_another_account_cannot_be_removed(identity: IdentityOnCluster):
    owner = await identity.register("hanako@example.jp")
    await identity.enrol_totp(owner, (await identity.login(owner)).session)
    owners_session = await identity.sign_in_with_totp(owner, device="tablet")
    (owners_totp,) = await factors(identity, owners_session)
    other = await identity.register("taro@example.jp")
    others_session = (await identity.login(other)).session

    missing = await refused(
        identity.stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=owners_totp.factor_id),
            metadata=bearer(others_session),
            timeout=TIMEOUT,
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert [f.factor_id for f in await factors(identity, owners_session)] == [owners_totp.factor_id]
    assert not await ended(identity, owners_session)


async def test_regenerated_recovery_codes_replace_the_old_ones_after_step_up(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    await identity.enrol_totp(person, here)
    old_codes = person.recovery_codes

    await authenticated_long_ago(identity, here)
    stale = await refused(
        identity.stub.RegenerateRecoveryCodes(
            pb.RegenerateRecoveryCodesRequest(), metadata=bearer(here), timeout=TIMEOUT
        )
    )
    assert reason_of(stale) == "STEP_UP_REQUIRED"

    stepped = await identity.step_up(person, here)
    new_codes = list(
        (
            await identity.stub.RegenerateRecoveryCodes(
                pb.RegenerateRecoveryCodesRequest(), metadata=bearer(stepped), timeout=TIMEOUT
            )
        ).recovery_codes
    )
    assert len(set(new_codes)) == 10
    assert not set(new_codes) & set(old_codes)

    async def recover(code: str, device: str) -> pb.SessionTokens:
        challenge = (await identity.login(person, device=device)).challenge
        assert pb.CHALLENGE_METHOD_RECOVERY_CODE in challenge.methods
        return await identity.answer(
            person, challenge.challenge_id, client(device, person.ip), recovery_code=code
        )

    old = await refused(recover(old_codes[0], "lost-phone-1"))
    assert old.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await recover(new_codes[0], "lost-phone-2")).access_token


async def test_recovery_codes_cannot_be_regenerated_without_a_second_factor(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    refusal = await refused(
        identity.stub.RegenerateRecoveryCodes(
            pb.RegenerateRecoveryCodesRequest(), metadata=bearer(session), timeout=TIMEOUT
        )
    )
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refusal) == "NO_SECOND_FACTOR"


async def test_sessions_are_listed_and_a_revoked_one_is_refused_by_another_service_within_seconds(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    tablet = await identity.sign_in_with_email_code(person, device="tablet")

    listed = (
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(here), timeout=TIMEOUT
        )
    ).sessions
    by_id = {s.session_id: s for s in listed}
    assert set(by_id) == {here.session_id, tablet.session_id}
    mine, theirs = by_id[here.session_id], by_id[tablet.session_id]
    assert (mine.current, theirs.current) == (True, False)
    # Each session is bound to the key its device proved, not to the label it sent.
    assert (mine.device_id, theirs.device_id) == (
        person.key().thumbprint,
        person.key("tablet").thumbprint,
    )
    assert list(mine.methods) == [pb.AUTH_METHOD_PASSWORD]
    assert sorted(theirs.methods) == [pb.AUTH_METHOD_PASSWORD, pb.AUTH_METHOD_EMAIL_CODE]
    assert (mine.assurance_level, theirs.assurance_level) == (1, 1)
    assert mine.ip_address == person.ip
    assert mine.HasField("created_at") and mine.HasField("last_seen_at")

    await notify_accepts(identity, tablet)
    await identity.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=tablet.session_id),
        metadata=bearer(here),
        timeout=TIMEOUT,
    )
    assert await notify_refuses_within(identity, tablet) == grpc.StatusCode.UNAUTHENTICATED
    dead_refresh = await refused(identity.refresh(person, tablet.refresh_token, "tablet"))
    assert dead_refresh.code() == grpc.StatusCode.UNAUTHENTICATED
    remaining = (
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(here), timeout=TIMEOUT
        )
    ).sessions
    assert [s.session_id for s in remaining] == [here.session_id]
    await notify_accepts(identity, here)

    again = await refused(
        identity.stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=tablet.session_id),
            metadata=bearer(here),
            timeout=TIMEOUT,
        )
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_a_session_of_another_account_cannot_be_revoked(identity: IdentityOnCluster):
    owner = await identity.register("hanako@example.jp")
    owners_session = (await identity.login(owner)).session
    other = await identity.register("taro@example.jp")
    others_session = (await identity.login(other)).session

    missing = await refused(
        identity.stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=owners_session.session_id),
            metadata=bearer(others_session),
            timeout=TIMEOUT,
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert not await ended(identity, owners_session)
    listed = (
        await identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(others_session), timeout=TIMEOUT
        )
    ).sessions
    assert [s.session_id for s in listed] == [others_session.session_id]


async def test_logout_ends_only_the_callers_session_everywhere(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    tablet = await identity.sign_in_with_email_code(person, device="tablet")
    await notify_accepts(identity, here)

    await identity.stub.Logout(pb.LogoutRequest(), metadata=bearer(here), timeout=TIMEOUT)

    assert await notify_refuses_within(identity, here) == grpc.StatusCode.UNAUTHENTICATED
    refresh = await refused(identity.refresh(person, here.refresh_token))
    assert refresh.code() == grpc.StatusCode.UNAUTHENTICATED
    twice = await refused(
        identity.stub.Logout(pb.LogoutRequest(), metadata=bearer(here), timeout=TIMEOUT)
    )
    assert twice.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not await ended(identity, tablet)
    await notify_accepts(identity, tablet)


async def test_devices_are_listed_and_a_revoked_device_loses_its_sessions_and_its_trust(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    here = (await identity.login(person)).session
    tablet = await identity.sign_in_with_email_code(person, device="tablet")

    devices = (
        await identity.stub.ListDevices(
            pb.ListDevicesRequest(), metadata=bearer(here), timeout=TIMEOUT
        )
    ).devices
    phone, tablet_key = person.key().thumbprint, person.key("tablet").thumbprint
    assert sorted(d.device_id for d in devices) == sorted([phone, tablet_key])
    for device in devices:
        assert device.user_agent == "MamoruApp/1.0"
        assert device.last_ip_address == person.ip
        assert device.HasField("first_seen_at") and device.HasField("last_seen_at")

    await notify_accepts(identity, tablet)
    await identity.stub.RevokeDevice(
        pb.RevokeDeviceRequest(device_id=tablet_key), metadata=bearer(here), timeout=TIMEOUT
    )
    assert await notify_refuses_within(identity, tablet) == grpc.StatusCode.UNAUTHENTICATED
    assert await ended(identity, tablet)
    assert not await ended(identity, here)
    devices = (
        await identity.stub.ListDevices(
            pb.ListDevicesRequest(), metadata=bearer(here), timeout=TIMEOUT
        )
    ).devices
    assert [d.device_id for d in devices] == [phone]
    # The device is a stranger again: the password alone no longer opens a session on it.
    assert (await identity.login(person, device="tablet")).WhichOneof("result") == "challenge"

    unknown = await refused(
        identity.stub.RevokeDevice(
            pb.RevokeDeviceRequest(device_id="never-seen"), metadata=bearer(here), timeout=TIMEOUT
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_a_second_sign_in_code_replaces_the_first(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    where = client("tablet", person.ip)
    challenge = (await identity.login(person, device="tablet")).challenge
    assert pb.CHALLENGE_METHOD_EMAIL_CODE in challenge.methods

    codes = []
    for _ in range(2):
        before = mail_count(identity, person.email)
        await identity.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge.challenge_id), timeout=TIMEOUT
        )
        mail = await next_mail(
            identity.mailbox, person.email, subject_is(*SIGN_IN_SUBJECTS), after=before
        )
        codes.append(code_in(mail))
    first, second = codes
    assert first != second

    async def answer(code: str) -> pb.SessionTokens:
        return await identity.answer(person, challenge.challenge_id, where, email_code=code)

    replaced = await refused(answer(first))
    assert replaced.code() == grpc.StatusCode.UNAUTHENTICATED
    session = await answer(second)
    assert session.access_token
    # The challenge is spent: neither a further code nor the same one opens another session.
    spent = await refused(
        identity.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge.challenge_id), timeout=TIMEOUT
        )
    )
    assert spent.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refused(answer(second))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_password_alone_cannot_remove_a_second_factor_until_it_steps_up_with_one(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    old_codes = person.recovery_codes
    # On the owner's own phone the password alone opens a session: someone holding
    # only the password must still not be able to strip the account's second factor.
    password_only = (await identity.login(person)).session
    assert password_only.assurance_level == 1
    (totp,) = await factors(identity, password_only)

    removal = await refused(
        identity.stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=totp.factor_id),
            metadata=bearer(password_only),
            timeout=TIMEOUT,
        )
    )
    regeneration = await refused(
        identity.stub.RegenerateRecoveryCodes(
            pb.RegenerateRecoveryCodesRequest(), metadata=bearer(password_only), timeout=TIMEOUT
        )
    )
    for refusal in (removal, regeneration):
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(refusal) == "STEP_UP_REQUIRED"
    assert [f.factor_id for f in await factors(identity, password_only)] == [totp.factor_id]

    # A recovery code signs in (the phone is lost) but is not proof enough to change
    # factors: someone who found the printed codes must not strip the app.
    challenge = (await identity.login(person, device="new-phone")).challenge
    recovered = await identity.answer(
        person, challenge.challenge_id, client("new-phone", person.ip), recovery_code=old_codes[0]
    )
    recovery = await refused(
        identity.stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=totp.factor_id),
            metadata=bearer(recovered),
            timeout=TIMEOUT,
        )
    )
    assert reason_of(recovery) == "STEP_UP_REQUIRED"

    # The password session stepped up with the authenticator app removes it.
    stepped = await identity.step_up(person, password_only)
    await identity.stub.RemoveFactor(
        pb.RemoveFactorRequest(factor_id=totp.factor_id),
        metadata=bearer(stepped),
        timeout=TIMEOUT,
    )
    assert await factors(identity, stepped) == []
