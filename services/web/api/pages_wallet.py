"""The wallet pages, and the pages the mail links open (reset, freeze, "this wasn't me")."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.web.api.pages_account import _deps, _form, _json
from services.web.api.web import after_sign_in, go, render, to_sign_in
from services.web.clients.calls import Refused
from services.web.domain.codes import barcode_svg, qr_svg

router = APIRouter()


async def _wallet_token(request: Request, session: Any) -> str | Response:
    """The session's wallet token, or where the person must go first."""
    deps = _deps(request)
    try:
        return str(await deps.accounts.wallet_token(session, deps.where(request)))
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        if refused.reason == "step_up_needed":
            return go("/step-up")
        if refused.reason == "fresh_sign_in_needed":
            return go("/wallet/sign-in-again")
        raise


@router.get("/wallet")
async def wallet(request: Request) -> Response:
    deps = _deps(request)
    session = await deps.browser.load(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    balance = await deps.money.balance(token)
    history = await deps.money.history(token) if balance is not None else []
    return render(request, session, "wallet.html", balance=balance, history=history)


@router.post("/wallet/open")
async def open_wallet(request: Request) -> Response:
    deps, session, _ = await _form(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    await deps.money.enroll(token, deps.where(request).client(session))
    return go("/wallet")


@router.get("/wallet/top-up")
async def top_up_page(request: Request) -> Response:
    deps = _deps(request)
    session = await deps.browser.load(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    cards = await deps.money.cards(token)
    return render(
        request,
        session,
        "top_up.html",
        cards=cards,
        new_cards=deps.money.takes_new_cards,
        key=str(uuid.uuid4()),
    )


@router.post("/wallet/top-up")
async def top_up(request: Request) -> Response:
    deps, session, form = await _form(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    try:
        amount = int(form.get("amount", "0"))
        source = form.get("card", "")
        if not source or source == "new":
            source = await deps.money.add_card(token, form.get("card_number", ""))
        await deps.money.top_up(
            token,
            deps.where(request).client(session),
            source,
            amount,
            # The form's own key: sending it twice (a double click, a retry) tops up once.
            form.get("idempotency_key", "") or str(uuid.uuid4()),
        )
    except ValueError:
        error = Refused("invalid", "amount")
    except Refused as refused:
        error = refused
    else:
        session.flash = {"notice": "topped_up"}
        return go("/wallet")
    cards = await deps.money.cards(token)
    return render(
        request,
        session,
        "top_up.html",
        422,
        error=error,
        cards=cards,
        new_cards=deps.money.takes_new_cards,
        key=str(uuid.uuid4()),
    )


@router.get("/wallet/pay")
async def pay_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    return render(request, session, "pay.html")


@router.post("/wallet/pay/code")
async def payment_code(request: Request) -> Response:
    """A fresh one-time code as barcode and QR code, for static/pay.js."""
    deps, session, _ = await _json(request)
    try:
        token = await deps.accounts.wallet_token(session, deps.where(request))
        code = await deps.money.payment_code(token, deps.where(request).client(session))
    except Refused as refused:
        return JSONResponse({"error": refused.reason}, status_code=422)
    return JSONResponse(
        {
            "code": code.code,
            "qr": qr_svg(code.code),
            "barcode": barcode_svg(code.code),
            "expires_at": code.expires_at,
            # Renew a little before the code dies, whatever the browser's clock says.
            "renew_in_ms": max(5_000, int((code.expires_at - time.time() - 20) * 1000)),
        }
    )


@router.get("/wallet/sign-in-again")
async def sign_in_again(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    return render(request, session, "sign_in_again.html")


# Step-up before the wallet -----------------------------------------------------------


@router.get("/step-up")
async def step_up_page(request: Request) -> Response:
    deps = _deps(request)
    session = await deps.browser.load(request)
    try:
        methods, options = await deps.accounts.step_up_options(session, deps.where(request))
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        raise
    session.pending["step_up_options"] = options
    return render(request, session, "step_up.html", methods=methods)


@router.post("/step-up")
async def step_up(request: Request) -> Response:
    deps, session, form = await _form(request)
    try:
        await deps.accounts.step_up(
            session, deps.where(request), totp_code=form.get("totp_code", "").strip()
        )
    except Refused as refused:
        if refused.reason == "signed_out":
            return to_sign_in(request, session)
        session.flash = {"error": refused.reason}
        return go("/step-up")
    return go(after_sign_in(session))


@router.post("/step-up/options")
async def step_up_passkey_options(request: Request) -> Response:
    _, session, _ = await _json(request)
    options = str(session.pending.get("step_up_options", "{}"))
    return Response(options, media_type="application/json")


@router.post("/step-up/passkey")
async def step_up_passkey(request: Request) -> Response:
    deps, session, body = await _json(request)
    try:
        await deps.accounts.step_up(
            session, deps.where(request), passkey_assertion_json=str(body.get("credential", ""))
        )
    except Refused as refused:
        return JSONResponse({"error": refused.reason}, status_code=422)
    return JSONResponse({"next": after_sign_in(session)})


# Pages the mail links open -----------------------------------------------------------


@router.get("/forgot-password")
async def forgot_page(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    return render(request, session, "forgot.html")


@router.post("/forgot-password")
async def forgot(request: Request) -> Response:
    deps, session, form = await _form(request)
    try:
        await deps.accounts.request_reset(
            session, deps.where(request), form.get("email", "").strip()
        )
    except Refused as refused:
        # Every address gets the same answer: only a malformed one or too many tries show.
        if refused.reason == "too_many" or refused.code == "INVALID_ARGUMENT":
            return render(request, session, "forgot.html", 422, error=refused)
    session.flash = {"notice": "link_sent"}
    return go("/forgot-password")


async def _link_page(request: Request, token: str, kind: str, template: str) -> Response:
    """A mail link's page: its token is kept in the session and dropped from the
    address bar and the history (and so from any Referer or screenshot)."""
    session = await _deps(request).browser.load(request)
    if token:
        session.pending[f"{kind}_token"] = token[:512]
        return go(request.url.path)
    if not session.pending.get(f"{kind}_token"):
        return render(request, session, "message.html", 400, title=f"{kind}_title", text="err_link")
    return render(request, session, template)


@router.get("/reset-password")
async def reset_page(request: Request, token: str = "") -> Response:
    return await _link_page(request, token, "reset", "reset.html")


@router.post("/reset-password")
async def reset(request: Request) -> Response:
    deps, session, form = await _form(request)
    try:
        await deps.accounts.complete_reset(
            session,
            deps.where(request),
            str(session.pending.get("reset_token", "")),
            form.get("password", ""),
        )
    except Refused as refused:
        return render(request, session, "reset.html", 422, error=refused)
    session.sign_out()
    session.flash = {"notice": "reset_done"}
    return go("/sign-in")


@router.get("/freeze-contact")
async def freeze_page(request: Request, token: str = "") -> Response:
    return await _link_page(request, token, "freeze", "freeze.html")


@router.post("/freeze-contact")
async def freeze(request: Request) -> Response:
    deps, session, _ = await _form(request)
    try:
        await deps.accounts.freeze_contact_change(str(session.pending.pop("freeze_token", "")))
    except Refused as refused:
        return render(request, session, "message.html", 422, title="freeze_title", error=refused)
    return render(request, session, "message.html", title="freeze_title", text="frozen")


@router.get("/security/not-me")
async def security_not_me(request: Request) -> Response:
    session = await _deps(request).browser.load(request)
    return render(request, session, "security_not_me.html")


@router.get("/wallet/not-me")
async def wallet_not_me_page(request: Request, movement: str = "") -> Response:
    session = await _deps(request).browser.load(request)
    if movement:
        session.pending["report_movement"] = movement[:64]
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    return render(
        request, session, "wallet_not_me.html", movement=session.pending.get("report_movement", "")
    )


@router.post("/wallet/not-me")
async def wallet_not_me(request: Request) -> Response:
    deps, session, form = await _form(request)
    token = await _wallet_token(request, session)
    if isinstance(token, Response):
        return token
    movement = str(session.pending.get("report_movement", ""))
    try:
        case = await deps.money.report(token, movement, form.get("details", "")[:500])
    except Refused as refused:
        return render(request, session, "wallet_not_me.html", 422, error=refused, movement=movement)
    session.pending.pop("report_movement", None)
    return render(
        request, session, "message.html", title="not_me_title", text="reported", case=case
    )
