"""CURVE on TCP endpoints with real ZeroMQ sockets (issue 12 item 3): a peer without a
listed key receives nothing and injects nothing; listed peers work; ipc:// is unaffected.

Absence is never "waited for and hoped": each test first waits for the handshake
outcome of every peer (socket monitor events: the state that decides whether a peer
can ever send or receive), then shows that the listed peer gets everything.
"""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from zmq.utils.monitor import recv_monitor_message

from common.config import ServiceConfig
from common.metrics import StageMetrics
from common.process import Refused
from common.curve import Curve, generate_keys, load_key
from common.security import SecurityConfigError
from common.service import ServiceRuntime
from common.sockets import Receiver, Sender
from tests.conftest import free_port
from tests.reliability.helpers import counted, valid_frame
from tests.waits import wait_for

SUCCEEDED = zmq.EVENT_HANDSHAKE_SUCCEEDED
FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class Cfg(ServiceConfig, service="test"):
    """A service config (the curve_* fields every service has)."""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A key set from ``generate_keys`` with clients ``detector`` and ``classifier``, and
    one ``stranger`` pair that is not authorized."""
    folder = tmp_path_factory.mktemp("keys")
    made = generate_keys(folder, ("detector", "classifier"))
    stranger = folder / "stranger"
    stranger.mkdir()
    made["stranger"] = Path(zmq.auth.create_certificates(stranger, "stranger")[1])
    return made


@pytest.fixture
def ctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def server_curve(keys) -> Curve:
    """The binder's settings (capture, classifier, sink in compose)."""
    return Curve.from_config(Cfg(curve_server_secret_key=str(keys["server"]),
                                 curve_authorized_keys=str(keys["authorized"])))


def client_curve(keys, name: str, server_key=None) -> Curve:
    """A connector's settings with the client pair ``name``."""
    return Curve.from_config(Cfg(curve_client_secret_key=str(keys[name]),
                                 curve_server_key=str(server_key or keys["server_public"])))


def raw_socket(ctx, kind: int, keys=None, client: str | None = None) -> zmq.Socket:
    """A peer outside the services: plain (no ``client``) or a CURVE client with the
    key pair ``client`` and the right server key."""
    sock = ctx.socket(kind)
    sock.linger = 0
    if client is not None:
        public, secret = load_key(str(keys[client]), secret=True, what=client)
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = load_key(str(keys["server_public"]), secret=False,
                                        what="server")[0]
    return sock


class Handshakes:
    """Handshake outcomes seen by a socket's monitor (succeeded, failed), by a thread."""

    def __init__(self, sock: zmq.Socket):
        self.mon = sock.get_monitor_socket(SUCCEEDED | FAILED)
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.mon.poll(50):
                event = recv_monitor_message(self.mon)["event"]
                if event == SUCCEEDED:
                    self.ok += 1
                elif event & FAILED:
                    self.failed += 1

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.mon.close(0)


def metrics() -> StageMetrics:
    return StageMetrics("sink", CollectorRegistry())


def start_zap(ctx, curve):
    auth = curve.start_authenticator(ctx)
    assert auth is not None
    return auth


def test_bound_receiver_sees_nothing_from_peers_without_a_listed_key(ctx, keys):
    # Given a service input bound on TCP with CURVE (a sink or classifier)
    curve = server_curve(keys)
    auth = start_zap(ctx, curve)
    port = free_port()
    m = metrics()
    rx = Receiver(ctx, f"bind:tcp://127.0.0.1:{port}", m, hwm=1000, curve=curve)
    seen = Handshakes(rx.sock)
    try:
        # When a plain peer and a CURVE peer with an unlisted key connect and push
        # well-formed messages, and then the listed detector does
        intruders = [raw_socket(ctx, zmq.PUSH), raw_socket(ctx, zmq.PUSH, keys, "stranger")]
        for sock in intruders:
            sock.connect(f"tcp://127.0.0.1:{port}")
            for i in range(20):
                sock.send_multipart(valid_frame("intruder", i), flags=zmq.NOBLOCK)
        wait_for(lambda: seen.failed >= 2, 30, "both intruders' handshakes refused")
        good = raw_socket(ctx, zmq.PUSH, keys, "detector")
        good.connect(f"tcp://127.0.0.1:{port}")
        for i in range(5):
            good.send_multipart(valid_frame("door", i))
        got = []
        wait_for(lambda: got.append(rx.recv(100)) or
                 sum(1 for g in got if g is not None) >= 5, 30, "the detector's 5 frames")
        # Then the service saw exactly the listed peer's frames, nothing of the others
        streams = [g.stream for g in got if g is not None]
        assert streams == ["door"] * 5
        assert counted(m, "agegender_messages_received_total", stage="sink",
                       kind="frame") == 5
        assert seen.ok == 1 and rx.recv(200) is None
        for sock in [*intruders, good]:
            sock.close(0)
    finally:
        seen.close()
        rx.close()
        auth.stop()


