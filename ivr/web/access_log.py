"""The request log of `ivr serve`'s HTTP listener, with no phone number in it.

werkzeug logs each request line whole. A Twilio number set to GET sends From and To
in the query string, so the log shows the path alone, and anything else it says
(a malformed request line quoted in an error) is masked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from ivr.core.clock import SHANGHAI
from ivr.core.privacy import mask_text


class MaskedRequestLog(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", None)
        if path is None:  # the request line did not parse: mask it as it is
            line = self.requestline
        else:
            line = f"{self.command} {path.split('?', 1)[0]} {self.request_version}"
        self.log("info", '"%s" %s %s', line, code, size)

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, "%s", mask_text(message % args if args else message))

    def log_date_time_string(self) -> str:
        # werkzeug's own stamp inside the line, in the host's zone with none said;
        # the log line is stamped already (Shanghai, with its offset).
        return datetime.now(SHANGHAI).isoformat(timespec="seconds")
