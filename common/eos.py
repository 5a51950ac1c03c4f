"""End of stream: the one way a stage passes an ``eos`` message on.

``eos`` is a control message: it must never be dropped (:mod:`common.wire`), so it goes
out through the sender's lossless control path after everything of its stream that the
stage sends before it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from common import wire

log = logging.getLogger(__name__)


def forward_eos(sender, msg: wire.Message, stage: str,
                now_ns: Callable[[], int] = time.time_ns) -> None:
    """Send ``msg`` (a decoded ``eos``) on, stamped ``t_<stage>_ns``, losslessly.

    Args:
        sender: a :class:`common.sockets` sender (``send_control(frames, kind)``).
        msg: the received ``eos`` message; its header fields are kept.
        stage: this stage's name (one of :data:`common.metrics.STAGES`).
        now_ns: wall clock for the stamp (ns since the Unix epoch).
    """
    sender.send_control(wire.encode(wire.stamp(msg.header, stage, now_ns())), "eos")
    log.info("%s: end of stream %r passed on", stage, msg.stream)
