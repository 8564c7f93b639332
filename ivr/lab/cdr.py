"""Asterisk's CSV call detail records (cdr_csv's Master.csv) as dicts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

__all__ = ["CDR_FIELDS", "parse_cdrs", "read_cdrs"]

# cdr_csv's column order with loguniqueid=yes and loguserfield=yes (see cdr.conf); the
# file has no header line.
CDR_FIELDS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)


def parse_cdrs(text: str) -> list[dict[str, str]]:
    """One dict per CSV line; columns past the known ones are kept as ``extra<N>``."""
    records = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        record = dict(zip(CDR_FIELDS, row, strict=False))
        for index, value in enumerate(row[len(CDR_FIELDS) :]):
            record[f"extra{index}"] = value
        records.append(record)
    return records


def read_cdrs(path: Path, offset: int = 0) -> list[dict[str, str]]:
    """The records of ``path`` from byte ``offset`` on; none if the file is not there yet."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return []
    # Only whole lines: Asterisk may be writing the last one right now.
    data = data[: data.rfind(b"\n") + 1]
    return parse_cdrs(data.decode("utf-8", errors="replace"))
