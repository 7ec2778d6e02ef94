from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from herald.domain.preferences import (
    QUIET_CHANNELS,
    CategoryPreference,
    Decision,
    Preferences,
    QuietHours,
    decide,
    valid_timezone,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NIGHT = QuietHours(start=time(22), end=time(7))


def _decide(prefs: Preferences | None, **overrides: Any) -> Decision:
    args: dict[str, Any] = {
        "channel": "email",
        "category": None,
        "priority": "normal",
        "critical": False,
        "timezone": None,
        "now": NOW,
    }
    args.update(overrides)
    return decide(prefs, **args)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


# -- models ----------------------------------------------------------------------------------


def test_models_parse_json_and_forbid_unknown_fields() -> None:
    prefs = Preferences.model_validate(
        {
            "channels": {"sms": False},
            "categories": {"orders": {"channels": {"sms": True}}, "marketing": {"enabled": False}},
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        }
    )
    assert prefs.quiet_hours == NIGHT
    assert prefs.categories["orders"] == CategoryPreference(channels={"sms": True})
    for bad in (
        {"unsubscribe": True},
        {"categories": {"x": {"enable": False}}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "UTC"}},
    ):
        with pytest.raises(ValidationError):
            Preferences.model_validate(bad)


def test_quiet_hours_need_distinct_naive_times() -> None:
    with pytest.raises(ValidationError, match="start != end"):
        QuietHours(start=time(7), end=time(7))
    with pytest.raises(ValidationError, match="wall-clock"):
        QuietHours(start=time(22, tzinfo=UTC), end=time(7))


def test_defaults_are_independent() -> None:
    a, b = Preferences(), Preferences()
    a.channels["sms"] = False
    assert b.channels == {}


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("America/New_York", True),
        ("Asia/Kolkata", True),
        ("UTC", True),
        ("Mars/Olympus_Mons", False),
        ("", False),
        ("../../etc/passwd", False),
        ("/etc/localtime", False),
        ("localtime", False),
        ("x\x00", False),
    ],
)
def test_valid_timezone(name: str, valid: bool) -> None:
    assert valid_timezone(name) is valid


# -- rules -----------------------------------------------------------------------------------


def test_no_preferences_means_send() -> None:
    assert _decide(None) == Decision("send")
    assert _decide(Preferences(), channel="sms", category="marketing") == Decision("send")


def test_critical_beats_everything() -> None:
    prefs = Preferences(
        unsubscribed=True,
        channels={"sms": False},
        categories={"security": CategoryPreference(enabled=False)},
        quiet_hours=QuietHours(start=time(0), end=time(23, 59)),
    )
    assert _decide(prefs, channel="sms", category="security", critical=True).action == "send"


def test_unsubscribed_skips_before_anything_else() -> None:
    prefs = Preferences(
        unsubscribed=True, categories={"orders": CategoryPreference(channels={"email": True})}
    )
    assert _decide(prefs, category="orders") == Decision("skip", "unsubscribed")


def test_channel_wide_opt_out() -> None:
    prefs = Preferences(channels={"sms": False, "email": True})
    assert _decide(prefs, channel="sms") == Decision("skip", "channel_opted_out")
    assert _decide(prefs, channel="sms", category="orders").reason == "channel_opted_out"
    assert _decide(prefs, channel="email").action == "send"
    assert _decide(prefs, channel="push").action == "send"


def test_category_opt_out_beats_its_own_channel_opt_in() -> None:
    prefs = Preferences(
        categories={"marketing": CategoryPreference(enabled=False, channels={"email": True})}
    )
    assert _decide(prefs, category="marketing") == Decision("skip", "category_opted_out")
    assert _decide(prefs, category="orders").action == "send"
    assert _decide(prefs, category=None).action == "send"


def test_category_channel_choice_wins_over_the_channel_wide_one() -> None:
    prefs = Preferences(
        channels={"sms": False},
        categories={
            "orders": CategoryPreference(channels={"sms": True}),
            "news": CategoryPreference(channels={"email": False}),
        },
    )
    assert _decide(prefs, channel="sms", category="orders").action == "send"
    assert _decide(prefs, channel="sms", category="news").reason == "channel_opted_out"
    assert _decide(prefs, channel="sms", category=None).reason == "channel_opted_out"
    assert _decide(prefs, channel="email", category="news") == Decision("skip", "channel_opted_out")
    assert _decide(prefs, channel="email", category="orders").action == "send"


