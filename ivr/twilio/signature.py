"""X-Twilio-Signature, checked with the twilio library's validator on every webhook.

Twilio signs the URL it requested. Behind a reverse proxy the app sees another scheme,
host or port, so the URL is rebuilt from the configured public base URL plus the path
and the raw query string the app received; the validator itself tries the URL with and
without the default port.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from flask import Request
from twilio.request_validator import RequestValidator

from ivr.twilio.fields import form_fields

try:  # Webhook shared keys (HMAC-SHA256) arrived in later releases of the library.
    from twilio.request_validator import (
        SIGNATURE_SETTINGS_HEADER,
        get_signature_algorithm,
    )
except ImportError:  # pragma: no cover - depends on the installed twilio
    SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
    get_signature_algorithm = None

SIGNATURE_HEADER = "X-Twilio-Signature"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    url: str = ""


class SignatureChecker:
    def __init__(
        self, auth_token: str, public_base_url: str | None, shared_key_secret: str | None = None
    ) -> None:
        self._token = RequestValidator(auth_token)
        self._shared = RequestValidator(shared_key_secret) if shared_key_secret else None
        self._base = public_base_url.rstrip("/") if public_base_url else None

    def signed_url(self, request: Request) -> str:
        """The URL Twilio requested, as Twilio saw it."""
        root = self._base or (request.host_url.rstrip("/") + request.script_root)
        query = request.query_string.decode("latin-1")
        return f"{root}{request.path}" + (f"?{query}" if query else "")

    def check(self, request: Request) -> Verdict:
        url = self.signed_url(request)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return Verdict(False, f"no {SIGNATURE_HEADER} header", url)
        settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
        validator, algorithm = self._token, None
        if settings:
            if self._shared is None or get_signature_algorithm is None:
                return Verdict(False, "signed with a webhook shared key; none configured", url)
            validator, algorithm = self._shared, get_signature_algorithm(settings)
        # GET webhooks carry their fields in the query, which is part of the URL.
        params = form_fields(request) if request.method == "POST" else {}
        try:
            valid = self._fast(validator, url, params, signature, algorithm) or (
                validator.validate(url, params, signature, algorithm)
                if algorithm
                else validator.validate(url, params, signature)
            )
        except ValueError as exc:
            return Verdict(False, f"signature not checkable: {exc}", url)
        if not valid:
            return Verdict(False, "signature does not match (auth token, or public_base_url?)", url)
        return Verdict(True, "", url)

    @staticmethod
    def _fast(
        validator: RequestValidator,
        url: str,
        params: Any,
        signature: str,
        algorithm: str | None,
    ) -> bool:
        """The URL exactly as configured first: one HMAC instead of the validator's two
        (with and without the port), which it still tries when this one misses."""
        if "bodySHA256" in url:
            return False  # JSON webhooks: the validator checks the body's hash too
        args = (url, params, algorithm) if algorithm else (url, params)
        expected = validator.compute_signature(*args)
        return hmac.compare_digest(expected.encode(), signature.encode())
