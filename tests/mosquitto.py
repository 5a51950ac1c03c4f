"""A real Mosquitto MQTT broker on 127.0.0.1 for tests, and the ``mosquitto`` fixture.

Needs the Debian package ``mosquitto`` (``/usr/sbin/mosquitto``; override with
``AGEGENDER_MOSQUITTO``); tests using the fixture are skipped with that reason when it is
absent. Use from a test module::

    from tests.mosquitto import mosquitto  # noqa: F401  (registers the fixture)

    def test_x(mosquitto):
        broker = mosquitto()                      # started, listening
        broker.url                                # mqtt://127.0.0.1:PORT
        broker.stop(); broker.start()             # same port, same config
        mosquitto(port=p)                         # on a given port
        durable = mosquitto(persistence=True)     # sessions and queues survive a restart
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` binary, or ``None``."""
    env = os.environ.get("AGEGENDER_MOSQUITTO")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
         if os.access(p, os.X_OK)), None)


class Broker:
    """One Mosquitto process (restartable on the same port).

    Args:
        binary: the ``mosquitto`` executable.
        workdir: folder for its config, log and persistence file.
        persistence: keep durable sessions, their queued messages and retained messages
            across :meth:`stop` / :meth:`start` (written at a clean stop).
        extra_conf: more ``mosquitto.conf`` lines (e.g. ``password_file ...``; then
            anonymous clients are refused).
        port: the TCP port (a free one when ``None``).
    """

    def __init__(self, binary: str, workdir: Path, persistence: bool = False,
                 extra_conf: str = "", port: int | None = None):
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log_path = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1",
                 "allow_anonymous true" if "password_file" not in extra_conf
                 else "allow_anonymous false",
                 f"persistence {'true' if persistence else 'false'}",
                 # queued messages per durable client; tests stay far below
                 "max_queued_messages 100000",
                 "log_dest stderr", "log_type all", "connection_messages true"]
        if persistence:
            lines += [f"persistence_location {workdir}/", "autosave_interval 0"]
        if os.geteuid() == 0:  # else it drops to user "mosquitto", who cannot write here
            lines.append("user root")
        self.conf.write_text("\n".join(lines + [extra_conf, ""]))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> "Broker":
        """Start the broker and wait until it accepts TCP connections.

        Raises:
            RuntimeError: it exited or did not listen within ``timeout_s``.
        """
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir)
        logf.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port} within {timeout_s} s:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a clean stop: the persistence file is written), SIGKILL if needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, n: int = 30) -> str:
        """Last ``n`` lines of the broker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture
def mosquitto(tmp_path):
    """``mosquitto(persistence=False, extra_conf="", port=None) -> Broker`` (started);
    every broker is stopped at teardown. Skips when the ``mosquitto`` binary is absent."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto not installed (Debian package 'mosquitto')")
    brokers: list[Broker] = []

    def make(persistence: bool = False, extra_conf: str = "",
             port: int | None = None) -> Broker:
        workdir = tmp_path / f"mosquitto{len(brokers)}"
        workdir.mkdir()
        broker = Broker(binary, workdir, persistence, extra_conf, port)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()
