"""The seats' desktop API: which calls are in progress, and a seat's transfer of one.

    GET  /calls                       the calls in progress (callers masked)
    POST /calls/<call_id>/transfers   {"target": "sub_centre:12366", "seat_call": "..."}

A target names what a dialplan's ``to:`` names: ``emergency:110``, ``utility:power``,
``sub_centre:12366``, ``kept_seats:12315``, ``seats`` (the link back to 12345).
The method (one-key or three-way), ring timeout and what happens when the target
does not answer come from transfer/strategies.yaml, never from the request. The
answer is 202 once the caller is on the move; the outcome arrives as call events
(`transferred`, `transfer_failed`). Every request needs ``Authorization: Bearer
<token>``; without a configured token the API is not served at all.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import asdict
from typing import Any, Protocol

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ivr.core.privacy import loggable, mask_text
from ivr.core.transfer import (
    METHODS,
    BadTransferRequest,
    MethodNotAllowed,
    TransferPlan,
    TransferRefused,
    UnknownTransferTarget,
)

log = logging.getLogger(__name__)

seats = Blueprint("seats", __name__)

_MAX_BODY = 4096


class TransferDesk(Protocol):
    """A front-end that carries calls and can transfer them (Asterisk, Twilio)."""

    @property
    def front_end(self) -> str: ...
    def live_calls(self) -> list[dict[str, Any]]: ...
    def knows(self, call_id: str) -> bool: ...
    def transfer(
        self, call_id: str, target_ref: str, seat_call: str = "", method: str | None = None
    ) -> TransferPlan: ...


def _desks() -> list[TransferDesk]:
    return list(current_app.extensions["ivr"].get("desks", ()))


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes of a request body, however it is sent."""
    data = b""
    while len(data) < limit and (chunk := stream.read(limit - len(data))):
        data += chunk
    return data


def _problem(status: int, reason: str) -> tuple[Response, int]:
    return jsonify({"error": reason}), status


@seats.before_request
def _authorised() -> tuple[Response, int] | None:
    token: str = current_app.extensions["ivr"]["seat_token"]
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    # As bytes: compare_digest raises on a str that is not ASCII.
    given_token = value.strip().encode("utf-8", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_token, token.encode()):
        why = "no bearer token" if not given else "wrong token"
        log.warning("seat API: %s %s refused from %s: %s", request.method,
                    loggable(request.path), request.remote_addr, why)  # fmt: skip
        return _problem(401, "a valid bearer token is required")
    return None


@seats.get("/calls")
def calls_in_progress() -> Response:
    out: list[dict[str, Any]] = []
    for desk in _desks():
        out += desk.live_calls()
    return jsonify({"calls": out})


@seats.post("/calls/<call_id>/transfers")
def transfer(call_id: str) -> tuple[Response, int]:
    request.max_content_length = _MAX_BODY + 1  # a chunked body too: read no further
    try:
        raw = _read_at_most(request.stream, _MAX_BODY + 1)
    except RequestEntityTooLarge:  # its Content-Length says so
        raw = b"-" * (_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        return _problem(413, f"body over {_MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        body = None
    if not isinstance(body, dict):
        return _problem(400, "the body must be a JSON object")
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        return _problem(400, "field 'target' is required (e.g. \"sub_centre:12366\")")
    seat_call = body.get("seat_call", "")
    if not isinstance(seat_call, str):
        return _problem(400, "field 'seat_call' must be a string")
    method = body.get("method")
    if method is not None and method not in METHODS:
        return _problem(400, f"field 'method' must be one of {', '.join(METHODS)}")
    try:
        desk = next((d for d in _desks() if d.knows(call_id)), None)
    except Exception as exc:  # the call state's store (Redis) is unreachable
        log.error("seat API: looking up call %s failed: %s", loggable(call_id),
                  mask_text(str(exc)))  # fmt: skip
        return _problem(503, "the calls in progress cannot be looked up now")
    if desk is None:
        return _problem(404, f"no call {call_id} in progress here")
    try:
        plan = desk.transfer(call_id, target.strip(), seat_call, method)
    except BadTransferRequest as exc:
        return _problem(400, str(exc))
    except (UnknownTransferTarget, MethodNotAllowed) as exc:
        return _problem(422, str(exc))
    except TransferRefused as exc:
        return _problem(409, str(exc))
    except LookupError:
        return _problem(404, f"no call {call_id} in progress here")
    except Exception as exc:
        # the switch could not be told (manager or API down): the call stays as it is
        log.error("call %s: transfer to %s not started: %s", loggable(call_id),
                  loggable(target), mask_text(str(exc)))  # fmt: skip
        return _problem(503, f"the switch could not be told: {mask_text(str(exc))}")
    log.info("call %s: %s transfer to %s started by a seat", call_id, plan.method, plan.target.id)
    return jsonify(
        {
            "call_id": call_id,
            "front_end": desk.front_end,
            "method": plan.method,
            "target": asdict(plan.target),
            "ring_timeout": plan.ring_timeout,
            "on_failure": plan.on_failure,
        }
    ), 202
