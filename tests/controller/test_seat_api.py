"""The seats' desktop API: bearer token, request checks, and how a front-end's
answers become HTTP answers. The front-end here is a stand-in; the real ones are
tested in test_transfers.py (Asterisk, fake manager) and tests/lab (real calls)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.core.routing import Target
from ivr.core.transfer import (
    CallNotFound,
    MethodNotAllowed,
    TransferPlan,
    TransferRefused,
    UnknownTransferTarget,
)
from ivr.web import create_app

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Desk:
    front_end = "asterisk"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.requests: list[tuple[str, str, str]] = []
        self.methods: list[str | None] = []

    def live_calls(self) -> list[dict[str, Any]]:
        return [{"call_id": "c1", "caller": "139****0000", "region": "fuzhou"}]

    def knows(self, call_id: str) -> bool:
        return call_id == "c1"

    def transfer(
        self, call_id: str, target_ref: str, seat_call: str = "", method: str | None = None
    ) -> TransferPlan:
        self.requests.append((call_id, target_ref, seat_call))
        self.methods.append(method)
        if self.error:
            raise self.error
        return TransferPlan(Target("sub_centre", "fuzhou-12366", number="059112366"),
                            "three_way", 25, "work_order")  # fmt: skip


def client(desk: Desk, token: str | None = TOKEN) -> FlaskClient:
    return create_app(health=lambda: {"ok": True}, seat_token=token, desks=[desk]).test_client()


def test_a_transfer_is_accepted_with_its_plan() -> None:
    desk = Desk()
    answer = client(desk).post("/calls/c1/transfers", json={"target": " sub_centre:12366 "},
                               headers=AUTH)  # fmt: skip
    assert answer.status_code == 202
    assert answer.json == {
        "call_id": "c1", "front_end": "asterisk", "method": "three_way",
        "target": {"kind": "sub_centre", "id": "fuzhou-12366", "queue": None,
                   "number": "059112366"},
        "ring_timeout": 25, "on_failure": "work_order",
    }  # fmt: skip
    assert desk.requests == [("c1", "sub_centre:12366", "")]


def test_calls_in_progress_are_listed() -> None:
    answer = client(Desk()).get("/calls", headers=AUTH)
    assert answer.status_code == 200 and answer.json["calls"][0]["caller"] == "139****0000"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer \u00e9t\u00e9"},  # not ASCII: refused, not a 500
    ],
)
def test_no_valid_token_no_answer(
    headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    desk = Desk()
    with caplog.at_level(logging.WARNING):
        answer = client(desk).post("/calls/c1/transfers", json={"target": "seats"},
                                   headers=headers)  # fmt: skip
    assert answer.status_code == 401 and desk.requests == []
    assert "refused" in caplog.text and TOKEN not in caplog.text


def test_without_a_configured_token_the_api_is_not_served() -> None:
    assert client(Desk(), token=None).get("/calls", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "JSON object"),
        ({"target": ""}, "'target' is required"),
        ({"target": 110}, "'target' is required"),
        ({"target": "seats", "seat_call": 5}, "'seat_call'"),
        ({"target": "emergency:110", "method": "conference"}, "'method' must be one of"),
    ],
)
def test_malformed_requests_name_what_is_wrong(body: Any, reason: str) -> None:
    desk = Desk()
    c = client(desk)
    if body is None:
        answer = c.post("/calls/c1/transfers", data="not json", headers=AUTH)
    else:
        answer = c.post("/calls/c1/transfers", json=body, headers=AUTH)
    assert answer.status_code == 400 and reason in answer.json["error"]
    assert desk.requests == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownTransferTarget("'sub_centre:99999' names nobody in fuzhou"), 422),
        (MethodNotAllowed("'three_way' is not allowed for utility targets (one_key)"), 422),
        (TransferRefused("the caller is not talking to a seat"), 409),
        (CallNotFound("c1"), 404),
        (RuntimeError("manager 127.0.0.1:5038 unreachable"), 503),
    ],
)
def test_what_the_front_end_refuses_becomes_an_http_answer(error: Exception, status: int) -> None:
    answer = client(Desk(error)).post("/calls/c1/transfers", json={"target": "x"}, headers=AUTH)
    assert answer.status_code == status
    assert str(error).strip("'") in answer.json["error"] or status == 404


def test_the_seat_may_name_the_method() -> None:
    desk = Desk()
    body = {"target": "emergency:110", "method": "three_way"}
    assert client(desk).post("/calls/c1/transfers", json=body, headers=AUTH).status_code == 202
    assert desk.methods == ["three_way"]
    client(desk).post("/calls/c1/transfers", json={"target": "emergency:110"}, headers=AUTH)
    assert desk.methods[-1] is None  # the strategies' own


def test_an_unknown_call_is_404_without_asking_the_front_end() -> None:
    desk = Desk()
    answer = client(desk).post("/calls/c9/transfers", json={"target": "seats"}, headers=AUTH)
    assert answer.status_code == 404 and desk.requests == []


def test_an_oversized_body_is_refused() -> None:
    answer = client(Desk()).post("/calls/c1/transfers", data="x" * 5000, headers=AUTH,
                                 content_type="application/json")  # fmt: skip
    assert answer.status_code == 413


def test_a_chunked_body_over_the_limit_is_refused_as_it_is_read() -> None:
    # Without a Content-Length the 4 KiB limit was never looked at: a megabyte was
    # read whole and the transfer started.
    desk = Desk()
    body = json.dumps({"target": "sub_centre:12366", "pad": "x" * 1_000_000}).encode()
    answer = client(desk).post(
        "/calls/c1/transfers", input_stream=io.BytesIO(body), headers=AUTH,
        content_type="application/json",
        # what a chunked request is: no length, and the server ends the stream
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )  # fmt: skip
    assert answer.status_code == 413 and desk.requests == []


def test_json_nested_past_the_parsers_depth_is_a_400() -> None:
    answer = client(Desk()).post("/calls/c1/transfers", data="[" * 3000, headers=AUTH,
                                 content_type="application/json")  # fmt: skip
    assert answer.status_code == 400  # was a 500 with a RecursionError's traceback


def test_a_refused_request_writes_no_number_and_no_line_of_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = "/calls/13912340000%0A2026-03-03T10:00:00.000+08:00%20INFO%20forged/transfers"
    with caplog.at_level(logging.INFO):
        assert client(Desk()).post(forged, json={"target": "seats"}).status_code == 401
        failing = Desk(RuntimeError("manager down"))
        answer = client(failing).post(
            "/calls/c1/transfers", json={"target": "utility:13912340000"}, headers=AUTH
        )
    assert answer.status_code == 503
    logged = [r.getMessage() for r in caplog.records]
    assert any("refused" in m for m in logged) and any("utility:139****0000" in m for m in logged)
    assert not any("13912340000" in m or "\n" in m for m in logged), logged
