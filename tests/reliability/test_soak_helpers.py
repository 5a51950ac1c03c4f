"""The arithmetic behind ``bench/soak.py``'s numbers (durations, histogram quantiles,
RSS trend), checked on hand-computed cases."""

from __future__ import annotations

import argparse

import pytest

from bench import soak


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("90s", 90), ("1h", 3600),
                                          ("1h30m", 5400), ("45", 45), ("2.5m", 150)])
def test_parse_duration(text, seconds):
    assert soak.parse_duration(text) == seconds


def test_parse_duration_rejects_nonsense():
    with pytest.raises(argparse.ArgumentTypeError):
        soak.parse_duration("soon")


def test_bucket_quantile_interpolates_like_histogram_quantile():
    # given 10 observations: 4 <= 0.1 s, 4 in (0.1, 0.5], 2 in (0.5, 1.0]
    buckets = {0.1: 4, 0.5: 8, 1.0: 10, float("inf"): 10}
    assert soak.bucket_quantile(buckets, 0.4) == pytest.approx(0.1)
    assert soak.bucket_quantile(buckets, 0.6) == pytest.approx(0.3)   # halfway in (0.1, 0.5]
    assert soak.bucket_quantile(buckets, 0.9) == pytest.approx(0.75)
    assert soak.bucket_quantile({0.1: 0, float("inf"): 0}, 0.5) is None
    # observations above the last finite bound report that bound
    assert soak.bucket_quantile({1.0: 0, float("inf"): 3}, 0.99) == 1.0


def test_slope_per_hour():
    # 1 MiB per minute = 60 MiB per hour; flat = 0
    assert soak.slope_per_hour([(t, 100 + t / 60) for t in range(0, 600, 60)]) \
        == pytest.approx(60.0)
    assert soak.slope_per_hour([(t, 50.0) for t in range(0, 600, 60)]) == pytest.approx(0.0)
    assert soak.slope_per_hour([(0, 1.0)]) is None


def test_fault_schedule_kills_and_stops_every_service_once_within_the_run():
    schedule = soak.fault_schedule(60.0, 1800.0, enabled=True)
    assert sorted(f for _, f in schedule) == sorted(
        (s, how) for s in ("capture", "detector", "classifier", "sink")
        for how in ("kill", "stop"))
    times = [t for t, _ in schedule]
    assert times == sorted(times) and times[0] == 60.0 and times[-1] == pytest.approx(1680.0)
    assert soak.fault_schedule(60.0, 1800.0, enabled=False) == []


def test_repeated_stream_seq_counts_replayed_frames(tmp_path):
    from bench.faults import repeated_stream_seq
    events = tmp_path / "events.jsonl"
    assert repeated_stream_seq(events) == (0, 0)
    events.write_text("".join(f'{{"stream": "{s}", "seq": {q}}}\n'
                              for s, q in [("a", 0), ("a", 1), ("b", 0), ("a", 1)]))
    assert repeated_stream_seq(events) == (4, 1)
