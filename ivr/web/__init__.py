"""The controller's HTTP side: an app factory with one blueprint per concern.

`create_app()` builds the Flask app that `ivr serve --http` runs (and gunicorn can run
in production): /metrics for Prometheus, /healthz for load balancers, and /calls for the seats'
desktops (transfers).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from ivr.web.metrics import metrics
from ivr.web.seats import seats

# Twilio's webhooks are a few KiB and a seat's request far less: no body is read past
# this. One that says it is longer is refused (413) unread; a chunked one is cut here.
MAX_BODY_BYTES = 64 * 1024


def create_app(**extensions: Any) -> Flask:
    """``extensions`` are what the blueprints need, kept in ``app.extensions['ivr']``:
    ``registry`` (a prometheus_client CollectorRegistry) and ``health`` (a callable
    returning a dict; a false ``ok`` in it gives 503); ``seat_token`` and ``desks``
    (the front-ends that can transfer a call) for the seats' desktop API."""
    app = Flask("ivr")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["ivr"] = extensions
    app.register_blueprint(metrics)
    if extensions.get("seat_token"):  # never served without a token to check
        app.register_blueprint(seats)
    return app
