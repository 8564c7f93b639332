"""A webhook's fields as Twilio sends them, parsed once, and what is left to werkzeug."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Flask
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from ivr.twilio.fields import MAX_FAST_FORM, form_fields, query_fields, webhook_fields

app = Flask("fields")
FORM = {"CallSid": "CA1", "From": "+8613912340000", "To": "+8659112345", "Digits": "",
        "CallerName": "张三 & 李四"}  # fmt: skip


def test_a_twilio_form_reads_as_werkzeug_reads_it() -> None:
    with app.test_request_context("/twilio/voice?s=2&t=tok", method="POST", data=FORM):
        from flask import request

        fields = form_fields(request)
        assert dict(fields) == dict(request.form) == FORM
        assert form_fields(request) is fields  # parsed once per request
        assert query_fields(request) == {"s": "2", "t": "tok"}
        assert webhook_fields(request) is fields


def test_a_get_webhook_reads_its_query() -> None:
    with app.test_request_context("/twilio/voice?" + urlencode(FORM), method="GET"):
        from flask import request

        assert webhook_fields(request) == FORM


def test_a_repeated_field_keeps_every_value_for_the_signature() -> None:
    body = "CallSid=CA1&Tag=a&Tag=b"
    with app.test_request_context(
        "/x", method="POST", data=body, content_type="application/x-www-form-urlencoded"
    ):
        from flask import request

        fields = form_fields(request)
        assert isinstance(fields, MultiDict) and fields["Tag"] == "a"
        validator = RequestValidator("token")
        url = "https://example.org/x"
        expected = validator.compute_signature(url, request.form)
        assert validator.compute_signature(url, fields) == expected


def test_other_bodies_are_left_to_werkzeug() -> None:
    big = {"CallSid": "CA1", "Pad": "x" * (MAX_FAST_FORM + 1)}
    with app.test_request_context("/x", method="POST", data=big):
        from flask import request

        assert form_fields(request) is request.form and request.form["CallSid"] == "CA1"
    with app.test_request_context("/x", method="POST", json={"CallSid": "CA1"}):
        from flask import request

        assert form_fields(request) is request.form and dict(form_fields(request)) == {}
