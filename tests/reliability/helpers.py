"""Shared pieces of the reliability tests: hostile messages, service processes, metrics.

Everything here drives real parts: real ZeroMQ sockets, real ``agegender`` processes
started with ``subprocess``, real ``/metrics`` scraped over HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import wire

ROOT = Path(__file__).resolve().parents[2]
AGEGENDER = [sys.executable, "-m", "services.cli"]


# --------------------------------------------------------------------------- messages

def valid_frame(stream: str = "cam", seq: int = 0, width: int = 64, height: int = 48,
                live: bool = False, t_ns: int | None = None) -> list:
    """A valid ``frame`` message: ``(height, width, 3)`` uint8 BGR gray image."""
    img = np.full((height, width, 3), 128, np.uint8)
    h = wire.frame_header(stream, seq, time.time_ns() if t_ns is None else t_ns, width, height)
    if live:
        h["live"] = True
    return wire.encode_frame(h, img)


def valid_faces(stream: str = "cam", seq: int = 0, width: int = 64, height: int = 48) -> list:
    """A valid ``faces`` message with one 20x20 crop."""
    img = np.full((height, width, 3), 128, np.uint8)
    h = dict(wire.frame_header(stream, seq, time.time_ns(), width, height), kind="faces",
             faces=[{"box": [10, 10, 30, 30], "confidence": 0.9, "track": 1,
                     "quality": 0.5, "classify": True}], crops=[[20, 20]])
    return wire.encode(h, [img, img[10:30, 10:30]])


def valid_result(stream: str = "cam", seq: int = 0, width: int = 64, height: int = 48) -> list:
    """A valid ``result`` message with one classified face."""
    img = np.full((height, width, 3), 128, np.uint8)
    h = dict(wire.frame_header(stream, seq, time.time_ns(), width, height), kind="result",
             faces=[{"box": [10, 10, 30, 30], "confidence": 0.9, "track": 1,
                     "quality": 0.5, "classify": True, "age": 30.0,
                     "age_range": [25, 32], "gender": "female", "gender_confidence": 0.8}])
    return wire.encode(h, [img])


def counted(metrics, name: str, **labels) -> float:
    """Value of the sample ``name{labels}`` in a :class:`common.metrics.StageMetrics`'
    registry (0 when it was never created)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def eos(stream: str = "cam", seq: int = 0) -> list:
    """An end-of-stream message."""
    return wire.encode(dict(kind="eos", stream=stream, seq=seq, t_capture_ns=time.time_ns()))


