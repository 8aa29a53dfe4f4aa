"""The one timestamp format of the store and its one converter.

Records carry ISO 8601 times in UTC with microseconds (store-format.md, 2);
the mount and the drafts need them as integer nanoseconds since the epoch.
The conversion is exact integer arithmetic: a detour through a float
`timestamp()` is off by up to a few hundred nanoseconds for most times, so two
code paths would give one file two different mtimes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def now_iso() -> str:
    """The current time as stored: '2026-01-02T03:04:05.123456+00:00'."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def iso_ns(text: str) -> int:
    """An ISO 8601 time as integer nanoseconds since the epoch, exactly (no float).
    A time without a zone is UTC.  ValueError for text that is not ISO 8601."""
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - EPOCH) // _MICROSECOND * 1000
