"""Liveness and readiness of one service process (what ``/healthz`` and ``/readyz`` say).

Liveness is a heartbeat: the main loop calls :meth:`Health.beat` every tick (and a
blocking send calls it while it waits for room downstream: waiting on backpressure is not
a hang), and the service is alive while the last beat is fresher than
``heartbeat_timeout_s``. Readiness is
the lifecycle state (:class:`common.states.ServiceState`): ready only while ``running``
(models loaded, sockets up) and alive.
"""

from __future__ import annotations

import threading
import time

from common.metrics import StageMetrics
from common.states import SERVICE_TRANSITIONS, ServiceState, check_transition


class Health:
    """Heartbeat and lifecycle state of one service.

    Args:
        metrics: the stage's metrics (the heartbeat gauge is set on every beat).
        timeout_s: the service is dead to ``/healthz`` when the main loop has not beaten
            for this long (seconds).
    """

    def __init__(self, metrics: StageMetrics, timeout_s: float = 10.0):
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._beat = time.monotonic()
        self._lock = threading.Lock()
        self._state = ServiceState.STARTING
        #: True once the service was ``running`` (it got past loading its models/sources).
        self.was_ready = False

    @property
    def state(self) -> ServiceState:
        """The current lifecycle state."""
        return self._state

    def enter(self, state: "ServiceState | str") -> None:
        """Move to ``state`` (a :class:`~common.states.ServiceState` or its value).

        Raises:
            common.states.InvalidTransition: the move is not allowed (see
                :data:`common.states.SERVICE_TRANSITIONS`).
            ValueError: an unknown state name.
        """
        new = ServiceState(state)
        with self._lock:
            self._state = check_transition(SERVICE_TRANSITIONS, self._state, new)
            self.was_ready = self.was_ready or new is ServiceState.RUNNING

    def beat(self) -> None:
        """Record a tick of the main loop."""
        self._beat = time.monotonic()
        self.metrics.heartbeat.labels(self.metrics.stage).set(time.time())

    def heartbeat_age_s(self) -> float:
        """Seconds since the main loop's last tick (``/healthz`` shows it, so a
        supervisor can tell a hung loop from a slow one without waiting for
        ``timeout_s``)."""
        return time.monotonic() - self._beat

    def alive(self) -> bool:
        """True while the heartbeat is fresh."""
        return self.heartbeat_age_s() < self.timeout_s

    def ready(self) -> bool:
        """True while ``running`` and alive."""
        return self._state is ServiceState.RUNNING and self.alive()
