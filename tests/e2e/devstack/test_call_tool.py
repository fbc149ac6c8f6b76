"""The call tool: help that lists what can be called and by whom, refusals that
say which principal may call, field errors spelled as the JSON input, metadata,
and a device's proofs signed for whatever request takes one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from mamoru.identity.v1 import identity_pb2 as idp

from services.devstack import call
from services.runtime.device_proof import DeviceKey, verify_proof
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.harness import Cluster


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await call.call(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
async def risk(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    await cluster.start("risk")
    monkeypatch.setenv("RISK_ADDRESS", cluster.address("risk"))
    monkeypatch.setenv("MAMORU_TLS_DIR", str(cluster.tls_dir))
    monkeypatch.delenv("MAMORU_AS", raising=False)
    return cluster


async def test_help_exits_zero_and_lists_every_service_and_its_methods() -> None:
    code, out, _ = await run("--help")
    assert code == 0
    for service, method in [
        ("identity", "Login"),
        ("wallet", "CapturePayment"),
        ("risk", "SetPolicy"),
        ("notify", "ListDeliveries"),
    ]:
        line = next(line for line in out.splitlines() if line.startswith(f"  {service}: "))
        assert method in line


async def test_a_services_help_says_who_may_call_each_method() -> None:
    code, out, _ = await run("wallet", "--help")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    # Store registers, and the partner gateway acting for a merchant.
    assert rows["CapturePayment"].endswith("as gateway, pos")
    assert "as gateway, web, with a token" in rows["IssuePaymentCode"]
    assert rows["RegisterMerchant"].endswith("as operator")


async def test_a_refused_default_principal_is_told_which_principal_may_call(
    risk: Cluster,
) -> None:
    code, _, err = await run("risk", "AssessLogin", "{}")
    assert code == 1
    assert err.startswith("PERMISSION_DENIED")
    assert "risk.AssessLogin is open to identity, not to operator" in err
    assert "MAMORU_AS=identity" in err


async def test_field_errors_name_fields_as_the_json_input_spells_them(risk: Cluster) -> None:
    code, _, err = await run("risk", "ListAlerts", '{"page": {"pageSize": 9999}}')
    assert code == 1
    assert err.startswith("INVALID_ARGUMENT")
    assert "  page.pageSize: " in err
    assert "page_size" not in err


async def test_get_prints_one_field_of_the_reply(risk: Cluster) -> None:
    code, out, _ = await run("risk", "GetPolicies", "{}")
    assert code == 0
    version = json.loads(out)["policy"]["version"]
    assert (await run("risk", "GetPolicies", "{}", "--get", "policy.version"))[1] == f"{version}\n"
    assert (await run("risk", "GetPolicies", "{}", "--get", "policy.nothing"))[1] == "\n"


def test_metadata_carries_the_merchant_key_token_and_any_header() -> None:
    args, _ = call.argument_parser().parse_known_args(
        ["--merchant-key", "k1", "--token", "t1", "-H", "X-Trace: abc", "wallet", "GetBalance"]
    )
    assert call.request_metadata(args) == [
        ("authorization", "Bearer t1"),
        ("x-merchant-key", "k1"),
        ("x-trace", "abc"),
    ]


async def test_bad_usage_exits_two_and_says_why() -> None:
    assert (await run("bank", "Pay"))[0] == 2
    code, _, err = await run("risk", "NoSuchMethod")
    assert code == 2 and "risk has: " in err
    code, _, err = await run("risk", "SetPolicy", '{"reson": "x"}')
    assert code == 2 and "reson" in err


def test_a_device_signs_each_request_bound_as_identity_checks_it() -> None:
    device = DeviceKey()
    login = idp.LoginRequest(identifier="hanako@example.jp", password="pw")
    call.sign_as_device(login, "Login", device, bearer_token="")
    proven = verify_proof(login.device_proof, rpc="Login", bound="hanako@example.jp")
    assert proven is not None and proven.thumbprint == device.thumbprint
    exchange = idp.ExchangeTokenRequest(audience="wallet")
    call.sign_as_device(exchange, "ExchangeToken", device, bearer_token="t1")
    assert verify_proof(exchange.device_proof, rpc="ExchangeToken", bound="t1") is not None
    assert verify_proof(exchange.device_proof, rpc="ExchangeToken", bound="") is None


def test_a_device_leaves_alone_a_request_without_a_proof_or_with_its_own() -> None:
    device = DeviceKey()
    step_up = idp.BeginStepUpRequest()
    call.sign_as_device(step_up, "BeginStepUp", device, bearer_token="t1")
    assert step_up == idp.BeginStepUpRequest()
    given = idp.LoginRequest(identifier="a@example.jp", device_proof="as the JSON said")
    call.sign_as_device(given, "Login", device, bearer_token="")
    assert given.device_proof == "as the JSON said"


async def test_a_proof_bound_to_a_token_without_one_or_a_missing_key_is_bad_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = tmp_path / "phone.pem"
    pem.write_bytes(DeviceKey().private_pem())
    code, _, err = await run("--device", str(pem), "identity", "ExchangeToken", "{}")
    assert code == 2 and "give --token" in err
    code, _, err = await run("--device", str(tmp_path / "none.pem"), "identity", "Login", "{}")
    assert code == 2 and "no device key" in err
    monkeypatch.setenv("MAMORU_VAR", str(tmp_path))
    code, _, err = await run("--demo-phone", "identity", "Login", "{}")
    assert code == 2 and "make run" in err


async def test_the_device_option_signs_in_and_refreshes_as_the_registered_phone(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_identity(cluster)
    identity = IdentityOnCluster(cluster)
    person = await identity.register("call.device@example.jp", "phone-1")
    pem = tmp_path / "phone.pem"
    pem.write_bytes(person.key().private_pem())
    monkeypatch.setenv("IDENTITY_ADDRESS", cluster.address("identity"))
    monkeypatch.setenv("MAMORU_TLS_DIR", str(cluster.tls_dir))
    where = {"deviceId": person.device, "ipAddress": person.ip, "userAgent": "t"}
    login = json.dumps({"identifier": person.email, "password": person.password, "client": where})
    # The same label without the key is a new device: a second factor is asked for.
    code, out, err = await run("--as", "gateway", "identity", "Login", login)
    assert code == 0, err
    assert "challenge" in json.loads(out)
    code, out, err = await run("--as", "gateway", "--device", str(pem), "identity", "Login", login)
    assert code == 0, err
    session = json.loads(out)["session"]
    assert session["accessToken"]
    # A session bound to the key refreshes only with a proof bound to its refresh token.
    refresh = json.dumps({"refreshToken": session["refreshToken"], "client": where})
    code, out, err = await run(
        "--as", "gateway", "--device", str(pem), "identity", "RefreshSession", refresh
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["session"]["refreshToken"] != session["refreshToken"]
