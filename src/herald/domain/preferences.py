"""A user's notification preferences and the decision to send, skip or defer a delivery.

Opt-out model: with no preferences everything is sent. Rules, strongest first:

1. a critical category is always sent;
2. an unsubscribed user gets nothing;
3. a disabled category is skipped;
4. a category's own channel choice beats the channel-wide one (so a user can turn SMS off
   everywhere but keep it for "orders");
5. quiet hours defer the channels that interrupt people, unless the priority is "high".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, model_validator

# inapp is a passive inbox and webhook a machine: neither wakes anyone up.
QUIET_CHANNELS: Final = frozenset({"email", "sms", "push", "webpush", "apprise"})


class QuietHours(BaseModel):
    """A daily window ``[start, end)`` in the user's local time; it may wrap midnight."""

    model_config = ConfigDict(extra="forbid")

    start: time
    end: time

    @model_validator(mode="after")
    def _check(self) -> QuietHours:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are local wall-clock times, without a UTC offset")
        if self.start == self.end:
            raise ValueError("quiet hours need start != end")
        return self

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class CategoryPreference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    channels: dict[str, bool] = {}


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unsubscribed: bool = False
    channels: dict[str, bool] = {}
    categories: dict[str, CategoryPreference] = {}
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "skip", "defer"]
    reason: str | None = None  # unsubscribed | category_opted_out | channel_opted_out | quiet_hours
    until: datetime | None = None  # UTC, only for "defer"


SEND: Final = Decision("send")
# Files some systems keep beside the zones; they name this machine's zone, not a user's.
_NOT_ZONES: Final = frozenset({"localtime", "posixrules"})


def valid_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone such as "America/New_York"."""
    if name in _NOT_ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return False
    return True


def _zone(name: str | None) -> tzinfo:
    # An invalid stored zone must not wedge deliveries: the API validates, this falls back.
    if name is None or not valid_timezone(name):
        return UTC
    return ZoneInfo(name)


def decide(
    prefs: Preferences | None,
    *,
    channel: str,
    category: str | None,
    priority: str,
    critical: bool,
    timezone: str | None,
    now: datetime,
) -> Decision:
    """Send, skip or defer one delivery; ``now`` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if critical or prefs is None:
        return SEND
    if prefs.unsubscribed:
        return Decision("skip", "unsubscribed")
    by_category = prefs.categories.get(category) if category is not None else None
    if by_category is not None and not by_category.enabled:
        return Decision("skip", "category_opted_out")
    if by_category is not None and channel in by_category.channels:
        wanted = by_category.channels[channel]
    else:
        wanted = prefs.channels.get(channel, True)
    if not wanted:
        return Decision("skip", "channel_opted_out")
    quiet = prefs.quiet_hours
    if quiet is None or channel not in QUIET_CHANNELS or priority == "high":
        return SEND
    until = quiet_until(quiet, _zone(timezone), now)
    return SEND if until is None else Decision("defer", "quiet_hours", until)


def _wall(moment: datetime, zone: tzinfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def quiet_until(quiet: QuietHours, zone: tzinfo, now: datetime) -> datetime | None:
    """The first UTC instant after ``now`` outside the window, or None if ``now`` is outside."""
    now = now.astimezone(UTC)
    if not quiet.contains(_wall(now, zone).time()):
        return None
    today = _wall(now, zone).date()
    # The window normally ends at `end` today or tomorrow; the extra day covers a DST jump
    # that skips the whole gap between end and start.
    for offset in range(3):
        for candidate in _instants_at(today + timedelta(days=offset), quiet.end, zone):
            if candidate > now and not quiet.contains(_wall(candidate, zone).time()):
                return candidate
    # Unreachable for real zones; deferring a day is a safe answer anyway.
    return now + timedelta(days=1)


def _instants_at(day: date, wall_time: time, zone: tzinfo) -> list[datetime]:
    """The UTC instants at which the local clock first reads ``wall_time`` on ``day``.

    Two when the clock is set back (the time happens twice), and when it jumps forward over
    ``wall_time`` the instant of the jump: the first moment the clock reads later than it.
    """
    wall = datetime.combine(day, wall_time)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if _wall(first, zone) == wall:
        return sorted({first, second})
    # In a gap fold=0 maps past the jump and fold=1 before it: search the jump between them.
    low, high = second.replace(microsecond=0), first
    steps = int((high - low).total_seconds()) + 1
    lo, hi = 0, steps  # invariant: the clock reads < wall at lo, >= wall at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(low + timedelta(seconds=mid), zone) >= wall:
            hi = mid
        else:
            lo = mid
    return [low + timedelta(seconds=hi)]
