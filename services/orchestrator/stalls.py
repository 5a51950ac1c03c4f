"""Stall detection: a service whose process lives but whose work has stopped.

The watchdog (:mod:`.watchdog`) sees processes that exit; a process that hangs (SIGSTOP,
a deadlock, a call that never returns) stays alive and the pipeline sits still. Two
signs tell such a service apart, as the stall watchdogs of Savant and Frigate do:

* **heartbeat**: every service's main loop ticks (:meth:`common.health.Health.beat`) at
  least every ``recv_timeout_ms`` (100 ms), also while it waits for room downstream, and
  ``/healthz`` shows the seconds since the last tick (``heartbeat_age_s``). A ``running``
  service whose freshest tick seen is older than ``timeout_s`` is stalled; a stopped
  process answers nothing, so its last tick only gets older.
* **progress**: its count of received messages (``agegender_messages_received_total``)
  has not moved for ``timeout_s`` although its upstream sent it messages it did not
  receive, and it is not held up by its own downstream (which received everything it
  sent, and is running: not a restarted one still loading). Backlogs are ``sent - received`` of the two processes' counters minus the
  smallest value seen since either (re)started, which absorbs messages lost with a killed
  process and in flight at a restart; so a restart never looks like waiting work. Work
  must wait, without progress, for the whole ``timeout_s`` (a message that arrives
  between two scrapes is not a stall).

No false alarms, by construction: only services in state ``running`` are checked (not
while loading a model or opening sources, not while draining at the end); a live source
that delivers nothing leaves nothing waiting; a service waiting on backpressure keeps
ticking (its sender beats while it waits). Each new process (a new pid) starts with a
clean record.
"""

from __future__ import annotations

import dataclasses
import time

#: Data flow between the services: each one's upstream.
UPSTREAM = {"detector": "capture", "classifier": "detector", "sink": "classifier"}
DOWNSTREAM = {up: s for s, up in UPSTREAM.items()}


def message_totals(metrics_text: str) -> tuple[float, float] | None:
    """``(received, sent)``: messages of every kind a service received and sent, summed
    from its Prometheus text (``agegender_messages_received_total`` and
    ``agegender_messages_sent_total``); ``None`` when the text has neither."""
    if not metrics_text:
        return None
    from prometheus_client.parser import text_string_to_metric_families
    received = sent = None
    for fam in text_string_to_metric_families(metrics_text):
        for sample in fam.samples:
            if sample.name == "agegender_messages_received_total":
                received = (received or 0.0) + sample.value
            elif sample.name == "agegender_messages_sent_total":
                sent = (sent or 0.0) + sample.value
    if received is None and sent is None:
        return None
    return received or 0.0, sent or 0.0


@dataclasses.dataclass
class _Watch:
    """What the orchestrator saw of one service process."""

    pid: int
    since: float                   # monotonic time this process was first seen
    state: str = ""                # last state /healthz reported
    running_seen: bool = False     # reported ``running`` at least once
    last_beat: float = 0.0         # monotonic time of the freshest main-loop tick seen
    answered: float = 0.0          # monotonic time of the last /healthz answer
    received: float | None = None  # messages received (last scrape)
    received_t: float = 0.0        # when ``received`` last changed
    sent: float | None = None      # messages sent (last scrape)
    waiting_since: float | None = None  # since when work from upstream waits