def _packed(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def hostile_cases(kind: str = "frame") -> list[tuple[str, list, str | None]]:
    """Broken or hostile multipart messages: ``[(name, frames, expected reason), ...]``.

    ``expected reason`` is the ``agegender_messages_malformed_total`` label the receiver
    must count, or ``None`` when several reasons are acceptable (random bytes).
    ``kind`` picks which valid message the mutated ones start from; the receiver must take
    only that kind (and ``eos``): one case is a valid message of another kind.
    """
    base = {"frame": valid_frame, "faces": valid_faces, "result": valid_result}[kind]()
    header = msgpack.unpackb(bytes(base[0]), raw=False)
    payloads = [bytes(p) for p in base[1:]]
    rng = np.random.default_rng(5)

    def mutate(**changes):
        return [_packed(dict(header, **changes))] + payloads

    cases = [
        ("garbage_bytes", [b"\xc1 this is not msgpack \x00\xff" * 4], "not_msgpack"),
        ("random_9_byte_blob", [rng.bytes(9)], None),
        ("random_9_byte_blob_2", [rng.bytes(9), rng.bytes(9)], None),
        # fixmap{"v": 1, "x": bin32 announcing 0xFFFFFFFF bytes} followed by 3 bytes
        ("bin32_announces_4gb", [b"\x82\xa1v\x01\xa1x\xc6\xff\xff\xff\xff abc"] + payloads,
         "not_msgpack"),
        ("array32_announces_4g_items", [b"\xdd\xff\xff\xff\xff"] + payloads, "not_msgpack"),
        ("header_not_a_map", [_packed([1, 2, 3])] + payloads, "not_msgpack"),
        ("empty_header", [b""] + payloads, "not_msgpack"),
        # every map key on the wire is a string: anything else is a bad field, whatever
        # its type and depth (well-formed msgpack, wrong field names)
        ("bytes_keys", [_packed({b"v": 1, **{k: v for k, v in header.items() if k != "v"}})]
         + payloads, "bad_field"),
        ("int_keys", [_packed({**header, 7: 1})] + payloads, "bad_field"),
        ("int_keys_only", [_packed({0: 1, 1: kind})] + payloads, "bad_field"),
        ("nested_int_key", mutate(extra={1: 2}), "bad_field"),
        ("schema_v1", mutate(v=1), "bad_version"),
        ("schema_v3", mutate(v=3), "bad_version"),
        ("schema_v_string", mutate(v="1"), "bad_version"),
        ("schema_v_bool", mutate(v=True), "bad_version"),
        ("unknown_kind", mutate(kind="frames"), "bad_kind"),
        ("seq_string", mutate(seq="7"), "bad_field"),
        ("seq_bool", mutate(seq=True), "bad_field"),
        ("seq_negative", mutate(seq=-1), "bad_field"),
        ("t_capture_float", mutate(t_capture_ns=1.5e18), "bad_field"),
        ("t_stage_nan", mutate(t_detector_ns=float("nan")), "bad_field"),
        ("t_media_negative", mutate(t_media_ns=-1), "bad_field"),
        ("t_media_float", mutate(t_media_ns=0.5), "bad_field"),
        ("t_media_bool", mutate(t_media_ns=True), "bad_field"),
        ("width_bool", mutate(width=True), "bad_field"),
        ("width_huge", mutate(width=10 ** 9), "bad_field"),
        ("stream_path", mutate(stream="../../etc/passwd"), "bad_field"),
        ("stream_empty", mutate(stream=""), "bad_field"),
        ("live_string", mutate(live="yes"), "bad_field"),
        ("still_int", mutate(still=1), "bad_field"),
        ("fps_string", mutate(fps="25"), "bad_field"),
        ("fps_nan", mutate(fps=float("nan")), "bad_field"),
        ("fps_huge", mutate(fps=1e308), "bad_field"),
        ("encoding_unknown", mutate(encoding="rgb16"), "bad_field"),
        ("payload_size_mismatch", [base[0], payloads[0][:-1]] + payloads[1:], "size_mismatch"),
        ("payload_missing", [base[0]], "size_mismatch"),
        ("eos_with_payload", [_packed(dict(kind="eos", stream="cam", seq=0, t_capture_ns=1,
                                           v=wire.SCHEMA_VERSION)), b"x"], "size_mismatch"),
    ]
    # a valid message of a kind this input does not take (what the stage upstream of it
    # sends, or what comes out of it)
    other = {"frame": valid_result, "faces": valid_frame, "result": valid_faces}[kind]()
    cases.append(("kind_not_for_this_input", [bytes(f) for f in other], "bad_kind"))
    if kind in ("faces", "result"):
        face = header["faces"][0]
        cases += [
            ("box_nan", mutate(faces=[dict(face, box=[float("nan"), 1, 3, 3])]), "bad_field"),
            ("box_outside", mutate(faces=[dict(face, box=[-5, 1, 3, 3])]), "bad_field"),
            ("box_empty", mutate(faces=[dict(face, box=[3, 3, 3, 3])]), "bad_field"),
            ("confidence_bool", mutate(faces=[dict(face, confidence=True)]), "bad_field"),
            ("confidence_nan", mutate(faces=[dict(face, confidence=float("nan"))]), "bad_field"),
            ("faces_not_list", mutate(faces="none"), "bad_field"),
        ]
    if kind == "faces":
        cases += [
            ("crop_shape_lies", mutate(crops=[[21, 20]]), "size_mismatch"),
            ("crop_count_lies", mutate(crops=[[20, 20], [20, 20]]), "size_mismatch"),
            ("crop_shape_bool", mutate(crops=[[True, 20]]), "bad_field"),
        ]
    if kind == "result":
        face = header["faces"][0]
        cases += [
            ("age_nan", mutate(faces=[dict(face, age=float("nan"))]), "bad_field"),
            ("age_string", mutate(faces=[dict(face, age="30")]), "bad_field"),
            ("gender_unknown", mutate(faces=[dict(face, gender="x")]), "bad_field"),
            ("age_range_strings", mutate(faces=[dict(face, age_range=["a", "b"])]), "bad_field"),
        ]
    return cases


# --------------------------------------------------------------------------- raw ZMTP

def zmtp_push_greeting() -> bytes:
    """ZMTP 3.0 greeting + NULL-mechanism READY command of a PUSH peer (RFC 23)."""
    greeting = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
                + b"\x00" + b"\x00" * 31)
    name, value = b"Socket-Type", b"PUSH"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return greeting + b"\x04" + bytes([len(body)]) + body


