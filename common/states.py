"""Lifecycle states as enums with allowed transitions (service health, live sources).

A state machine here is an ``enum`` of states plus a table ``{state: {next states}}``;
:func:`check_transition` refuses a move the table does not allow, so a state that can
only be reached through another (``stopped`` only after the process started, ``up``
only after a connection was attempted) cannot be skipped by a typo or a wrong call.
The enums subclass ``str`` so their values serialise as the plain strings ``/healthz``
has always shown.
"""

from __future__ import annotations

import enum


class InvalidTransition(ValueError):
    """A state change that the state machine's table does not allow."""


def check_transition(table: dict, old: enum.Enum, new: enum.Enum) -> enum.Enum:
    """Return ``new`` when ``old -> new`` is allowed by ``table`` (staying put always is).

    Raises:
        InvalidTransition: the move is not in ``table[old]``.
    """
    if new is not old and new not in table[old]:
        raise InvalidTransition(f"{type(old).__name__}: {old.value} -> {new.value} is not "
                                f"allowed (from {old.value}: "
                                f"{', '.join(s.value for s in table[old]) or 'nothing'})")
    return new


class ServiceState(str, enum.Enum):
    """Where a service process is in its life (``/healthz`` and ``/readyz`` show it)."""

    STARTING = "starting"   # runtime set up: logging, metrics, HTTP, sockets
    LOADING = "loading"     # loading models or opening sources; not ready yet
    RUNNING = "running"     # ready: processing its input (the only ready state)
    DRAINING = "draining"   # input ended: finishing the work in hand before exit
    STOPPED = "stopped"     # main loop left; the process is about to exit


#: Allowed moves between :class:`ServiceState` values.
SERVICE_TRANSITIONS = {
    ServiceState.STARTING: {ServiceState.LOADING, ServiceState.RUNNING, ServiceState.STOPPED},
    ServiceState.LOADING: {ServiceState.RUNNING, ServiceState.STOPPED},
    ServiceState.RUNNING: {ServiceState.LOADING, ServiceState.DRAINING, ServiceState.STOPPED},
    ServiceState.DRAINING: {ServiceState.STOPPED},
    ServiceState.STOPPED: set(),
}
