"""A seat's transfer of a Twilio call: the REST requests the twilio library sends (to a
recording HTTP client standing in for api.twilio.com, which these tests cannot reach),
the TwiML it moves the calls to (parsed as XML), and the webhooks that follow."""

from __future__ import annotations

import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio_peer import ACCOUNT, Clock, Recorder, TwilioPeer, make_settings, parse

from ivr.core.clock import SHANGHAI
from ivr.core.routing import Hotline
from ivr.twilio.rest import TwilioRest
from ivr.twilio.state import MemoryStateStore, RedisStateStore
from ivr.twilio.transfers import TwilioTransfers
from ivr.twilio.webhooks import TwilioWebhooks
from ivr.web import create_app

SEAT_TOKEN = "seat-token-for-tests"
SEAT_CALL = "CA" + "2" * 32
TARGET_LEG = "CA" + "3" * 32
CALLER_CALL = TwilioPeer.sid  # the caller's CallSid in every rig
CONFERENCE = "CF" + "4" * 32
NOW = datetime(2022, 1, 10, 10, 0, tzinfo=SHANGHAI)


# A request's fault: given its URI and form, its own answer, an error raised, or None
# for Twilio's usual answer.
Fault = Callable[[str, dict[str, Any]], TwilioResponse | None]


class TwilioApi(HttpClient):  # type: ignore[misc]
    """Answers the REST calls a transfer makes, and keeps them."""

    def __init__(self, fail: bool = False, fault: Fault | None = None) -> None:
        super().__init__(logging.getLogger("twilio-test"), is_async=False)
        self.fail = fail
        self.fault = fault  # a request's own answer or error, where it returns one
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, uri: str, params: Any = None, data: Any = None,
                headers: Any = None, auth: Any = None, timeout: Any = None,
                allow_redirects: bool = False) -> TwilioResponse:  # fmt: skip
        self.requests.append((method, uri, dict(data or {})))
        if self.fault is not None and (answer := self.fault(uri, dict(data or {}))):
            return answer
        if self.fail:
            return TwilioResponse(503, json.dumps({"code": 20500, "message": "down"}))
        if "/Participants" in uri:
            body = {"call_sid": TARGET_LEG, "conference_sid": CONFERENCE, "account_sid": ACCOUNT}
            return TwilioResponse(
                201 if uri.endswith("Participants.json") else 200, json.dumps(body)
            )
        return TwilioResponse(200, json.dumps({"sid": uri.rsplit("/", 1)[-1][:-5]}))

    def updates_of(self, call_sid: str) -> list[ET.Element]:
        return [
            ET.fromstring(data["Twiml"])
            for method, uri, data in self.requests
            if method == "POST" and uri.endswith(f"/Calls/{call_sid}.json")
        ]


class Rig:
    def __init__(self, hotline: Hotline, api: TwilioApi, rest: bool = True, **section: Any) -> None:
        self.api = api
        self.events = Recorder()
        self.store = MemoryStateStore()
        settings = make_settings(**section)
        self.hooks = TwilioWebhooks(lambda: hotline, settings, self.events, Clock(NOW), self.store)
        client = (
            TwilioRest.create(ACCOUNT, "test-auth-token-0123456789abcdef", api) if rest else None
        )
        self.transfers = TwilioTransfers(self.hooks, client, "no TWILIO_ACCOUNT_SID")
        app = create_app(seat_token=SEAT_TOKEN, desks=[self.transfers])
        app.register_blueprint(self.hooks.blueprint())
        self.client = app.test_client()
        self.peer = TwilioPeer(self.client, to="+8659112345")

    def queued(self) -> ET.Element:
        """Walk a 12345 call to its <Enqueue> for the seats (the seat then answers)."""
        root = self.peer.call()
        while root[-1].tag == "Redirect":
            root = parse(self.peer.post(root[-1].text or "").data)
        assert root[-1].tag == "Enqueue", [c.tag for c in root]
        return root[-1]

    def seat_transfers(self, target: str, seat_call: str = SEAT_CALL, **more: str) -> Any:
        body = {"target": target, **({"seat_call": seat_call} if seat_call else {}), **more}
        return self.client.post(f"/calls/{self.peer.sid}/transfers", json=body,
                                headers={"Authorization": f"Bearer {SEAT_TOKEN}"})  # fmt: skip

    def participant(self) -> dict[str, Any]:
        return next(d for m, u, d in self.api.requests if u.endswith("/Participants.json"))

    def types(self) -> list[str]:
        return self.events.types(self.peer.sid)