def raw_tcp_send(port: int, data: bytes, hold_s: float = 0.3) -> None:
    """Connect a plain TCP socket to ``127.0.0.1:port``, write ``data``, wait, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        try:
            s.sendall(data)
            time.sleep(hold_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the peer hung up on us: that is one of the accepted outcomes


# --------------------------------------------------------------------------- metrics

def scrape(port: int, timeout: float = 2.0) -> dict[tuple, float]:
    """``/metrics`` of a service as ``{(sample name, sorted label items): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for (n, lab), v in samples.items():
        if n == name and all(dict(lab).get(k) == str(val) for k, val in labels.items()):
            total += v
    return total


def http_ok(port: int, path: str) -> bool:
    """True when ``GET path`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` (MiB)."""
    return psutil.Process(pid).memory_info().rss / 2 ** 20


# --------------------------------------------------------------------------- processes

def service_available(name: str) -> None:
    """Skip the test when ``services/<name>/main.py`` has not landed yet."""
    if not (ROOT / "services" / name / "main.py").is_file():
        pytest.skip(f"services/{name}/main.py is not there yet")


@dataclass
class Service:
    """One ``agegender <name>`` process started by a test."""

    name: str
    args: list
    http_port: int
    env: dict = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        """Start the process (stdout/stderr to ``log_path``)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **self.env)
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(AGEGENDER + [self.name, *map(str, self.args),
                                                  "--http-port", str(self.http_port),
                                                  "--http-host", "127.0.0.1"],
                                     cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 90.0, path: str = "/readyz") -> None:
        """Wait for ``path`` to answer 200; fails the test with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_ok(self.http_port, path):
                return
            time.sleep(0.2)
        pytest.fail(f"{self.name} not ready within {timeout_s} s:\n{self.log_tail()}")

    def metric(self, name: str, **labels) -> float:
        """Current value of a metric on the process's ``/metrics`` (0 when unreachable)."""
        try:
            return metric(scrape(self.http_port), name, **labels)
        except OSError:
            return 0.0

    def wait_metric(self, name: str, at_least: float, timeout_s: float = 60.0,
                    **labels) -> None:
        """Wait until ``name{labels}`` reaches ``at_least``; fails with the log otherwise."""
        deadline = time.monotonic() + timeout_s
        while self.metric(name, **labels) < at_least:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name}: {name}{labels} did not reach {at_least} within "
                            f"{timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, n: int = 3000) -> str:
        """Last ``n`` characters of the process log."""
        if not self.log_path or not Path(self.log_path).exists():
            return "(no log)"
        return Path(self.log_path).read_text(errors="replace")[-n:]

    def terminate(self, timeout_s: float = 10.0) -> float:
        """SIGTERM the process and wait; returns seconds until it exited (kills on timeout)."""
        if self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return float("inf")
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL if still running (test cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.log_path and self._log is not subprocess.DEVNULL:
            self._log.close()
