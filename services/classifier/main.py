"""Classifier service: ``faces`` messages in, ``result`` messages out.

Crops are batched across frames and streams (:mod:`services.classifier.batching`): one
model call per batch of at most ``max_batch`` crops, waiting at most ``max_wait_ms`` for
a batch to fill. Only the faces the detector marked ``classify`` are classified; frames
with no face to classify pass straight through (or keep their place behind queued
frames). End of stream is forwarded losslessly after the frames before it.

Metrics (besides the shared per-stage ones): ``agegender_classifier_batch_size``
(histogram, crops per model call), ``agegender_inference_seconds{stage, model}``
(histogram, seconds per model call), ``agegender_faces_classified_total{model}``; with a
gender second opinion (``second_opinion``; label ``model``: ``dlib``),
``agegender_second_opinions_total{model}`` (faces it was merged into),
``agegender_second_opinion_fallbacks_total{model, reason}`` (faces that kept the
model's answer alone: ``no_answer``, e.g. implausible landmarks; ``budget``, its CPU
budget ``second_opinion_cpu_share`` spent; ``small``, a face box narrower than the
opinion's ``min_face_px``, not asked) and
``agegender_second_opinion_seconds{model}`` (histogram, seconds per call on a batch's
faces). Frames still queued when the service stops are counted as dropped
(``shutdown``).
"""

from __future__ import annotations

import logging
import math
import threading
import time

from prometheus_client import Counter, Histogram

from common import wire
from common.eos import forward_eos
from common.metrics import LATENCY_BUCKETS, inference_seconds
from common.models.dlib_descriptor import HEAD_FOLDER, DlibUnavailable
from common.service import ServiceRuntime
from common.states import ServiceState
from services.classifier.batching import (OpinionBudget, PendingFrames, process_batch,
                                         to_classify)
from services.classifier.config import ClassifierConfig

log = logging.getLogger("classifier")

