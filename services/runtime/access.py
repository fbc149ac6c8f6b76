"""Who may call what: per-RPC allow-lists of calling principals and bearer-token checks.

The caller is the common name of the peer's client certificate, which the server
only accepts when our CA issued it (see ``tls.server_credentials``). A method
missing from the policy is refused, so a new RPC is closed until someone opens it.
Handlers must be ``async`` (coroutines or async generators), as grpc.aio servicers are.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
import structlog

from services.runtime.handlers import Context, HandlerInterceptor, wrap_handler
from services.runtime.logging import get_logger
from services.runtime.tokens import (
    SigningKeysUnavailable,
    TokenClaims,
    TokenRejected,
    TokenVerifier,
)

# Probes and tooling reach these without a policy entry; they reveal no business data.
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)

_current_caller: ContextVar[str] = ContextVar("mamoru_caller")
_current_claims: ContextVar[TokenClaims | None] = ContextVar("mamoru_claims", default=None)
_log = get_logger(__name__)


@dataclass(frozen=True)
class Access:
    """Principals allowed to call one RPC, and the token audiences it accepts (none = no token)."""

    callers: frozenset[str]
    audiences: frozenset[str] = frozenset()


def allow(*callers: str, audiences: Iterable[str] = ()) -> Access:
    """``allow("wallet", "operator", audiences=["wallet"])`` for a policy entry."""
    return Access(callers=frozenset(callers), audiences=frozenset(audiences))


def current_caller() -> str:
    """The principal calling the RPC being handled."""
    try:
        return _current_caller.get()
    except LookupError:
        raise RuntimeError("no caller: not inside an RPC admitted by AccessInterceptor") from None


def current_claims() -> TokenClaims | None:
    """The verified end-user token of the RPC being handled, if its policy asks for one."""
    return _current_claims.get()


@contextlib.contextmanager
def admitted_as(caller: str, claims: TokenClaims | None = None) -> Iterator[None]:
    """Run code as if an RPC from ``caller`` (with ``claims``) had been admitted.

    For unit tests of handler-side checks; both values are restored on exit.
    """
    caller_token = _current_caller.set(caller)
    claims_token = _current_claims.set(claims)
    try:
        yield
    finally:
        _current_claims.reset(claims_token)
        _current_caller.reset(caller_token)


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that carries ``token`` to a service."""
    return (("authorization", f"Bearer {token}"),)


class AccessInterceptor(HandlerInterceptor):
    """Admits each RPC only for a caller on its allow-list, with a valid token where required."""

    def __init__(self, policy: Mapping[str, Access], verifier: TokenVerifier | None = None) -> None:
        for method, access in policy.items():
            if not method.startswith("/") or method.count("/") != 2:
                raise ValueError(f"{method!r} is not a full method name (/package.Service/Method)")
            if not access.callers:
                raise ValueError(f"the policy for {method} names no caller")
            if access.audiences and verifier is None:
                raise ValueError(f"{method} requires a token but no TokenVerifier was given")
        super().__init__()
        self._policy = dict(policy)
        self._verifier = verifier

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        if method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        access = self._policy.get(method)

        @contextlib.asynccontextmanager
        async def admitted(context: Context) -> AsyncIterator[None]:
            await self._admit(method, access, context)
            yield

        # The call context only exists once the RPC runs, so the check lives in the behaviour.
        return wrap_handler(handler, admitted)

    async def _admit(self, method: str, access: Access | None, context: Any) -> None:
        caller = _peer_common_name(context)
        # Every line of this RPC, refusals included, then names the calling principal.
        structlog.contextvars.bind_contextvars(caller=caller)
        if caller is None:
            await _refuse(
                context, method, None, grpc.StatusCode.UNAUTHENTICATED, "no client certificate"
            )
        if access is None or caller not in access.callers:
            # The same answer for unknown methods and foreign callers: the policy stays private.
            await _refuse(
                context,
                method,
                caller,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller} may not call this method",
            )
        claims = None
        if access.audiences:
            claims = await self._verified_claims(method, caller, access, context)
        _current_caller.set(caller)
        _current_claims.set(claims)

    async def _verified_claims(
        self, method: str, caller: str, access: Access, context: Any
    ) -> TokenClaims:
        assert self._verifier is not None
        try:
            token = _bearer_token(context.invocation_metadata() or ())
        except TokenRejected as rejection:
            await _refuse(
                context, method, caller, grpc.StatusCode.UNAUTHENTICATED, rejection.reason
            )
        if token is None:
            await _refuse(
                context, method, caller, grpc.StatusCode.UNAUTHENTICATED, "bearer token required"
            )
        try:
            return await self._verifier.verify(token, access.audiences)
        except TokenRejected as rejection:
            await _refuse(
                context, method, caller, grpc.StatusCode.UNAUTHENTICATED, rejection.reason
            )
        except SigningKeysUnavailable:
            await _refuse(
                context,
                method,
                caller,
                grpc.StatusCode.UNAVAILABLE,
                "token keys unavailable, retry later",
            )


def _peer_common_name(context: Any) -> str | None:
    names = context.auth_context().get("x509_common_name", [])
    if len(names) != 1:
        return None
    name = names[0]
    return name.decode() if isinstance(name, bytes) else str(name)


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise TokenRejected("more than one authorization header")
    value = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("authorization must be 'Bearer <token>'")
    return token.strip()


async def _refuse(
    context: Any, method: str, caller: str | None, code: grpc.StatusCode, reason: str
) -> NoReturn:
    _log.warning("rpc refused", method=method, caller=caller, code=code.name, reason=reason)
    await context.abort(code, reason)
    raise RuntimeError("context.abort returned without ending the RPC")
