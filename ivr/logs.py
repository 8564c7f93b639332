"""Log lines stamped in the hotline's time: Asia/Shanghai, with its offset.

The controller may run on a host kept in UTC; a line that says 01:48 when the caller
called at 09:48 sends an operator to the wrong hour. The offset makes the stamp exact
wherever it is read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ivr.core.clock import SHANGHAI
from ivr.core.privacy import mask_text

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LocalTimeFormatter(logging.Formatter):
    """`%(asctime)s` as Shanghai time to the millisecond, e.g. 2026-11-27T09:48:19.123+08:00.

    Tracebacks are masked: an exception's message or a quoted value may hold a
    caller's number, where the log line's own message is masked by whoever writes it.
    """

    def formatException(self, ei: Any) -> str:
        return mask_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return mask_text(super().formatStack(stack_info))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, SHANGHAI)
        if datefmt:
            return moment.strftime(datefmt)
        return moment.isoformat(timespec="milliseconds")


class MaskedTracebacks(logging.Filter):
    """For handlers the host process set up: their formatters would print a traceback
    as it is. The traceback is formatted and masked here, and a formatter prints the
    text it finds (`exc_text`) instead of formatting the exception again."""

    _plain = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(self._plain.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def configure(level: int | str = logging.INFO) -> None:
    """Log to stderr in Shanghai time, unless the host process set up logging already
    (gunicorn's `--log-config`, a test runner): then its handlers are kept, and only
    taught to mask tracebacks."""
    root = logging.getLogger()
    if root.handlers:
        for handler in root.handlers:
            if not any(isinstance(f, MaskedTracebacks) for f in handler.filters):
                handler.addFilter(MaskedTracebacks())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(LocalTimeFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
