"""The stall detector's rules on a fake clock: heartbeat, progress while work waits, and
the cases that must never raise an alarm (loading, idle, backpressure, restarts)."""

from __future__ import annotations

import pytest

from services.orchestrator.stalls import StallDetector, message_totals


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def running(age: float = 0.0) -> dict:
    return {"ok": True, "state": "running", "stage": "x", "heartbeat_age_s": age}


def test_running_service_that_stops_answering_is_stalled_after_the_timeout(clock):
    # given a running detector whose heartbeat was fresh
    d = StallDetector(timeout_s=8.0, clock=clock)
    d.health("detector", 10, running(0.05))
    # when it answers nothing any more (SIGSTOP) for 7 s: not yet
    clock.t += 7.0
    d.health("detector", 10, None)
    assert d.stalled("detector", 10) is None
    # then after 8 s it is stalled, and the reason says it does not answer
    clock.t += 1.2
    why = d.stalled("detector", 10)
    assert why and "no answer on /healthz" in why


def test_answering_service_whose_loop_does_not_tick_is_stalled(clock):
    # given a running sink that answers /healthz but whose main loop is stuck
    d = StallDetector(timeout_s=5.0, clock=clock)
    d.health("sink", 7, running(0.0))
    clock.t += 6.0
    d.health("sink", 7, {"ok": True, "state": "running", "heartbeat_age_s": 6.0})
    # then it is stalled, named by its heartbeat
    assert "has not ticked for 6.0 s" in d.stalled("sink", 7)


@pytest.mark.parametrize("state", ["starting", "loading", "draining", "stopped"])
def test_service_not_running_is_never_stalled(clock, state):
    # given a classifier loading its model (or draining, ...) without ticking for long
    d = StallDetector(timeout_s=2.0, clock=clock)
    d.health("classifier", 3, {"ok": False, "state": state, "heartbeat_age_s": 0.0})
    clock.t += 60
    d.health("classifier", 3, {"ok": False, "state": state, "heartbeat_age_s": 60.0})
    # then no alarm
    assert d.stalled("classifier", 3) is None


def test_new_process_starts_with_a_clean_record(clock):
    # given a detector found stalled
    d = StallDetector(timeout_s=2.0, clock=clock)
    d.health("detector", 10, running())
    clock.t += 3
    assert d.stalled("detector", 10)
    # when a new process (another pid) replaces it and is still loading
    d.health("detector", 11, {"state": "loading", "heartbeat_age_s": 0.0})
    clock.t += 10
    # then the new one is not stalled
    assert d.stalled("detector", 11) is None


def feed(d, clock, counts: dict[str, tuple[float, float]], pids=None):
    """One scrape of every service: ``{name: (received, sent)}``, heartbeats fresh."""
    for name, totals in counts.items():
        pid = (pids or {}).get(name, 1)
        d.health(name, pid, running(0.05))
        d.counters(name, pid, totals)
    d.scraped()


def test_ticking_service_that_takes_nothing_while_work_waits_is_stalled(clock):
    # given capture sending and a detector that ticks but stops receiving
    d = StallDetector(timeout_s=5.0, clock=clock)
    feed(d, clock, {"capture": (0, 10), "detector": (10, 10), "classifier": (10, 10)})
    for i in range(1, 5):
        clock.t += 2
        feed(d, clock, {"capture": (0, 10 + i), "detector": (10, 10),
                        "classifier": (10, 10)})
        if i < 3:
            assert d.stalled("detector", 1) is None
    # then once work waited for longer than the timeout without progress: stalled
    clock.t += 2
    feed(d, clock, {"capture": (0, 15), "detector": (10, 10), "classifier": (10, 10)})
    why = d.stalled("detector", 1)
    assert why and "while 5 messages wait from capture" in why


