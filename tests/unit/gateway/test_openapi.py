"""The partner API's OpenAPI document, generated from the code: valid OpenAPI 3.1,
every partner operation secured by a scope, every error a problem document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from openapi_spec_validator import validate

from services.gateway.api import openapi
from services.gateway.domain.partners import SCOPES

MUTATING = ("post", "put", "patch", "delete")


def document() -> dict[str, Any]:
    return openapi.document("https://gateway.example")


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_partner_operation_names_its_scope_and_answers_errors_as_problems() -> None:
    spec = document()
    operations = [
        (path, method, operation)
        for path, methods in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in methods.items()
    ]
    assert len(operations) >= 14
    for path, method, operation in operations:
        (requirement,) = operation["security"]
        (scope,) = requirement["partnerOAuth"]
        assert scope in SCOPES, (path, method)
        for status in ("401", "403", "429"):
            content = operation["responses"][status]["content"]
            assert list(content) == ["application/problem+json"], (path, method, status)


def test_money_moving_calls_require_an_idempotency_key_and_show_an_example() -> None:
    spec = document()
    for path in ("/v1/payments", "/v1/authorizations", "/v1/cash-top-ups"):
        operation = spec["paths"][path]["post"]
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert headers["Idempotency-Key"]["required"] is True
        assert "409" in operation["responses"]
    capture = spec["components"]["schemas"]["CaptureRequest"]
    assert capture["examples"][0]["amount"] == {"amount_minor": 1200, "currency": "JPY"}


def test_the_token_endpoint_and_client_credentials_flow_are_described() -> None:
    spec = document()
    flow = spec["components"]["securitySchemes"]["partnerOAuth"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token"
    assert set(flow["scopes"]) == set(SCOPES)
    token = spec["paths"]["/oauth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]


def test_the_browsable_page_carries_no_script() -> None:
    from services.gateway.api import docs

    page = docs.render(document())
    assert "<script" not in page.lower()
    assert "/v1/payments" in page


async def test_an_oversized_or_unsized_body_is_refused_before_it_is_read() -> None:
    from typing import cast

    import httpx

    from services.gateway.api.app import MAX_BODY_BYTES, create_app

    unused = cast(Any, None)
    app = create_app(
        issuer="http://t",
        guard=unused,
        tokens=unused,
        payments=unused,
        webhooks=unused,
        ready=unused,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        large = await client.post("/v1/payments", content=b"x" * (MAX_BODY_BYTES + 1))
        assert large.status_code == 413
        assert large.headers["content-type"] == "application/problem+json"

        async def chunks() -> AsyncIterator[bytes]:
            yield b"{}"

        unsized = await client.post("/v1/payments", content=chunks())
        assert (unsized.status_code, unsized.json()["reason"]) == (411, "LENGTH_REQUIRED")
