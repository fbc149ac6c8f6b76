"""Register, verify, sign in (password + second factor, or a passkey alone), the
account's factors, sessions and devices, and the pages that mail links open."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.web.api.web import after_sign_in, check_csrf, go, local_path, render, to_sign_in
from services.web.clients.calls import Refused
from services.web.domain.codes import qr_svg

router = APIRouter()


def _deps(request: Request) -> Any:
    return request.app.state.deps


async def _form(request: Request) -> tuple[Any, Any, dict[str, str]]:
    deps = _deps(request)
    session = await deps.browser.load(request)
    await check_csrf(request, session)
    form = await request.form()
    return deps, session, {k: str(v) for k, v in form.items()}


@router.get("/")
async def home(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    return go("/wallet" if session.signed_in else "/sign-in")


@router.post("/language")
async def language(request: Request) -> Response:
    _, session, form = await _form(request)
    session.lang = "en" if form.get("lang") == "en" else "ja"
    return go(local_path(form.get("next", "/")))


# Registration ----------------------------------------------------------------------


@router.get("/register")
async def register_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    return render(request, session, "register.html")


@router.post("/register")
async def register(request: Request) -> Response:
    deps, session, form = await _form(request)
    email = form.get("email", "").strip()
    try:
        await deps.accounts.register(
            session,
            deps.where(request),
            email,
            form.get("password", ""),
            form.get("display_name", "").strip(),
        )
    except Refused as refused:
        return render(request, session, "register.html", 422, error=refused, email=email)
    return go("/verify")


@router.get("/verify")
async def verify_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    email = session.pending.get("verify_email")
    if not email:
        return go("/register")
    return render(request, session, "verify.html", email=email)


@router.post("/verify")
async def verify(request: Request) -> Response:
    deps, session, form = await _form(request)
    try:
        await deps.accounts.verify_email(session, deps.where(request), form.get("code", "").strip())
    except Refused as refused:
        email = session.pending.get("verify_email", "")
        return render(request, session, "verify.html", 422, error=refused, email=email)
    session.flash = {"notice": "verified"}
    return go("/sign-in")


# Sign-in ---------------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    if session.signed_in:
        return go("/wallet")
    # A half-finished second step is abandoned when the person comes back here.
    session.pending.pop("challenge_id", None)
    email = session.pending.get("verified_email", "")
    return render(request, session, "sign_in.html", email=email)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    deps, session, form = await _form(request)
    email = form.get("email", "").strip()
    try:
        done = await deps.accounts.login(
            session, deps.where(request), email, form.get("password", "")
        )
    except Refused as refused:
        return render(request, session, "sign_in.html", 401, error=refused, email=email)
    return go(after_sign_in(session) if done else "/sign-in/second-factor")


@router.get("/sign-in/second-factor")
async def second_factor_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    if not session.pending.get("challenge_id"):
        return go("/sign-in")
    return render(request, session, "second_factor.html", methods=session.pending["methods"])


@router.post("/sign-in/second-factor")
async def second_factor(request: Request) -> Response:
    deps, session, form = await _form(request)
    answer = {
        name: form.get(name, "").strip()
        for name in ("totp_code", "email_code", "recovery_code")
        if form.get(name, "").strip()
    }
    try:
        if form.get("send") == "email_code":
            await deps.accounts.send_sign_in_code(session)
            session.flash = {"notice": "code_sent"}
            return go("/sign-in/second-factor")
        await deps.accounts.answer(session, deps.where(request), **dict(list(answer.items())[:1]))
    except Refused as refused:
        methods = session.pending.get("methods", [])
        return render(request, session, "second_factor.html", 401, error=refused, methods=methods)
    return go(after_sign_in(session))


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    deps, session, _ = await _form(request)
    await deps.accounts.sign_out(session, deps.where(request))
    return go("/sign-in")


# Passkey ceremonies (JSON, called by static/passkeys.js) ----------------------------


async def _json(request: Request) -> tuple[Any, Any, dict[str, Any]]:
    deps = _deps(request)
    session = await deps.browser.load(request)
    await check_csrf(request, session)
    try:
        body = await request.json()
    except ValueError:
        body = {}
    return deps, session, body if isinstance(body, dict) else {}


def _refused(refused: Refused) -> JSONResponse:
    status = 401 if refused.reason in ("signed_out", "unauthenticated") else 422
    return JSONResponse({"error": refused.reason}, status_code=status)


@router.post("/passkeys/sign-in/options")
async def passkey_sign_in_options(request: Request) -> Response:
    deps, session, _ = await _json(request)
    try:
        options = await deps.accounts.begin_passkey_login(session, deps.where(request))
    except Refused as refused:
        return _refused(refused)
    return Response(options, media_type="application/json")


@router.post("/passkeys/sign-in")
async def passkey_sign_in(request: Request) -> Response:
    deps, session, body = await _json(request)
    try:
        await deps.accounts.finish_passkey_login(
            session, deps.where(request), str(body.get("credential", ""))
        )
    except Refused as refused:
        return _refused(refused)
    return JSONResponse({"next": after_sign_in(session)})


@router.post("/passkeys/register/options")
async def passkey_register_options(request: Request) -> Response:
    deps, session, _ = await _json(request)
    try:
        options = await deps.accounts.begin_passkey_registration(session, deps.where(request))
    except Refused as refused:
        return _refused(refused)
    return Response(options, media_type="application/json")


@router.post("/passkeys/register")
async def passkey_register(request: Request) -> Response:
    deps, session, body = await _json(request)
    name = str(body.get("name", "")).strip()[:60] or "Passkey"
    try:
        await deps.accounts.finish_passkey_registration(
            session, deps.where(request), str(body.get("credential", "")), name
        )
    except Refused as refused:
        return _refused(refused)
    session.flash = {"notice": "passkey_added"}
    return JSONResponse({"next": "/account"})


# The account -----------------------------------------------------------------------


@router.get("/account")
async def account(request: Request) -> Response:
    deps = _deps(request)
    session = await deps.browser.load(request)
    where = deps.where(request)
    try:
        factors = await deps.accounts.factors(session, where)
        sessions = await deps.accounts.sessions(session, where)
        devices = await deps.accounts.devices(session, where)
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        raise
    return render(
        request,
        session,
        "account.html",
        passkeys=[f for f in factors if f.method == 1],
        apps=[f for f in factors if f.method == 2],
        sessions=sessions,
        devices=devices,
        current_session=session.session_id,
        current_device=session.device_key().thumbprint,
    )


async def _account_action(request: Request, action: str, target: str) -> Response:
    deps, session, _ = await _form(request)
    where = deps.where(request)
    try:
        if action == "remove_factor":
            await deps.accounts.remove_factor(session, where, target)
        elif action == "revoke_session":
            await deps.accounts.revoke_session(session, where, target)
        elif action == "revoke_device":
            await deps.accounts.revoke_device(session, where, target)
        elif action == "recovery_codes":
            codes = await deps.accounts.regenerate_recovery_codes(session, where)
            session.flash = {"recovery_codes": codes}
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        if refused.reason == "STEP_UP_REQUIRED":
            # Changing factors needs one the account already has, shown in this session.
            session.return_to = "/account"
            return go("/step-up")
        session.flash = {"error": refused.reason}
    return go("/account")


@router.post("/factors/{factor_id}/remove")
async def remove_factor(request: Request, factor_id: str) -> Response:
    return await _account_action(request, "remove_factor", factor_id)


@router.post("/sessions/{session_id}/sign-out")
async def revoke_session(request: Request, session_id: str) -> Response:
    return await _account_action(request, "revoke_session", session_id)


@router.post("/devices/{device_id}/forget")
async def revoke_device(request: Request, device_id: str) -> Response:
    return await _account_action(request, "revoke_device", device_id)


@router.post("/recovery-codes")
async def recovery_codes(request: Request) -> Response:
    return await _account_action(request, "recovery_codes", "")


@router.get("/authenticator")
async def authenticator_page(request: Request) -> Response:
    deps = _deps(request)
    session = await deps.browser.load(request)
    try:
        if not session.pending.get("totp_enrollment_id"):
            await deps.accounts.begin_totp(session, deps.where(request))
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        raise
    uri = str(session.pending["totp_uri"])
    return render(
        request,
        session,
        "authenticator.html",
        secret=session.pending["totp_secret"],
        qr=qr_svg(uri, scale=4),
    )


@router.post("/authenticator")
async def authenticator(request: Request) -> Response:
    deps, session, form = await _form(request)
    try:
        codes = await deps.accounts.confirm_totp(
            session, deps.where(request), form.get("code", "").strip()
        )
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        uri = str(session.pending.get("totp_uri", ""))
        return render(
            request,
            session,
            "authenticator.html",
            422,
            error=refused,
            secret=session.pending.get("totp_secret", ""),
            qr=qr_svg(uri, scale=4) if uri else "",
        )
    session.flash = {"recovery_codes": codes}
    return go("/account")
