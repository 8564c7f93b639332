"""A webhook's fields, read once per request.

Twilio posts a few hundred bytes of application/x-www-form-urlencoded fields. werkzeug's
form parser (streams, limits, a MultiDict) cost a webhook about a tenth of its time, so
such a body is parsed here with `parse_qsl`; anything else (another content type, no
length, a body larger than Twilio sends) still goes through `request.form`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import MultiDict

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FAST_FORM = 64 * 1024  # bytes; Twilio's voice webhooks are far smaller
_FORM_KEY, _QUERY_KEY = "ivr.twilio.form", "ivr.twilio.query"


def form_fields(req: Request) -> Mapping[str, str]:
    """The POSTed fields (what Twilio signs with the URL), parsed once per request."""
    environ = req.environ
    fields = environ.get(_FORM_KEY)
    if fields is None:
        length = req.content_length
        if req.mimetype == FORM_TYPE and length is not None and length <= MAX_FAST_FORM:
            fields = _mapping(req.get_data(cache=True).decode("utf-8", "replace"))
        else:
            fields = req.form
        environ[_FORM_KEY] = fields
    return fields  # type: ignore[no-any-return]


def query_fields(req: Request) -> Mapping[str, str]:
    """The query string's fields, parsed once per request."""
    environ = req.environ
    fields = environ.get(_QUERY_KEY)
    if fields is None:
        fields = environ[_QUERY_KEY] = _mapping(req.query_string.decode("utf-8", "replace"))
    return fields  # type: ignore[no-any-return]


def webhook_fields(req: Request) -> Mapping[str, str]:
    """A webhook's fields: the form of a POST, the query of a GET (a number may be set
    to either method)."""
    return form_fields(req) if req.method == "POST" else query_fields(req)


def _mapping(text: str) -> Mapping[str, str]:
    """A dict, or a MultiDict where a name repeats (its first value reads as the
    value, as with werkzeug; the signature covers them all)."""
    pairs = parse_qsl(text, keep_blank_values=True)
    fields = dict(pairs)
    return fields if len(fields) == len(pairs) else MultiDict(pairs)