def test_opt_outs_skip_rather_than_defer_in_quiet_hours() -> None:
    prefs = Preferences(channels={"sms": False}, quiet_hours=NIGHT)
    night = _utc(2024, 6, 1, 23, 30)
    assert _decide(prefs, channel="sms", now=night).action == "skip"
    assert _decide(prefs, channel="email", now=night).action == "defer"


@pytest.mark.parametrize("channel", sorted(QUIET_CHANNELS))
def test_quiet_hours_defer_interrupting_channels(channel: str) -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    decision = _decide(prefs, channel=channel, now=_utc(2024, 6, 1, 23, 30))
    assert decision == Decision("defer", "quiet_hours", _utc(2024, 6, 2, 7))


@pytest.mark.parametrize("channel", ["inapp", "webhook"])
def test_quiet_hours_never_defer_passive_channels(channel: str) -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    assert _decide(prefs, channel=channel, now=_utc(2024, 6, 1, 23, 30)).action == "send"


def test_high_priority_ignores_quiet_hours() -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    night = _utc(2024, 6, 1, 23, 30)
    assert _decide(prefs, priority="high", now=night).action == "send"
    assert _decide(prefs, priority="low", now=night).action == "defer"


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (_utc(2024, 6, 1, 21, 59, 59), None),
        (_utc(2024, 6, 1, 22, 0), _utc(2024, 6, 2, 7)),
        (_utc(2024, 6, 1, 23, 30), _utc(2024, 6, 2, 7)),
        (_utc(2024, 6, 2, 0, 0), _utc(2024, 6, 2, 7)),
        (_utc(2024, 6, 2, 6, 59), _utc(2024, 6, 2, 7)),
        (_utc(2024, 6, 2, 7, 0), None),
        (_utc(2024, 6, 2, 12, 0), None),
    ],
)
def test_window_wrapping_midnight(now: datetime, until: datetime | None) -> None:
    decision = _decide(Preferences(quiet_hours=NIGHT), now=now)
    assert decision.until == until
    assert decision.action == ("send" if until is None else "defer")


def test_window_within_one_day() -> None:
    prefs = Preferences(quiet_hours=QuietHours(start=time(12), end=time(14, 30)))
    assert _decide(prefs, now=_utc(2024, 6, 1, 11, 59)).action == "send"
    assert _decide(prefs, now=_utc(2024, 6, 1, 12)).until == _utc(2024, 6, 1, 14, 30)
    assert _decide(prefs, now=_utc(2024, 6, 1, 14, 30)).action == "send"


def test_quiet_hours_use_the_users_zone() -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    # 18:00 UTC is 23:30 in Kolkata (+05:30); the window ends at 07:00 IST = 01:30 UTC
    decision = _decide(prefs, timezone="Asia/Kolkata", now=_utc(2024, 6, 1, 18))
    assert decision.until == _utc(2024, 6, 2, 1, 30)
    assert _decide(prefs, timezone="Asia/Kolkata", now=_utc(2024, 6, 1, 1, 30)).action == "send"
    # 23:30 UTC is 05:00 the next morning in Kolkata
    decision = _decide(prefs, timezone="Asia/Kolkata", now=_utc(2024, 6, 1, 23, 30))
    assert decision.until == _utc(2024, 6, 2, 1, 30)


def test_an_invalid_zone_falls_back_to_utc() -> None:
    prefs = Preferences(quiet_hours=NIGHT)
    decision = _decide(prefs, timezone="Nowhere/Special", now=_utc(2024, 6, 1, 23))
    assert decision.until == _utc(2024, 6, 2, 7)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        _decide(Preferences(), now=datetime(2024, 6, 1, 12))


def test_aware_non_utc_now_is_accepted() -> None:
    kolkata_now = _utc(2024, 6, 1, 18).astimezone(ZoneInfo("Asia/Kolkata"))
    decision = _decide(Preferences(quiet_hours=NIGHT), timezone="Asia/Kolkata", now=kolkata_now)
    assert decision.until == _utc(2024, 6, 2, 1, 30)
    assert decision.until is not None
    assert decision.until.tzinfo is UTC


# -- daylight saving time (America/New_York: 2024-03-10 02:00 -> 03:00, 2024-11-03 02:00 -> 01:00)