#: Batch-size histogram buckets (crops per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ClassifierMetrics:
    """Classifier-specific metrics in the service's registry (labels created at zero)."""

    def __init__(self, registry, model_name: str):
        self.model = model_name
        self.batch_size = Histogram("agegender_classifier_batch_size",
                                    "Crops per model call (batch size).",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.inference = inference_seconds(registry, "classifier", model_name)
        self.faces = Counter("agegender_faces_classified_total",
                             "Face crops classified.", ["model"], registry=registry)
        self.faces.labels(model_name)

    def on_batch(self, size: int, seconds: float) -> None:
        """Record one model call of ``size`` crops that took ``seconds``."""
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.faces.labels(self.model).inc(size)


class OpinionMetrics:
    """Second-opinion metrics in the service's registry (label ``model``: the opinion's
    name, created at zero)."""

    def __init__(self, registry, opinion: str):
        self.model = opinion
        self.used = Counter("agegender_second_opinions_total",
                            "Faces whose gender the second opinion was merged into.",
                            ["model"], registry=registry)
        self.fallback = Counter("agegender_second_opinion_fallbacks_total",
                                "Faces that kept the model's answer alone, by reason: "
                                "no_answer (implausible landmarks, tiny crop), budget "
                                "(the opinion's CPU budget was spent), small (a face "
                                "narrower than the opinion's min_face_px, not asked).",
                                ["model", "reason"], registry=registry)
        self.seconds = Histogram("agegender_second_opinion_seconds",
                                 "Second-opinion time per call on one batch's faces "
                                 "(seconds); calls that asked it no face are not timed.", ["model"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.used.labels(opinion)
        for reason in self.REASONS:
            self.fallback.labels(opinion, reason)
        self.seconds.labels(opinion)

    #: Why a face kept the model's answer alone.
    REASONS = ("no_answer", "budget", "small")

    def on_opinion(self, used: int, no_answer: int, over_budget: int, seconds: float,
                   small: int = 0) -> None:
        """Record one call: faces ``used``, without an answer, over the budget; its
        wall time in ``seconds``; faces too small to ask."""
        self.used.labels(self.model).inc(used)
        self.fallback.labels(self.model, "no_answer").inc(no_answer)
        self.fallback.labels(self.model, "budget").inc(over_budget)
        self.fallback.labels(self.model, "small").inc(small)
        if used or no_answer:  # a call that asked the opinion nothing is not timed
            self.seconds.labels(self.model).observe(seconds)


def _load_model(cfg: ClassifierConfig, stop: threading.Event):
    """Load and warm up the model (and the second opinion) in a helper thread so SIGTERM
    is honoured meanwhile.

    Returns:
        ``(model, opinion or None)``, or ``None`` when stop was requested before loading
        finished.

    Raises:
        Exception: whatever ``load_model``, ``warmup`` or ``load_opinion`` raised
            (:class:`common.models.dlib_descriptor.DlibUnavailable` without dlib).
    """
    box: dict = {}

    def work():
        """Load and warm up the model (imports its runtime) off the main thread."""
        try:
            from common.models import load_model  # the runtime is imported on load
            model = load_model(cfg.model, threads=cfg.threads, runtime=cfg.runtime,
                               models=cfg.models_dir)
            model.warmup(cfg.max_batch)
            from common.models.dlib_descriptor import load_opinion
            box["model"] = (model, load_opinion(cfg.second_opinion))
        except BaseException as exc:  # handed to the main thread and re-raised there
            box["error"] = exc

    t = threading.Thread(target=work, name="model-load", daemon=True)
    t.start()
    while t.is_alive() and not stop.is_set():
        t.join(0.1)
    if "error" in box:
        raise box["error"]
    return box.get("model")


def main(cfg: ClassifierConfig, *, stop: threading.Event | None = None,
         model=None, registry=None, opinion=None) -> int:
    """Run the classifier until stopped (SIGINT/SIGTERM or ``stop``).

    Args:
        cfg: configuration.
        stop: stop event (embedding and tests); a new one, set by SIGINT/SIGTERM, if None.
        model: an already loaded model with the ``AgeGenderModel`` interface (embedding
            and tests); ``None`` loads ``cfg.model`` with ``load_model``.
        registry: Prometheus registry (tests); a new one if None.
        opinion: an already loaded second opinion for a given ``model`` (tests); with
            ``model`` ``None`` it is loaded from ``cfg.second_opinion``.

    Returns:
        0 on a clean stop, 2 when the model or the second opinion cannot be loaded.
    """
    with ServiceRuntime("classifier", cfg, stop=stop, registry=registry) as rt:
        rt.health.enter(ServiceState.LOADING)
        if model is None:
            try:
                loaded = _load_model(cfg, rt.stop)
            except Exception as exc:  # noqa: BLE001 (any loading failure is a refusal)
                opinion_failed = isinstance(exc, DlibUnavailable) or HEAD_FOLDER in str(exc)
                hint = " (or set second_opinion none)" if opinion_failed else ""
                return rt.refuse(f"cannot load model {cfg.model!r} (second opinion "
                                 f"{cfg.second_opinion!r}): {type(exc).__name__}: {exc}{hint}")
            if loaded is None:
                log.info("stopped while loading the model")
                return 0
            model, opinion = loaded
        log.info("model %s loaded (max_batch %d, max_wait %.1f ms, %d threads, second "
                 "opinion %s)", model.name, cfg.max_batch, cfg.max_wait_ms, cfg.threads,
                 opinion.name if opinion is not None else "none")
        cm = ClassifierMetrics(rt.metrics.registry, model.name)
        om = OpinionMetrics(rt.metrics.registry, opinion.name) if opinion is not None \
            else None
        budget = OpinionBudget(cfg.second_opinion_cpu_share) \
            if opinion is not None and cfg.second_opinion_cpu_share < 64 else None
        rx = rt.receiver(cfg.input, kinds=("faces", "eos"))
        tx = rt.sender(cfg.output)
        pending = PendingFrames(cfg.max_batch, cfg.max_wait_ms / 1000.0)
        received_at: dict[int, float] = {}
        rt.health.enter(ServiceState.RUNNING)

        def send(msg: wire.Message, frames: list) -> None:
            # Files get backpressure (no loss); live frames are dropped when downstream is full.
            """Send a result: backpressure for file frames, lossy for live frames."""
            tx.send(frames, "result", block=not msg.header.get("live", False))
            t0 = received_at.pop(id(msg), None)
            if t0 is not None:
                rt.metrics.stage_seconds.labels("classifier").observe(time.monotonic() - t0)

        def flush() -> None:
            """Classify every queued frame's crops and send their results in order."""
            msgs = pending.take()
            rt.metrics.queue_depth.labels("classifier").set(0)
            if not msgs:
                return
            for msg, frames in process_batch(msgs, model, cfg.max_batch,
                                             on_batch=cm.on_batch, opinion=opinion,
                                             on_opinion=om and om.on_opinion,
                                             budget=budget):
                send(msg, frames)

        while not rt.stop.is_set():
            rt.health.beat()
            # never wait longer than recv_timeout_ms, so a stop is seen in time even while
            # a batch is filling
            wait_s = cfg.recv_timeout_ms / 1000.0
            if len(pending):
                wait_s = min(wait_s, pending.wait_left())
            msg = rx.recv(max(0, math.ceil(wait_s * 1000)))
            if msg is not None:
                if msg.kind == "eos":
                    flush()
                    forward_eos(tx, msg, "classifier")
                    continue
                if msg.kind != "faces":
                    log.warning("ignored a %r message on the faces input", msg.kind)
                    continue
                received_at[id(msg)] = time.monotonic()
                if not to_classify(msg) and not len(pending):
                    send(msg, process_batch([msg], model, cfg.max_batch)[0][1])
                    continue
                pending.add(msg)
                rt.metrics.queue_depth.labels("classifier").set(len(pending))
            if pending.due():
                flush()
        log.info("stopping (%d frames queued are dropped)", len(pending))
        if len(pending):
            rt.metrics.drop("shutdown", len(pending))
    return 0