def test_bound_sender_gives_nothing_to_peers_without_a_listed_key(ctx, keys):
    # Given a service output bound on TCP with CURVE (capture's frames)
    curve = server_curve(keys)
    auth = start_zap(ctx, curve)
    port = free_port()
    tx = Sender(ctx, f"bind:tcp://127.0.0.1:{port}", metrics(), threading.Event(), hwm=100,
                curve=curve)
    seen = Handshakes(tx.sock)
    intruders = [raw_socket(ctx, zmq.PULL), raw_socket(ctx, zmq.PULL, keys, "stranger")]
    good = raw_socket(ctx, zmq.PULL, keys, "detector")
    try:
        # When two peers without a listed key and the listed detector connect to read
        for sock in [*intruders, good]:
            sock.connect(f"tcp://127.0.0.1:{port}")
        wait_for(lambda: seen.failed >= 2 and seen.ok >= 1, 30, "all three handshakes")
        # and the service sends 30 frames (PUSH deals them round-robin to its peers)
        for i in range(30):
            assert tx.send(valid_frame("door", i), "frame", block=True, timeout_s=10)
        # Then the listed peer gets every one, the others none
        got = [good.recv_multipart() for _ in range(30)]
        assert len(got) == 30
        assert all(sock.poll(200) == 0 for sock in intruders)
    finally:
        for sock in [*intruders, good]:
            sock.close(0)
        seen.close()
        tx.close()
        auth.stop()


def test_connecting_sender_delivers_nothing_to_an_impostor_server(ctx, keys, tmp_path):
    # Given a detector's output connecting with CURVE, and a host that binds the address
    # with another server key pair (it lets every client in)
    _, impostor_secret = zmq.auth.create_certificates(tmp_path, "impostor")
    port = free_port()
    impostor = ctx.socket(zmq.PULL)
    impostor.linger = 0
    public, secret = load_key(impostor_secret, secret=True, what="impostor")
    impostor.curve_secretkey, impostor.curve_publickey, impostor.curve_server = \
        secret, public, True
    impostor.bind(f"tcp://127.0.0.1:{port}")
    seen = Handshakes(impostor)
    tx = Sender(ctx, f"connect:tcp://127.0.0.1:{port}", metrics(), threading.Event(),
                curve=client_curve(keys, "detector"))
    try:
        # When the detector sends
        for i in range(3):
            tx.send(valid_frame("door", i), "frame", block=False)
        wait_for(lambda: seen.failed >= 1, 30, "the handshake with the impostor failing")
        # Then the impostor never got a frame
        assert seen.ok == 0 and impostor.poll(300) == 0
    finally:
        seen.close()
        tx.close()
        impostor.close(0)


def test_ipc_endpoints_stay_clear_and_local(ctx, keys, tmp_path):
    # Given CURVE settings, then ipc:// sockets are made without CURVE (a plain local
    # peer talks to them; the socket file's permissions decide who may)
    curve = server_curve(keys)
    m = metrics()
    rx = Receiver(ctx, f"bind:ipc://{tmp_path}/x.sock", m, curve=curve)
    plain = raw_socket(ctx, zmq.PUSH)
    plain.connect(f"ipc://{tmp_path}/x.sock")
    plain.send_multipart(valid_frame("door", 0))
    assert wait_for(lambda: rx.recv(100), 30, "the frame").stream == "door"
    assert rx.sock.curve_server == 0
    plain.close(0)
    rx.close()


def test_curve_on_refuses_a_tcp_socket_it_cannot_cover(ctx, keys):
    # Given only client keys, when the service binds TCP, then it is refused (never in
    # clear), and a half pair is a configuration error
    with pytest.raises(SecurityConfigError, match="binding tcp://.* needs the server's keys"):
        Receiver(ctx, f"bind:tcp://127.0.0.1:{free_port()}", metrics(),
                 curve=client_curve(keys, "detector"))
    with pytest.raises(ValueError, match="needs both curve_client_secret_key"):
        Cfg(curve_client_secret_key=str(keys["detector"]))
    with pytest.raises(SecurityConfigError, match="neither a Z85 key"):
        Curve.from_config(Cfg(curve_client_secret_key="/no/such/file",
                              curve_server_key=str(keys["server_public"])))


