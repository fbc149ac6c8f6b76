"""The token endpoint (RFC 6749 §4.4, RFC 7523) and its metadata (RFC 8414)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.api import schemas
from services.gateway.domain.partners import SCOPES
from services.gateway.use_cases.tokens import ASSERTION_METHOD, SECRET_METHODS, TokenService

router = APIRouter()
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 16_384

_TOKEN_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {
                            "type": "string",
                            "description": "space-separated; default: every scope granted",
                            "example": "payments:capture payments:refund",
                        },
                        "client_id": {"type": "string", "description": "client_secret_post"},
                        "client_secret": {"type": "string", "description": "client_secret_post"},
                        "client_assertion_type": {
                            "type": "string",
                            "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
                        },
                        "client_assertion": {
                            "type": "string",
                            "description": "private_key_jwt: a JWT signed by the partner's key",
                        },
                    },
                },
                "example": {"grant_type": "client_credentials", "scope": "payments:capture"},
            }
        },
    }
}


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.post(
    "/oauth/token",
    response_model=schemas.TokenResponse,
    responses={
        400: {"model": schemas.OAuthError, "description": "RFC 6749 §5.2"},
        401: {"model": schemas.OAuthError, "description": "client authentication failed"},
        429: {"model": schemas.OAuthError, "description": "too many token requests; Retry-After"},
    },
    openapi_extra=_TOKEN_FORM,
    summary="Get an access token with client credentials",
    tags=["oauth"],
)
async def token(request: Request) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0].strip() != _FORM:
        return _oauth_error(400, "invalid_request", f"send {_FORM}")
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        return _oauth_error(400, "invalid_request", "the request is too large")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the form must be UTF-8")
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            # RFC 6749 §3.2: request parameters MUST NOT be included more than once.
            return _oauth_error(400, "invalid_request", f"{name} is repeated")
        form[name] = value
    service: TokenService = request.app.state.tokens
    status, body, headers = await service.token_response(form, request.headers)
    if status == 401 and "WWW-Authenticate" not in dict(headers):
        headers.append(("WWW-Authenticate", 'Basic realm="mamoru"'))
    return JSONResponse(body, status_code=status, headers=dict(headers))


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=schemas.ServerMetadata,
    summary="Authorization server metadata (RFC 8414)",
    tags=["oauth"],
)
async def metadata(request: Request) -> dict[str, Any]:
    service: TokenService = request.app.state.tokens
    return {
        "issuer": service.issuer,
        "token_endpoint": service.token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": [*SECRET_METHODS, ASSERTION_METHOD],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
        "scopes_supported": list(SCOPES),
        "response_types_supported": [],
        "service_documentation": f"{service.issuer}/docs",
    }