@pytest.fixture
def rig(hotline: Hotline) -> Rig:
    return Rig(hotline, TwilioApi())


def test_three_way_puts_caller_and_seat_in_a_conference_and_rings_the_target(rig: Rig) -> None:
    enqueue = rig.queued()
    answer = rig.seat_transfers("sub_centre:12366")
    assert answer.status_code == 202 and answer.json["front_end"] == "twilio"
    room = f"ivr-{rig.peer.sid}"
    (caller,) = rig.api.updates_of(rig.peer.sid)
    conference = caller.find("Dial/Conference")
    assert conference is not None and conference.text == room
    assert conference.get("endConferenceOnExit") == "true"
    action = caller.find("Dial").get("action", "")
    assert "/twilio/transfer-ended?" in action
    (seat,) = rig.api.updates_of(SEAT_CALL)
    assert seat.find("Dial/Conference").get("endConferenceOnExit") == "false"
    participant = rig.participant()
    assert (participant["To"], participant["From"], participant["Timeout"]) == (
        "059112366", "+8659112345", 25,
    )  # fmt: skip
    assert participant["EndConferenceOnExit"] == "true"
    assert rig.types()[-1] == "answered"  # the seat had answered: recorded at once
    # Twilio then reports the queue's end (the caller was moved): nothing to do
    late = rig.peer.post(enqueue.get("action", ""), QueueResult="redirected", QueueTime="9")
    assert late.status_code == 200 and len(parse(late.data)) == 0
    # the target answers
    status_url = participant["StatusCallback"]
    assert (
        rig.peer.post(status_url, CallSid=TARGET_LEG, CallStatus="in-progress").status_code == 204
    )
    transferred = rig.events.of_type("transferred")
    assert transferred == [{"type": "transferred", "kind": "sub_centre",
                            "target": "fuzhou-12366", "method": "three_way"}]  # fmt: skip
    # ...and later leaves: the room ends, the caller's Dial action goes on to the survey
    survey = parse(rig.peer.post(action, DialCallStatus="completed", DialCallDuration="90").data)
    assert survey.find("Gather") is not None
    # a replay of that action changes nothing
    again = rig.peer.post(action, DialCallStatus="completed", DialCallDuration="90")
    assert again.status_code == 200 and len(parse(again.data)) == 0
    types = rig.types()
    assert types.count("answered") == 1 and types.index("answered") < types.index("transferred")


def test_unanswered_three_way_raises_a_work_order_and_ends_the_room_with_the_seat(
    rig: Rig,
) -> None:
    rig.queued()
    rig.seat_transfers("sub_centre:12366")
    status_url = rig.participant()["StatusCallback"]
    rig.peer.post(status_url, CallSid=TARGET_LEG, CallStatus="no-answer")
    (failed,) = rig.events.of_type("transfer_failed")
    assert (failed["outcome"], failed["work_order"]) == ("noanswer", True)
    _, uri, data = rig.api.requests[-1]
    assert uri.endswith(f"/Conferences/{CONFERENCE}/Participants/{SEAT_CALL}.json")
    assert data == {"EndConferenceOnExit": "true"}
    assert "transferred" not in rig.types()


def test_one_key_moves_the_caller_alone_and_unanswered_goes_back_to_the_seats(rig: Rig) -> None:
    rig.queued()
    answer = rig.seat_transfers("emergency:110", seat_call="")
    assert answer.status_code == 202 and answer.json["method"] == "one_key"
    (caller,) = rig.api.updates_of(rig.peer.sid)
    dial = caller.find("Dial")
    assert dial.get("timeout") == "30" and dial.find("Number").text == "110"
    assert rig.api.updates_of(SEAT_CALL) == []  # the seat's leg ends with the bridge
    back = parse(rig.peer.post(dial.get("action", ""), DialCallStatus="no-answer").data)
    assert back.find("Enqueue").text == "fuzhou-12345"
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["method"] == "one_key" and failed["work_order"] is False
    (ended,) = rig.events.of_type("call_ended")
    assert ended["target_kind"] == "seats"


