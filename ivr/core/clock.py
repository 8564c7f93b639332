"""Local time for the hotline: every date in the directory is a date in Asia/Shanghai."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def now_local() -> datetime:
    """The real clock, in Shanghai time (front-ends compare against this one)."""
    return datetime.now(SHANGHAI)


def local(now: datetime) -> datetime:
    """`now` as Shanghai wall-clock time; a naive datetime is refused, never guessed."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()} has no time zone")
    return now.astimezone(SHANGHAI)


def local_date(now: datetime) -> date:
    return local(now).date()


def start_of_day(day: date) -> datetime:
    """Local midnight opening `day`: where a date window begins."""
    return datetime.combine(day, time.min, tzinfo=SHANGHAI)


def parse_when(text: str) -> datetime:
    """An ISO date-time; without an offset it is read as Shanghai local time."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=SHANGHAI)
    return parsed
