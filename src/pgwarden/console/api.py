"""The JSON approvals API under ``/api/approvals``, behind ``Authorization: Bearer <JWT>``.

=======  ================================  ===========================================================
GET      /api/approvals[?status=pending]   requests the caller may see (approvers: theirs; requesters: own)
GET      /api/approvals/{id}               one request
POST     /api/approvals/{id}/approve       body ``{"window": "1h"?, "comment": "…"?}``
POST     /api/approvals/{id}/deny          body ``{"reason": "…"}`` (required)
=======  ================================  ===========================================================

Errors are ``{"error": {"code", "message"}}`` with the broker's or the verifier's stable code: 401 for a
missing, malformed, forged, expired or wrong-audience token (with ``WWW-Authenticate``), 403 approver not
allowed / self-approval, 404 unknown id, 409 already decided / replayed / expired, 422 bad window or
missing reason, 503 approval store (or key source) down. Nothing changes when an error is returned.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgwarden.engine.approvals import ApprovalStatus
from pgwarden.engine.principal import Principal

from ._core import (
    ConsoleError,
    authenticate,
    bearer,
    broker_of,
    can_view,
    error_from,
    not_visible,
    parse_window,
)

if TYPE_CHECKING:
    from pgwarden.engine.runtime import Runtime

__all__ = ["api_routes"]

log = logging.getLogger("pgwarden.console.api")

MAX_BODY = 64 * 1024
MAX_TEXT = 4000

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _error(err: ConsoleError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers={**_HEADERS, **err.headers})


def _ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=_HEADERS)


async def _body(request: Request) -> dict[str, Any]:
    # Refused before it is read: a Content-Length over the limit at once, a chunked body as soon as it passes
    # it (reading it whole first would let any token holder make the gateway buffer gigabytes).
    too_large = ConsoleError(413, "body_too_large", f"the request body is larger than {MAX_BODY} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ConsoleError(400, "bad_content_length", "the Content-Length header is not a number")
        if int(declared) > MAX_BODY:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConsoleError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, "invalid_json", "the request body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConsoleError(422, f"{key}_required", f"give a {key}: the requester is told it")
        return None
    if not isinstance(value, str):
        raise ConsoleError(422, f"{key}_invalid", f"{key} must be a string")
    if len(value) > MAX_TEXT:
        raise ConsoleError(422, f"{key}_invalid", f"{key} is longer than {MAX_TEXT} characters")
    return value.strip()


def api_routes(runtime: Runtime) -> list[Route]:
    async def principal(request: Request) -> Principal:
        return await authenticate(runtime, bearer(request.headers.get("authorization")))

    def handler(fn):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            try:
                who = await principal(request)
                return await fn(request, who)
            except Exception as exc:  # every failure becomes a stable JSON error
                err = error_from(exc)
                if err.status >= 500 and err.code == "internal_error":
                    log.exception("approvals API failed")
                return _error(err)

        return endpoint

    async def list_requests(request: Request, who: Principal) -> Response:
        status = request.query_params.get("status")
        if status is not None:
            try:
                status = ApprovalStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in ApprovalStatus)
                raise ConsoleError(422, "status_invalid", f"status must be one of: {choices}") from None
        found = await broker_of(runtime).list(status)
        visible = [r.as_dict() for r in found if can_view(who, r)]
        return _ok({"approvals": visible, "count": len(visible)})

    async def show(request: Request, who: Principal) -> Response:
        found = await broker_of(runtime).get(request.path_params["id"])
        if not can_view(who, found):
            raise not_visible(who, found)
        return _ok(found.as_dict())

    async def approve(request: Request, who: Principal) -> Response:
        data = await _body(request)
        window = parse_window(data.get("window"))
        comment = _text(data, "comment")
        done = await broker_of(runtime).approve(request.path_params["id"], who.subject, who.groups,
                                                window_ms=window, comment=comment)
        log.info("approval %s approved by %s via the HTTP API", done.id, who.subject)
        return _ok(done.as_dict())

    async def deny(request: Request, who: Principal) -> Response:
        data = await _body(request)
        reason = _text(data, "reason", required=True)
        assert reason is not None
        done = await broker_of(runtime).deny(request.path_params["id"], who.subject, who.groups, reason)
        log.info("approval %s denied by %s via the HTTP API", done.id, who.subject)
        return _ok(done.as_dict())

    return [
        Route("/api/approvals", handler(list_requests), methods=["GET"]),
        Route("/api/approvals/{id}", handler(show), methods=["GET"]),
        Route("/api/approvals/{id}/approve", handler(approve), methods=["POST"]),
        Route("/api/approvals/{id}/deny", handler(deny), methods=["POST"]),
    ]