def test_keys_from_environment_as_z85_text(ctx, keys, monkeypatch):
    # Given the keys as Z85 text in environment variables (a Kubernetes Secret)
    server_public, server_secret = load_key(str(keys["server"]), secret=True, what="s")
    detector_public, detector_secret = load_key(str(keys["detector"]), secret=True, what="d")
    monkeypatch.setenv("AGEGENDER_TEST_CURVE_SERVER_SECRET_KEY", server_secret.decode())
    monkeypatch.setenv("AGEGENDER_TEST_CURVE_AUTHORIZED_KEYS", detector_public.decode())
    monkeypatch.setenv("AGEGENDER_TEST_CURVE_CLIENT_SECRET_KEY", detector_secret.decode())
    monkeypatch.setenv("AGEGENDER_TEST_CURVE_SERVER_KEY", server_public.decode())
    cfg = Cfg()
    # Then they load as the files' keys, and no secret shows in the config's text
    curve = Curve.from_config(cfg)
    assert curve.server_public == server_public and curve.authorized == {detector_public}
    assert curve.client_public == detector_public and curve.server_key == server_public
    for text in (repr(cfg), str(cfg), repr(curve)):
        assert server_secret.decode() not in text and detector_secret.decode() not in text
    # and a CURVE pair made from them talks
    auth = start_zap(ctx, curve)
    port = free_port()
    rx = Receiver(ctx, f"bind:tcp://127.0.0.1:{port}", metrics(), curve=curve)
    tx = Sender(ctx, f"connect:tcp://127.0.0.1:{port}", metrics(), threading.Event(),
                curve=curve)
    try:
        tx.send(valid_frame("door", 0), "frame", block=True, timeout_s=10)
        assert wait_for(lambda: rx.recv(100), 30, "the frame").stream == "door"
    finally:
        tx.close()
        rx.close()
        auth.stop()


def test_service_runtime_encrypts_its_tcp_sockets_and_refuses_bad_keys(keys, tmp_path):
    # Given a service with both halves configured (it binds and connects, as the
    # classifier does)
    cfg = Cfg(curve_server_secret_key=str(keys["server"]),
              curve_authorized_keys=str(keys["authorized"]),
              curve_client_secret_key=str(keys["classifier"]),
              curve_server_key=str(keys["server_public"]), http_port=0)
    port = free_port()
    with ServiceRuntime("classifier", cfg, signals=False) as rt:
        # When it makes its sockets, then both are CURVE (server and client), and its
        # own client key is let in by its own ZAP handler
        rx = rt.receiver(f"bind:tcp://127.0.0.1:{port}")
        tx = rt.sender(f"connect:tcp://127.0.0.1:{port}")
        assert rx.sock.curve_server == 1 and tx.sock.curve_server == 0
        intruder = raw_socket(rt.ctx, zmq.PUSH)
        intruder.connect(f"tcp://127.0.0.1:{port}")
        intruder.send_multipart(valid_frame("intruder", 0))
        tx.send(valid_frame("door", 0), "frame", block=True, timeout_s=10)
        got = wait_for(lambda: rx.recv(100), 30, "the service's own frame")
        assert got.stream == "door" and rx.recv(300) is None
        intruder.close(0)
    # Given a key file that does not load, then the runtime refuses to start
    bad = Cfg(curve_client_secret_key=str(tmp_path / "absent.key_secret"),
              curve_server_key=str(keys["server_public"]), http_port=0)
    with pytest.raises(Refused, match="curve_client_secret_key"):
        with ServiceRuntime("classifier", bad, signals=False):
            pass


def test_keys_generate_command_writes_a_working_set(tmp_path):
    # Given `agegender keys generate DIR`
    from services.cli import main
    res = CliRunner().invoke(main, ["keys", "generate", str(tmp_path / "k")])
    # Then it writes the server pair, a client pair per service, the authorized folder,
    # secrets readable by their owner only, and says which setting takes which file
    assert res.exit_code == 0, res.output
    k = tmp_path / "k"
    names = ("capture", "detector", "classifier", "sink")
    assert {p.name for p in (k / "authorized").iterdir()} == {f"{n}.key" for n in names}
    for secret in [k / "server.key_secret", *(k / "clients" / f"{n}.key_secret" for n in names)]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "AGEGENDER_DETECTOR_CURVE_CLIENT_SECRET_KEY=" in res.output
    curve = Curve.from_config(Cfg(curve_server_secret_key=str(k / "server.key_secret"),
                                  curve_authorized_keys=str(k / "authorized")))
    assert load_key(str(k / "clients" / "detector.key_secret"), secret=True,
                    what="d")[0] in curve.authorized
    # and it does not overwrite a key set by accident
    again = CliRunner().invoke(main, ["keys", "generate", str(k)])
    assert again.exit_code == 1 and "exist already" in again.output