def test_one_key_answered_counts_when_the_status_callback_comes_before_the_dial_report(
    hotline: Hotline,
) -> None:
    # Twilio sends the caller's status callback and the Dial's action in no set order:
    # a caller who talked to 110 and hung up is transferred, whichever comes first.
    rig = Rig(hotline, TwilioApi(), action_wait_s=5.0)
    rig.queued()
    assert rig.seat_transfers("emergency:110", seat_call="").status_code == 202
    (caller,) = rig.api.updates_of(rig.peer.sid)
    action = caller.find("Dial").get("action", "")
    rig.peer.status = "completed"
    statuses: list[int] = []

    def status_callback() -> None:
        answer = rig.peer.post("/twilio/status", CallStatus="completed", CallDuration="400")
        statuses.append(answer.status_code)

    first = threading.Thread(target=status_callback)
    first.start()
    time.sleep(0.3)  # the status callback is in, waiting for the Dial's report
    report = rig.peer.post(action, DialCallStatus="completed", DialCallDuration="300")
    assert report.status_code == 200
    first.join(10)
    assert statuses == [204]
    types = rig.types()
    assert "transferred" in types and "transfer_failed" not in types
    assert types[-1] == "call_ended" and types.count("call_ended") == 1


class OneTimeout:
    """The rig's state store, with one Redis timeout on the next read."""

    def __init__(self, inner: MemoryStateStore) -> None:
        self.inner, self.fail_next = inner, False

    def get(self, sid: str) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise redis.TimeoutError("Timeout reading from socket")
        return self.inner.get(sid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_target_status_callback_makes_up_no_call(rig: Rig) -> None:
    # The target leg's CallSid is not a caller's: a failure while reading its status
    # must not start a made-up call at the 12345 seats.
    store = OneTimeout(rig.store)
    rig.hooks.store = store  # type: ignore[assignment]
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    leg = rig.participant()
    store.fail_next = True
    answer = rig.peer.post(leg["StatusCallback"], CallSid=TARGET_LEG, CallStatus="in-progress",
                           To=leg["To"], From=leg["From"], Direction="outbound-api")  # fmt: skip
    assert answer.status_code == 503
    assert rig.events.types(TARGET_LEG) == [] and rig.store.get(TARGET_LEG) is None


def test_a_failed_status_callback_does_not_hand_the_call_to_the_seats(hotline: Hotline) -> None:
    rig = Rig(hotline, TwilioApi(), action_wait_s=0.0)
    store = OneTimeout(rig.store)
    rig.hooks.store = store  # type: ignore[assignment]
    rig.queued()
    store.fail_next = True
    assert rig.peer.hang_up() == 503
    record = rig.store.get(rig.peer.sid)
    assert record is not None and record.state.get("end") != "controller_error"
    # Nothing made up either: the failure is logged and Twilio's debugger shows the 503.
    assert "call_ended" not in rig.types()


def test_two_transfers_that_could_not_start_still_lead_to_the_survey(hotline: Hotline) -> None:
    # Twilio's REST API is down for both attempts: the caller stays with the seat, and
    # when the seat hangs up, the queue's own report must still bring the survey.
    rig = Rig(hotline, TwilioApi(fail=True))
    enqueue = rig.queued()
    for _ in range(2):
        assert rig.seat_transfers("emergency:110", seat_call="").status_code == 503
    after = parse(rig.peer.post(enqueue.get("action", ""), QueueResult="bridged",
                                QueueTime="9").data)  # fmt: skip
    assert after.find("Gather") is not None  # the survey's question
    assert rig.types().count("answered") == 1


def test_a_second_transfer_after_no_answer_reports_no_second_answer(rig: Rig) -> None:
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    status_url = rig.participant()["StatusCallback"]
    assert rig.peer.post(status_url, CallSid=TARGET_LEG, CallStatus="no-answer").status_code == 204
    assert rig.types().count("transfer_failed") == 1
    # the seat, still in the room with the caller, tries another target
    assert rig.seat_transfers("emergency:110", method="three_way").status_code == 202
    assert rig.types().count("answered") == 1


def busy_at_once(rig: list[Rig]) -> Fault:
    """The target is busy: its status callback reaches us before the answer to the
    request that rang it does."""

    def fault(uri: str, form: dict[str, Any]) -> None:
        if uri.endswith("Participants.json"):
            answer = rig[0].peer.post(form["StatusCallback"], CallSid=TARGET_LEG, CallStatus="busy")
            assert answer.status_code == 204

    return fault


def seat_update_fails(uri: str, form: dict[str, Any]) -> TwilioResponse | None:
    """The seat's participant cannot be updated (it has left, or the API fails)."""
    if uri.endswith(f"/Participants/{SEAT_CALL}.json"):
        return TwilioResponse(404, json.dumps({"code": 20404, "message": "not found"}))
    return None


def seat_updates(api: TwilioApi) -> list[dict[str, Any]]:
    return [d for m, u, d in api.requests if u.endswith(f"/Participants/{SEAT_CALL}.json")]


def test_a_no_answer_before_the_room_is_known_still_ends_the_room_with_the_seat(
    hotline: Hotline,
) -> None:
    rigs: list[Rig] = []
    api = TwilioApi(fault=busy_at_once(rigs))
    rig = Rig(hotline, api)
    rigs.append(rig)
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["outcome"] == "busy"
    assert seat_updates(api) == [{"EndConferenceOnExit": "true"}]


def test_a_caller_whose_room_cannot_be_tied_to_the_seat_is_taken_on_to_the_survey(
    hotline: Hotline,
) -> None:
    api = TwilioApi(fault=seat_update_fails)
    rig = Rig(hotline, api)
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    callback = rig.participant()["StatusCallback"]
    assert rig.peer.post(callback, CallSid=TARGET_LEG, CallStatus="no-answer").status_code == 204
    assert len(seat_updates(api)) == 1
    # not left alone in the room: moved on, to where the flow goes after the transfer
    onwards = rig.api.updates_of(rig.peer.sid)[-1]
    url = onwards.find("Redirect").text or ""
    assert "/twilio/transfer-ended" in url
    survey = parse(rig.peer.post(url).data)
    assert survey.find("Gather") is not None
    assert rig.types().count("transfer_failed") == 1


def caller_move_times_out(error: Exception) -> Fault:
    """Moving the caller's call goes unanswered in time once (``error``), though the
    request went out; afterwards Twilio answers."""
    errors = [error]

    def fault(uri: str, form: dict[str, Any]) -> None:
        if errors and uri.endswith(f"/Calls/{CALLER_CALL}.json"):
            raise errors.pop()

    return fault


def test_a_caller_move_that_timed_out_reading_is_sent_again(hotline: Hotline) -> None:
    # Twilio may have moved the caller though its answer never came: sent again, the
    # move is sure, and the seat and the target follow.
    api = TwilioApi(fault=caller_move_times_out(requests.exceptions.ReadTimeout("read timed out")))
    rig = Rig(hotline, api)
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    assert len(rig.api.updates_of(CALLER_CALL)) == 2
    assert len(rig.api.updates_of(SEAT_CALL)) == 1 and rig.participant()
    assert "transfer_failed" not in rig.types()


def test_a_caller_move_that_never_connected_is_not_sent_again(hotline: Hotline) -> None:
    api = TwilioApi(
        fault=caller_move_times_out(requests.exceptions.ConnectTimeout("connect timed out"))
    )
    rig = Rig(hotline, api)
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 503
    assert len(rig.api.updates_of(CALLER_CALL)) == 1 and rig.api.updates_of(SEAT_CALL) == []
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["outcome"] == "failed"


def test_caller_leaving_mid_transfer_is_answered_not_abandoned(rig: Rig) -> None:
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    assert rig.peer.hang_up() == 204
    types = rig.types()
    assert "abandoned" not in types and types.count("answered") == 1
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["outcome"] == "caller_left"
    (ended,) = rig.events.of_type("call_ended")
    assert ended["answered"] is True


@pytest.mark.parametrize(
    ("target", "seat_call", "status", "reason"),
    [
        ("sub_centre:12366", "", 409, "seat_call"),
        ("sub_centre:99999", SEAT_CALL, 422, "names nobody"),
        ("utility:phone", SEAT_CALL, 422, "names nobody"),  # a typo, not a lost call
    ],
)
def test_requests_that_cannot_start(
    rig: Rig, target: str, seat_call: str, status: int, reason: str
) -> None:
    rig.queued()
    answer = rig.seat_transfers(target, seat_call)
    assert answer.status_code == status and reason in answer.json["error"]
    assert rig.api.requests == []


def test_a_caller_still_in_the_greeting_is_not_talking_to_a_seat(rig: Rig) -> None:
    rig.peer.call()
    answer = rig.seat_transfers("emergency:110")
    assert answer.status_code == 409 and "not talking to a seat" in answer.json["error"]


def test_a_three_party_call_with_110_puts_it_in_the_conference(rig: Rig) -> None:
    rig.queued()
    answer = rig.seat_transfers("emergency:110", method="three_way")
    assert answer.status_code == 202 and answer.json["method"] == "three_way"
    (caller,) = rig.api.updates_of(rig.peer.sid)
    assert caller.find("Dial/Conference") is not None  # not a one-key <Dial> to 110
    participant = rig.participant()
    assert (participant["To"], participant["Timeout"]) == ("110", 30)
    # without the seat's own call there is no three-party call on Twilio
    other = Rig(rig.hooks.hotline_source(), TwilioApi())
    other.queued()
    refused = other.seat_transfers("emergency:110", seat_call="", method="three_way")
    assert refused.status_code == 409 and "seat_call" in refused.json["error"]


def test_twilio_refusing_the_move_is_503_and_recorded(hotline: Hotline) -> None:
    rig = Rig(hotline, TwilioApi(fail=True))
    enqueue = rig.queued()
    answer = rig.seat_transfers("emergency:110", seat_call="")
    assert answer.status_code == 503
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["outcome"] == "failed"
    # The caller never left the seat. When the seat hangs up, the queue's own report
    # goes on to the survey, as if no transfer had been tried.
    after = rig.peer.post(enqueue.get("action", ""), QueueResult="bridged", QueueTime="9")
    assert after.status_code == 200
    assert parse(after.data)[0].tag == "Gather"  # the survey question
    assert rig.types().count("answered") == 1
    assert rig.peer.post(parse(after.data)[0].get("action", ""), Digits="1").status_code == 200
    assert rig.types()[-1] == "call_ended"


def test_after_a_move_twilio_refused_the_seat_may_try_again(hotline: Hotline) -> None:
    api = TwilioApi(fail=True)
    rig = Rig(hotline, api)
    rig.queued()
    assert rig.seat_transfers("emergency:110", seat_call="").status_code == 503
    api.fail = False
    answer = rig.seat_transfers("emergency:110", seat_call="")
    assert answer.status_code == 202 and answer.json["method"] == "one_key"
    assert rig.types().count("answered") == 1


def test_without_an_account_sid_no_transfer(hotline: Hotline) -> None:
    rig = Rig(hotline, TwilioApi(), rest=False)
    rig.queued()
    answer = rig.seat_transfers("emergency:110", seat_call="")
    assert answer.status_code == 503 and "TWILIO_ACCOUNT_SID" in answer.json["error"]


def test_forged_transfer_webhooks_are_refused(rig: Rig) -> None:
    rig.queued()
    rig.seat_transfers("sub_centre:12366")
    status_url = rig.participant()["StatusCallback"]
    query = parse_qs(urlsplit(status_url).query)
    forged = status_url.replace(query["t"][0], "AAAA" + query["t"][0][4:])
    assert rig.peer.post(forged, CallSid=TARGET_LEG, CallStatus="in-progress").status_code == 403
    unsigned = rig.peer.post(status_url, sign=False, CallSid=TARGET_LEG, CallStatus="in-progress")
    assert unsigned.status_code == 403
    assert rig.events.of_type("transferred") == []


def test_kept_seats_in_a_twilio_queue_cannot_be_rung_into_the_room(rig: Rig) -> None:
    rig.queued()
    answer = rig.seat_transfers("kept_seats:12315")
    assert answer.status_code == 409 and "twilio.queues" in answer.json["error"]
    assert rig.api.requests == []


def test_kept_seats_reachable_by_sip_join_the_room(hotline: Hotline) -> None:
    # the transfer link from 12345 to a dual line's kept seats
    rig = Rig(hotline, TwilioApi(), queues={"fuzhou-12315": "sip:kept-12315@pbx.example.test"})
    rig.queued()
    assert rig.seat_transfers("kept_seats:12315").status_code == 202
    participant = rig.participant()
    assert participant["To"] == "sip:kept-12315@pbx.example.test"
    assert participant["Timeout"] == 20


class Unreachable(TwilioApi):
    """The HTTP client's own failure (a timeout), not an answer from Twilio."""

    def request(self, *args: Any, **kwargs: Any) -> TwilioResponse:
        if self.fail:
            raise requests.exceptions.ConnectTimeout("api.twilio.com timed out")
        return super().request(*args, **kwargs)


def test_twilio_not_answering_is_503_and_the_seat_may_try_again(hotline: Hotline) -> None:
    api = Unreachable(fail=True)
    rig = Rig(hotline, api)
    rig.queued()
    assert rig.seat_transfers("emergency:110", seat_call="").status_code == 503
    (failed,) = rig.events.of_type("transfer_failed")
    assert failed["outcome"] == "failed"
    api.fail = False  # Twilio reachable again: the transfer is not left "under way"
    assert rig.seat_transfers("emergency:110", seat_call="").status_code == 202


def test_a_replayed_connect_report_after_a_failed_transfer_moves_nothing(
    hotline: Hotline,
) -> None:
    rig = Rig(hotline, TwilioApi(fail=True))
    enqueue = rig.queued()
    assert rig.seat_transfers("emergency:110", seat_call="").status_code == 503
    action = enqueue.get("action", "")
    first = rig.peer.post(action, QueueResult="bridged", QueueTime="9")
    assert parse(first.data)[0].tag == "Gather"  # the survey question
    step = rig.store.get(rig.peer.sid).step  # type: ignore[union-attr]
    again = rig.peer.post(action, QueueResult="bridged", QueueTime="9")  # the same request
    assert again.status_code == 200 and len(parse(again.data)) == 0  # an empty <Response/>
    assert rig.store.get(rig.peer.sid).step == step  # type: ignore[union-attr]
    assert "call_ended" not in rig.types()


@pytest.mark.parametrize("seat_call", ["not-a-call-sid", "CA" + "2" * 31, "CA" + "G" * 32])
def test_a_seat_call_that_is_no_call_sid_is_refused_before_anything_moves(
    rig: Rig, seat_call: str
) -> None:
    rig.queued()
    answer = rig.seat_transfers("sub_centre:12366", seat_call=seat_call)
    assert answer.status_code == 400 and "seat_call" in answer.json["error"]
    assert rig.api.requests == []
    assert rig.seat_transfers("sub_centre:12366", seat_call=rig.peer.sid).status_code == 400


class SeatCallEnded(TwilioApi):
    """Twilio answers 404 for the seat's call: it ended before the transfer."""

    def request(self, method: str, uri: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        if uri.endswith(f"/Calls/{SEAT_CALL}.json"):
            self.requests.append((method, uri, {}))
            return TwilioResponse(404, json.dumps({"code": 20404, "message": "not found"}))
        return super().request(method, uri, *args, **kwargs)


def test_a_seat_that_cannot_join_the_room_leaves_the_caller_to_the_seats(hotline: Hotline) -> None:
    rig = Rig(hotline, SeatCallEnded())
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 503
    room, back = rig.api.updates_of(rig.peer.sid)  # into the room, then out of it
    assert room.find("Dial/Conference") is not None
    assert [c.tag for c in back] == ["Enqueue", "Hangup"]
    assert back.find("Enqueue").text == "fuzhou-12345"  # type: ignore[union-attr]


def test_transfer_webhooks_missing_a_field_get_400_naming_it(rig: Rig) -> None:
    rig.queued()
    assert rig.seat_transfers("sub_centre:12366").status_code == 202
    (caller,) = rig.api.updates_of(rig.peer.sid)
    form = rig.peer.fields()
    del form["CallSid"]
    answer = rig.peer.post(caller.find("Dial").get("action"), form)  # type: ignore[union-attr]
    assert answer.status_code == 400 and b"CallSid" in answer.data
    form = rig.peer.fields(CallSid=TARGET_LEG)
    del form["CallStatus"]
    answer = rig.peer.post(rig.participant()["StatusCallback"], form)
    assert answer.status_code == 400 and b"CallStatus" in answer.data


def test_the_seat_api_says_503_when_the_call_state_cannot_be_read(hotline: Hotline) -> None:
    rig = Rig(hotline, TwilioApi())
    rig.hooks.store = RedisStateStore.from_url("redis://127.0.0.1:1/0")  # nothing listens
    answer = rig.seat_transfers("emergency:110", seat_call="")
    assert answer.status_code == 503 and "cannot be looked up" in answer.json["error"]


class RingRefused(TwilioApi):
    def request(self, method: str, uri: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        if uri.endswith("Participants.json"):
            message = "Phone number 059112366 is not a valid phone number"
            return TwilioResponse(400, json.dumps({"code": 21211, "message": message}))
        return super().request(method, uri, *args, **kwargs)


def test_a_refused_ring_is_logged_with_the_number_masked(
    hotline: Hotline, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(hotline, RingRefused())
    rig.queued()
    with caplog.at_level(logging.ERROR, logger="ivr"):
        assert rig.seat_transfers("sub_centre:12366").status_code == 503
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "not started" in logged and "059112366" not in logged