NY = "America/New_York"


@pytest.mark.parametrize(
    ("window", "now", "until"),
    [
        # spring forward: the night is an hour shorter; 07:00 EDT is 11:00 UTC
        ((time(22), time(7)), _utc(2024, 3, 10, 5), _utc(2024, 3, 10, 11)),
        ((time(22), time(7)), _utc(2024, 3, 9, 3), _utc(2024, 3, 9, 12)),  # the day before
        # the end (02:30) never happens: the window ends when the clock jumps, 07:00 UTC
        ((time(1), time(2, 30)), _utc(2024, 3, 10, 6, 30), _utc(2024, 3, 10, 7)),
        # fall back: the night is an hour longer; 07:00 EST is 12:00 UTC
        ((time(22), time(7)), _utc(2024, 11, 3, 3), _utc(2024, 11, 3, 12)),
        ((time(22), time(7)), _utc(2024, 11, 4, 3), _utc(2024, 11, 4, 12)),  # the day after
        # 01:30 happens twice: the window first ends at 01:30 EDT (05:30 UTC) ...
        ((time(0), time(1, 30)), _utc(2024, 11, 3, 4, 30), _utc(2024, 11, 3, 5, 30)),
        # ... and when the clock reads 01:10 again (EST) it is in the window once more
        ((time(0), time(1, 30)), _utc(2024, 11, 3, 6, 10), _utc(2024, 11, 3, 6, 30)),
    ],
)
def test_dst_changes(window: tuple[time, time], now: datetime, until: datetime) -> None:
    prefs = Preferences(quiet_hours=QuietHours(start=window[0], end=window[1]))
    decision = _decide(prefs, timezone=NY, now=now)
    assert decision == Decision("defer", "quiet_hours", until)
    assert _decide(prefs, timezone=NY, now=until).action == "send"
    assert _decide(prefs, timezone=NY, now=until - timedelta(microseconds=1)).action == "defer"


def test_a_jump_over_the_whole_waking_gap_defers_to_the_next_day() -> None:
    # quiet all day except 02:30-02:45, which does not exist on 2024-03-10
    prefs = Preferences(quiet_hours=QuietHours(start=time(2, 45), end=time(2, 30)))
    decision = _decide(prefs, timezone=NY, now=_utc(2024, 3, 10, 6, 59))  # 01:59 EST
    assert decision.until == _utc(2024, 3, 11, 6, 30)  # 02:30 EDT on the 11th
    assert _decide(prefs, timezone=NY, now=_utc(2024, 3, 11, 6, 30)).action == "send"


# -- properties ------------------------------------------------------------------------------

FIXED_ZONES = ["UTC", "Asia/Kolkata"]
DST_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe"]

times = st.builds(time, st.integers(0, 23), st.integers(0, 59), st.sampled_from([0, 0, 30, 59]))
windows = st.tuples(times, times).filter(lambda w: w[0] != w[1])
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)


def _end_skipped_nearby(end: time, zone: str, now: datetime) -> bool:
    tz = ZoneInfo(zone)
    local = now.astimezone(tz).date()
    for days in range(3):
        wall = datetime.combine(local + timedelta(days=days), end)
        there = wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
        if there != wall:
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(window=windows, now=instants, zone=st.sampled_from(FIXED_ZONES + DST_ZONES))
def test_deferrals_end_soon_and_for_good(
    window: tuple[time, time], now: datetime, zone: str
) -> None:
    prefs = Preferences(quiet_hours=QuietHours(start=window[0], end=window[1]))
    decision = _decide(prefs, timezone=zone, now=now)
    if decision.action == "send":
        return
    until = decision.until
    assert decision.reason == "quiet_hours"
    assert until is not None
    assert until > now
    if zone in FIXED_ZONES:
        limit = timedelta(hours=24)
    elif _end_skipped_nearby(window[1], zone, now):
        limit = timedelta(hours=48)  # the waking part of the day fell into a DST gap
    else:
        limit = timedelta(hours=25)  # a night with the clock set back is an hour longer
    assert until - now <= limit
    assert _decide(prefs, timezone=zone, now=until).action == "send"
    # the earliest such instant: a moment before it is still quiet
    assert _decide(prefs, timezone=zone, now=until - timedelta(microseconds=1)).action == "defer"