class StallDetector:
    """Tells which running services are stalled (see the module docstring).

    Feed it what the orchestrator observes (:meth:`health` after each ``/healthz`` poll,
    :meth:`counters` after each ``/metrics`` scrape, :meth:`scraped` after a scrape of
    every service, downstream first) and ask :meth:`stalled`.

    Args:
        timeout_s: a service without a tick, or without progress while work waits, for
            this long is stalled (seconds).
        clock: monotonic clock (seconds), replaceable in tests.
    """

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self.timeout_s = timeout_s
        self.clock = clock
        self.watch: dict[str, _Watch] = {}
        self._floor: dict[tuple[str, str], float] = {}  # smallest backlog seen per pair

    def _get(self, name: str, pid: int) -> _Watch:
        w = self.watch.get(name)
        if w is None or w.pid != pid:  # a new process: nothing of the old one counts
            w = self.watch[name] = _Watch(pid, self.clock())
            for pair in list(self._floor):
                if name in pair:
                    del self._floor[pair]
        return w

    def health(self, name: str, pid: int, answer: dict | None) -> None:
        """Record one ``/healthz`` poll of ``name`` (process ``pid``): its JSON answer, or
        ``None`` when it did not answer."""
        w = self._get(name, pid)
        if not isinstance(answer, dict):
            return
        now = self.clock()
        w.answered = now
        w.state = str(answer.get("state", ""))
        if w.state == "running" and not w.running_seen:
            w.running_seen = True
            w.last_beat = now
        age = answer.get("heartbeat_age_s")
        if isinstance(age, (int, float)) and not isinstance(age, bool) and age >= 0:
            w.last_beat = max(w.last_beat, now - float(age))

    def counters(self, name: str, pid: int, totals: tuple[float, float] | None) -> None:
        """Record one ``/metrics`` scrape of ``name``: ``(received, sent)`` message totals
        (see :func:`message_totals`); ``None`` when the scrape failed."""
        w = self._get(name, pid)
        if totals is None:
            return
        received, sent = totals
        if received != w.received:
            w.received, w.received_t = received, self.clock()
        w.sent = sent

    def scraped(self) -> None:
        """One scrape of every service is complete: update the smallest backlog seen per
        pair. (Backlogs are taken only from one pass, scraped downstream first, so they
        never come out below the true one: a count from two seconds earlier would.)"""
        for down, up in UPSTREAM.items():
            backlog = self._backlog(up, down)
            if backlog is not None:
                key = (up, down)
                self._floor[key] = min(self._floor.get(key, backlog), backlog)

    def _backlog(self, up: str | None, down: str | None) -> float | None:
        """Messages ``up`` sent that ``down`` has not received (raw counter difference)."""
        a, b = self.watch.get(up or ""), self.watch.get(down or "")
        if a is None or b is None or a.sent is None or b.received is None:
            return None
        return a.sent - b.received

    def waiting(self, up: str | None, down: str | None) -> float:
        """Messages from ``up`` waiting for ``down`` beyond the smallest backlog seen."""
        backlog = self._backlog(up, down)
        if backlog is None:
            return 0.0
        return backlog - self._floor.get((up, down), backlog)

    def _held_up(self, name: str, down: str | None) -> bool:
        """True when ``name`` cannot hand on its work: its downstream has not received
        everything it sent, or is not running (restarted: starting, loading its model)."""
        if down is None:
            return False
        d = self.watch.get(down)
        if d is not None and (not d.running_seen or d.state != "running"):
            return True
        return self.waiting(name, down) > 0

    def stalled(self, name: str, pid: int) -> str | None:
        """Why ``name`` (process ``pid``) is stalled, or ``None`` when it is not."""
        w = self._get(name, pid)
        if not w.running_seen or w.state != "running":
            return None
        now = self.clock()
        if now - w.last_beat > self.timeout_s:
            if now - w.answered > self.timeout_s:
                return (f"no answer on /healthz for {now - w.answered:.1f} s (process "
                        f"stopped or hung)")
            return f"main loop has not ticked for {now - w.last_beat:.1f} s"
        up, down = UPSTREAM.get(name), DOWNSTREAM.get(name)
        if up is None or w.received is None:
            return None
        waiting = self.waiting(up, name)
        if waiting <= 0 or self._held_up(name, down):
            w.waiting_since = None  # nothing waits, or held up by its downstream
            return None
        if w.waiting_since is None:
            w.waiting_since = now
        idle = now - max(w.received_t, w.since, w.waiting_since)
        if idle > self.timeout_s:
            n = round(waiting)
            return (f"received nothing for {idle:.1f} s while {n} message"
                    f"{' waits' if n == 1 else 's wait'} from {up}")
        return None
