"""The operators' pages: alerts, kill switches and country policy, cases with their
victims and compensation, forced resets, and charts. Each POST needs the session's
CSRF token; each change needs a reason and names the operator (see use_cases)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from google.protobuf import timestamp_pb2
from mamoru.risk.v1 import risk_pb2

from services.console.api import views
from services.console.api.security import CSRF_FIELD, IMAGE_POLICY, first, read_form, same
from services.console.clients.peers import PeerRefused, Peers
from services.console.domain import charts
from services.console.domain.records import Session
from services.console.storage import actions as action_store
from services.console.use_cases.operations import Invalid, Operations

# The windows the charts offer, in hours; the first is shown unless one is chosen.
CHART_HOURS = (24, 6, 1)
CHART_MOST_DECISIONS = 5000
NOTICES = {
    "policy": "The policy changed.",
    "alert": "The alert was updated.",
    "confirmed": "Fraud confirmed for the case.",
    "reset": "The forced reset started; its progress follows below.",
    "resumed": "The forced reset goes on; its progress follows below.",
}


class SignInNeeded(Exception):
    pass


class CsrfRefused(Exception):
    pass


def _status_of(error: Exception) -> int:
    if isinstance(error, Invalid):
        return 400
    if isinstance(error, PeerRefused) and error.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
        return 409 if error.code == "FAILED_PRECONDITION" else 400
    if isinstance(error, PeerRefused) and error.code == "NOT_FOUND":
        return 404
    return 502


def _lines(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.replace(",", "\n").splitlines()) if part]


def router(
    *,
    templates: Jinja2Templates,
    operations: Operations,
    peers: Peers,
    session_of: Callable[[Request], Awaitable[Session | None]],
    context: dict[str, Any],
) -> APIRouter:
    routes = APIRouter()
    pool = operations.pool

    async def signed_in(request: Request) -> Session:
        session = await session_of(request)
        if session is None:
            raise SignInNeeded
        return session

    async def posted(request: Request) -> tuple[Session, dict[str, list[str]]]:
        session = await signed_in(request)
        form = await read_form(request)
        if not same(session.csrf_token, first(form, CSRF_FIELD)):
            raise CsrfRefused
        return session, form

    def render(
        request: Request, session: Session, name: str, values: dict[str, Any], status: int = 200
    ) -> Response:
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        return templates.TemplateResponse(
            request,
            name,
            {
                **context,
                **values,
                "operator": session.operator,
                "csrf_token": session.csrf_token,
                "notice": values.get("notice", notice),
                "path": request.url.path,
            },
            status_code=status,
        )

    # --- alerts -------------------------------------------------------------

    async def alerts_page(
        request: Request, session: Session, error: str = "", status: int = 200
    ) -> Response:
        alerts = await peers.alerts(session.operator)
        return render(
            request,
            session,
            "alerts.html",
            {"alerts": views.alerts(alerts), "error": error},
            status,
        )

    @routes.get("/alerts")
    async def alerts(request: Request) -> Response:
        return await alerts_page(request, await signed_in(request))

    @routes.get("/alerts/rows")
    async def alert_rows(request: Request) -> Response:
        session = await signed_in(request)
        found = await peers.alerts(session.operator)
        return render(request, session, "_alert_rows.html", {"alerts": views.alerts(found)})

    @routes.post("/alerts/{alert_id}")
    async def update_alert(request: Request, alert_id: str) -> Response:
        session, form = await posted(request)
        try:
            await operations.update_alert(
                session.operator, alert_id, first(form, "status"), first(form, "note")
            )
        except (Invalid, PeerRefused) as error:
            return await alerts_page(request, session, str(error), _status_of(error))
        return RedirectResponse("/alerts?done=alert", status_code=303)

    # --- policy -------------------------------------------------------------

    async def policy_page(
        request: Request, session: Session, error: str = "", status: int = 200
    ) -> Response:
        policy = await peers.policy(session.operator)
        changes = await peers.policy_changes(session.operator)
        return render(
            request,
            session,
            "policy.html",
            {
                "policy": views.policy(policy),
                "changes": views.changes(changes),
                "error": error,
            },
            status,
        )

    @routes.get("/policy")
    async def policy(request: Request) -> Response:
        return await policy_page(request, await signed_in(request))

    @routes.post("/policy")
    async def set_policy(request: Request) -> Response:
        session, form = await posted(request)
        try:
            await operations.set_policy(
                session.operator,
                first(form, "switch"),
                first(form, "key"),
                first(form, "value"),
                first(form, "reason"),
            )
        except (Invalid, PeerRefused) as error:
            return await policy_page(request, session, str(error), _status_of(error))
        return RedirectResponse("/policy?done=policy", status_code=303)

    # --- cases --------------------------------------------------------------

    @routes.get("/cases")
    async def cases(request: Request) -> Response:
        session = await signed_in(request)
        found = await peers.cases(session.operator)
        actions = await action_store.recent(pool, prefix="case.")
        asked = request.query_params
        values: dict[str, Any] = {
            "cases": views.cases(found),
            "actions": actions,
            "query": {key: asked.get(key, "") for key in ("ips", "subnets", "devices", "since")},
            "today": datetime.now(UTC).strftime("%Y-%m-%dT00:00Z"),
        }
        status = 200
        if asked.get("since"):
            try:
                answer = await operations.victims(
                    session.operator,
                    ips=_lines(asked.get("ips", "")),
                    subnets=_lines(asked.get("subnets", "")),
                    devices=_lines(asked.get("devices", "")),
                    since=asked.get("since", ""),
                )
                values["victims"] = views.victims(answer)
            except (Invalid, PeerRefused) as error:
                values["error"], status = str(error), _status_of(error)
        return render(request, session, "cases.html", values, status)

    async def case_page(
        request: Request,
        session: Session,
        case_id: str,
        *,
        error: str = "",
        status: int = 200,
        compensation: Any = None,
    ) -> Response:
        try:
            found = await peers.case(case_id, session.operator)
        except PeerRefused as refused:
            return render(
                request, session, "error.html", {"error": str(refused)}, _status_of(refused)
            )
        victims = None
        if found.status in (risk_pb2.CASE_STATUS_CONFIRMED_FRAUD, risk_pb2.CASE_STATUS_CLOSED):
            victims = views.victims(await peers.victims(case_id, session.operator))
        return render(
            request,
            session,
            "case.html",
            {
                "case": views.case(found),
                "victims": victims,
                "compensation": compensation,
                "error": error,
                "today": datetime.now(UTC).strftime("%Y-%m-%dT00:00Z"),
            },
            status,
        )

    @routes.get("/cases/{case_id}")
    async def case(request: Request, case_id: str) -> Response:
        return await case_page(request, await signed_in(request), case_id)

    @routes.post("/cases/{case_id}/confirm")
    async def confirm(request: Request, case_id: str) -> Response:
        session, form = await posted(request)
        try:
            await operations.confirm_fraud(
                session.operator,
                case_id,
                ips=_lines(first(form, "ips")),
                subnets=_lines(first(form, "subnets")),
                devices=_lines(first(form, "devices")),
                since=first(form, "since"),
                reason_text=first(form, "reason"),
            )
        except (Invalid, PeerRefused) as error:
            return await case_page(
                request, session, case_id, error=str(error), status=_status_of(error)
            )
        return RedirectResponse(f"/cases/{case_id}?done=confirmed", status_code=303)

    @routes.post("/cases/{case_id}/compensate")
    async def compensate(request: Request, case_id: str) -> Response:
        session, form = await posted(request)
        try:
            paid = await operations.compensate(session.operator, case_id, first(form, "reason"))
        except (Invalid, PeerRefused) as error:
            return await case_page(
                request, session, case_id, error=str(error), status=_status_of(error)
            )
        # Shown at once rather than redirected: the lines paid by this run are in the answer.
        return await case_page(request, session, case_id, compensation=views.compensation(paid))

    # --- forced resets ------------------------------------------------------

    async def resets_page(
        request: Request, session: Session, error: str = "", status: int = 200
    ) -> Response:
        jobs = await action_store.resets(pool)
        return render(request, session, "resets.html", {"jobs": jobs, "error": error}, status)

    @routes.get("/resets")
    async def resets(request: Request) -> Response:
        return await resets_page(request, await signed_in(request))

    @routes.get("/resets/rows")
    async def reset_rows(request: Request) -> Response:
        session = await signed_in(request)
        jobs = await action_store.resets(pool)
        return render(request, session, "_reset_rows.html", {"jobs": jobs})

    @routes.post("/resets")
    async def start_reset(request: Request) -> Response:
        session, form = await posted(request)
        try:
            await operations.start_reset(
                session.operator,
                _lines(first(form, "account_ids")),
                first(form, "all_accounts") == "yes",
                first(form, "reason"),
            )
        except (Invalid, PeerRefused) as error:
            return await resets_page(request, session, str(error), _status_of(error))
        return RedirectResponse("/resets?done=reset", status_code=303)

    @routes.post("/resets/{job_id}/resume")
    async def resume_reset(request: Request, job_id: str) -> Response:
        session, form = await posted(request)
        try:
            await operations.resume_reset(session.operator, job_id, first(form, "reason"))
        except (Invalid, PeerRefused) as error:
            return await resets_page(request, session, str(error), _status_of(error))
        return RedirectResponse("/resets?done=resumed", status_code=303)

    # --- charts -------------------------------------------------------------

    def window_of(request: Request) -> int:
        chosen = request.query_params.get("hours", "")
        return int(chosen) if chosen in {str(h) for h in CHART_HOURS} else CHART_HOURS[0]

    async def decision_points(
        session: Session, window: timedelta
    ) -> tuple[list[charts.Point], datetime]:
        now = datetime.now(UTC)
        since = timestamp_pb2.Timestamp()
        since.FromDatetime(now - window)
        records = await peers.decisions(since, session.operator, CHART_MOST_DECISIONS)
        return [views.point(record) for record in records], now

    @routes.get("/charts")
    async def charts_page(request: Request) -> Response:
        session = await signed_in(request)
        hours = window_of(request)
        points, now = await decision_points(session, timedelta(hours=hours))
        series = charts.over_time(points, now, timedelta(hours=hours))
        return render(
            request,
            session,
            "charts.html",
            {
                "hours": hours,
                "choices": CHART_HOURS,
                "counts": charts.by_outcome(points),
                "total": len(points),
                "rows": [
                    (start.strftime("%m-%d %H:%M"), a, r)
                    for start, a, r in zip(
                        series.starts, series.attempts, series.refusals, strict=True
                    )
                    if a
                ],
            },
        )

    @routes.get("/charts/{name}.svg")
    async def chart(request: Request, name: str) -> Response:
        session = await signed_in(request)
        if name not in ("attempts", "outcomes"):
            return Response("no such chart", status_code=404)
        window = timedelta(hours=window_of(request))
        points, now = await decision_points(session, window)
        if name == "attempts":
            svg = charts.attempts_svg(charts.over_time(points, now, window))
        else:
            svg = charts.outcomes_svg(charts.by_outcome(points))
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={"content-security-policy": IMAGE_POLICY},
        )

    @routes.get("/activity")
    async def activity(request: Request) -> Response:
        session = await signed_in(request)
        actions = await action_store.recent(pool, limit=200)
        return render(request, session, "activity.html", {"actions": actions})

    return routes