def test_service_held_up_by_its_downstream_is_not_stalled(clock):
    # given a detector that takes nothing because the classifier has not taken its
    # frames (the classifier is the slow or stuck one)
    d = StallDetector(timeout_s=5.0, clock=clock)
    feed(d, clock, {"capture": (0, 10), "detector": (10, 10), "classifier": (10, 10)})
    for i in range(1, 8):
        clock.t += 2
        feed(d, clock, {"capture": (0, 10 + i), "detector": (10, 12),
                        "classifier": (10, 10)})
        d.stalled("detector", 1)
    # then the detector is not blamed
    assert d.stalled("detector", 1) is None


def test_idle_pipeline_and_messages_lost_with_a_killed_process_raise_no_alarm(clock):
    # given a detector restarted after frames were lost with the old process (capture
    # sent 50 more than the new detector will ever receive), then an idle live source
    d = StallDetector(timeout_s=3.0, clock=clock)
    feed(d, clock, {"capture": (0, 100), "detector": (0, 0), "classifier": (0, 0)},
         pids={"detector": 2})
    for _ in range(10):
        clock.t += 2
        feed(d, clock, {"capture": (0, 100), "detector": (0, 0), "classifier": (0, 0)},
             pids={"detector": 2})
    # then nothing is stalled: the backlog never grew above what was lost
    assert d.stalled("detector", 2) is None


def test_message_arriving_between_two_scrapes_is_not_a_stall(clock):
    # given a live camera that was down for minutes (nothing sent, nothing received)
    d = StallDetector(timeout_s=3.0, clock=clock)
    feed(d, clock, {"capture": (0, 5), "detector": (5, 5), "classifier": (5, 5)})
    clock.t += 300
    feed(d, clock, {"detector": (5, 5), "classifier": (5, 5)})
    # when it comes back and capture's scrape shows a frame the detector's scrape
    # (taken a moment earlier) did not count yet
    feed(d, clock, {"capture": (0, 6)})
    # then that is not a stall
    assert d.stalled("detector", 1) is None
    # and the next scrape shows it received
    clock.t += 2
    feed(d, clock, {"capture": (0, 6), "detector": (6, 6)})
    assert d.stalled("detector", 1) is None


def test_message_totals_sum_every_kind():
    text = ('agegender_messages_received_total{stage="sink",kind="result"} 7.0\n'
            'agegender_messages_received_total{stage="sink",kind="eos"} 1.0\n'
            'agegender_messages_sent_total{stage="sink",kind="result"} 0.0\n')
    assert message_totals(text) == (8.0, 0.0)
    assert message_totals("") is None


def test_counts_from_scrapes_of_different_times_are_not_mistaken_for_waiting_work(clock):
    # given frames flowing, the classifier's count seen before the sink's newer one
    # (a backlog below the true one, as a mixed-time comparison would give)
    d = StallDetector(timeout_s=3.0, clock=clock)
    for i in range(5):
        clock.t += 2
        feed(d, clock, {"sink": (10 * i + 9, 0), "classifier": (10 * i + 9, 10 * i + 9)})
    # when the flow stops because an upstream service stopped, all delivered
    for _ in range(6):
        clock.t += 2
        feed(d, clock, {"sink": (49, 0), "classifier": (49, 49)})
        # then the sink, which has nothing to do, is never stalled
        assert d.stalled("sink", 1) is None


def test_service_waiting_for_a_restarted_downstream_that_still_loads_is_not_stalled(clock):
    # given a detector blocked since its classifier stopped; the classifier is killed
    # and a new one (another pid) loads its model for longer than the timeout
    d = StallDetector(timeout_s=3.0, clock=clock)
    feed(d, clock, {"capture": (0, 20), "detector": (20, 20), "classifier": (20, 20)})
    for _ in range(3):
        clock.t += 2
        feed(d, clock, {"capture": (0, 23), "detector": (20, 22)})
        assert d.stalled("detector", 1) is None  # held up: the classifier took nothing
    d.health("classifier", 2, {"state": "loading", "heartbeat_age_s": 0.0})
    for _ in range(5):
        clock.t += 2
        feed(d, clock, {"capture": (0, 23), "detector": (20, 22)})
        d.counters("classifier", 2, (0, 0))
        d.scraped()
        # then the detector is not blamed while its new downstream is not running
        assert d.stalled("detector", 1) is None
