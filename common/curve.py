"""ZeroMQ CURVE encryption and authentication on TCP endpoints (opt-in).

Frames of people's faces cross TCP between hosts when the services run apart (compose,
Kubernetes). CURVE (RFC 26, CurveZMQ: Curve25519 keys, every message encrypted and
authenticated) keeps them from being read or injected by anyone who can reach a port.
Like SSH host keys and ``authorized_keys``:

* **server** key pair, one per deployment, shared by the services that **bind** a TCP
  socket (capture, classifier, sink in the default wiring). A bound socket is a CURVE
  server; it lets in only clients whose public key is in the **authorized keys** folder,
  checked by a ZAP handler (:class:`zmq.auth.thread.ThreadAuthenticator`) that runs in
  every process that binds.
* **client** key pair, one per service that **connects** (detector, classifier); the
  connecting socket is a CURVE client that checks it reached the server's public key.

A peer without a listed key completes no handshake: it receives nothing from a bound
sender and nothing it sends reaches a bound receiver. A connector talking to a host that
does not hold the server's secret key delivers nothing to it.

Keys are zmq certificate files (:func:`zmq.auth.create_certificates`; ``agegender keys
generate DIR`` writes a full set) or Z85 text (40 characters, e.g. from a Kubernetes
Secret in an environment variable). Settings (:class:`common.config.ServiceConfig`):

==============================  ======================================================
``curve_server_secret_key``     server secret key (``server.key_secret`` or Z85): binds
``curve_authorized_keys``       client public keys (folder of ``*.key`` or Z85 list):
                                binds
``curve_client_secret_key``     this service's client secret key: connects
``curve_server_key``            server public key (``server.key`` or Z85): connects
==============================  ======================================================

CURVE is on as soon as one of them is set, and then **every** TCP socket of the process
must be covered: a bind without the server's key pair and authorized keys, or a connect
without a client key pair and the server's public key, is refused
(:class:`common.security.SecurityConfigError`) rather than opened in clear. ``ipc://`` and
``inproc://`` endpoints are never encrypted: they do not leave the host, and who may
connect to an ``ipc://`` socket file is decided by its file-system permissions
(``agegender run`` puts them in a private temp folder).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

from common.security import SecurityConfigError, secret_text

log = logging.getLogger(__name__)

#: Length of a Z85-encoded CURVE key (32 bytes -> 40 characters).
Z85_KEY_LEN = 40
#: Names of the client key pairs ``agegender keys generate`` writes by default.
DEFAULT_CLIENTS = ("capture", "detector", "classifier", "sink")
#: Distinct refused client keys logged at WARNING (later ones at DEBUG), so a client that
#: retries every 100 ms cannot flood the log.
MAX_LOGGED_DENIALS = 20


def _z85(value: str) -> bytes | None:
    """``value`` as a Z85 key, or ``None`` when it is not one."""
    from zmq.utils import z85
    if len(value) != Z85_KEY_LEN:
        return None
    try:
        z85.decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError):
        return None
    return value.encode("ascii")


def load_key(value: str, *, secret: bool, what: str) -> tuple[bytes, bytes | None]:
    """Load a CURVE key from Z85 text or a zmq certificate file.

    Args:
        value: 40 Z85 characters, or the path of a certificate file (``NAME.key`` holds
            the public key, ``NAME.key_secret`` both).
        secret: a secret key is wanted (the public one is derived from it).
        what: the setting's name, for messages.

    Returns:
        ``(public_key, secret_key)`` as Z85 bytes; ``secret_key`` is ``None`` when
        ``secret`` is false.

    Raises:
        SecurityConfigError: neither a Z85 key nor a readable certificate holding the key (the
            message names the setting and the file, never the key).
    """
    import zmq
    import zmq.auth
    value = value.strip()
    key = _z85(value) if not os.path.exists(value) else None
    if key is not None:
        return (zmq.curve_public(key), key) if secret else (key, None)
    if not os.path.isfile(value):
        raise SecurityConfigError(f"{what}: neither a Z85 key ({Z85_KEY_LEN} characters) nor an "
                         "existing certificate file")
    try:
        public, secret_key = zmq.auth.load_certificate(value)
    except (OSError, ValueError) as exc:
        raise SecurityConfigError(f"{what}: cannot read the certificate file {value}: "
                         f"{type(exc).__name__}") from None
    if secret and not secret_key:
        raise SecurityConfigError(f"{what}: {value} holds no secret key (use the .key_secret file)")
    if not public:
        raise SecurityConfigError(f"{what}: {value} holds no public key")
    return public, (secret_key if secret else None)


def authorized_keys(value: str | os.PathLike) -> set[bytes]:
    """The client public keys (Z85) allowed to connect: those of every ``*.key``
    certificate file when ``value`` is a folder, else ``value`` read as Z85 public keys
    separated by commas (an environment variable from a Kubernetes Secret).

    Raises:
        SecurityConfigError: neither a folder nor a list of Z85 keys, or no key at all (nobody
            could connect).
    """
    import zmq.auth
    if os.path.isdir(value):
        keys = set(zmq.auth.load_certificates(value))
    else:
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        keys = {_z85(p) for p in parts}
        if None in keys or not parts:
            raise SecurityConfigError("curve_authorized_keys: neither a folder of *.key "
                             "certificates nor a comma-separated list of Z85 public keys")
    if not keys:
        raise SecurityConfigError(f"curve_authorized_keys: {value} holds no *.key certificate; "
                         "no client could connect")
    return keys


class _KeyList:
    """ZAP credentials provider: allows the listed client keys, logs refused ones."""

    def __init__(self, keys: set[bytes]):
        self.keys = frozenset(keys)
        self.denied: set[bytes] = set()
        self._lock = threading.Lock()

    def callback(self, domain: str, client_key: bytes) -> bool:
        """``True`` when ``client_key`` (Z85) is authorized (pyzmq's provider API)."""
        if client_key in self.keys:
            return True
        with self._lock:
            first = client_key not in self.denied and len(self.denied) < MAX_LOGGED_DENIALS
            self.denied.add(client_key)
        log.log(logging.WARNING if first else logging.DEBUG,
                "CURVE: refused a client whose public key %s is not authorized",
                client_key.decode("ascii", "replace"))
        return False


@dataclasses.dataclass(frozen=True)
class Curve:
    """The CURVE keys of one process (see the module docs); build it with
    :meth:`from_config`. Keys are Z85 bytes."""

    server_public: bytes | None = None
    server_secret: bytes | None = dataclasses.field(default=None, repr=False)
    authorized: frozenset[bytes] = frozenset()
    client_public: bytes | None = None
    client_secret: bytes | None = dataclasses.field(default=None, repr=False)
    server_key: bytes | None = None

    @classmethod
    def from_config(cls, cfg) -> "Curve | None":
        """The keys named by ``cfg``'s ``curve_*`` fields; ``None`` when none is set
        (CURVE off).

        Raises:
            SecurityConfigError: a key or the authorized folder does not load, or a half of a
                pair is missing (server secret without authorized keys, client secret
                without the server's public key, or the other way round).
        """
        server_secret = secret_text(getattr(cfg, "curve_server_secret_key", None))
        folder = secret_text(getattr(cfg, "curve_authorized_keys", None))
        client_secret = secret_text(getattr(cfg, "curve_client_secret_key", None))
        server_key = secret_text(getattr(cfg, "curve_server_key", None))
        if not any((server_secret, folder, client_secret, server_key)):
            return None
        if bool(server_secret) != bool(folder):
            raise SecurityConfigError("CURVE for binding needs both curve_server_secret_key and "
                             "curve_authorized_keys")
        if bool(client_secret) != bool(server_key):
            raise SecurityConfigError("CURVE for connecting needs both curve_client_secret_key and "
                             "curve_server_key")
        out: dict = {}
        if server_secret:
            out["server_public"], out["server_secret"] = load_key(
                server_secret, secret=True, what="curve_server_secret_key")
            out["authorized"] = frozenset(authorized_keys(folder))
        if client_secret:
            out["client_public"], out["client_secret"] = load_key(
                client_secret, secret=True, what="curve_client_secret_key")
            out["server_key"], _ = load_key(server_key, secret=False,
                                            what="curve_server_key")
        return cls(**out)

    def apply(self, sock, mode: str, addrs: list[str]) -> None:
        """Make ``sock`` a CURVE server (``mode`` ``"bind"``) or client (``"connect"``)
        when one of ``addrs`` is ``tcp://``; call before binding or connecting.

        Raises:
            SecurityConfigError: this process has no keys for that side (it would run in clear).
        """
        if not any(a.startswith("tcp://") for a in addrs):
            return
        shown = ", ".join(addrs)
        if mode == "bind":
            if self.server_secret is None:
                raise SecurityConfigError(
                    f"CURVE is on but binding {shown} needs the server's keys "
                    "(curve_server_secret_key and curve_authorized_keys)")
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True
        else:
            if self.client_secret is None:
                raise SecurityConfigError(
                    f"CURVE is on but connecting to {shown} needs a client key "
                    "(curve_client_secret_key and curve_server_key)")
            sock.curve_secretkey = self.client_secret
            sock.curve_publickey = self.client_public
            sock.curve_serverkey = self.server_key

    def start_authenticator(self, ctx):
        """Start the ZAP handler of ``ctx`` that admits only :attr:`authorized` clients
        (needed before any CURVE server socket binds; without one libzmq would let every
        client with a valid handshake in). ``None`` when this process binds no CURVE
        socket. Stop it with ``.stop()`` before terminating the context."""
        if self.server_secret is None:
            return None
        from zmq.auth.thread import ThreadAuthenticator
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=_KeyList(
            set(self.authorized)))
        log.info("CURVE on: TCP binds encrypted, %d authorized client key(s)",
                 len(self.authorized))
        return auth


def generate_keys(folder: Path, clients: tuple[str, ...] = DEFAULT_CLIENTS,
                  force: bool = False) -> dict[str, Path]:
    """Write a CURVE key set with :func:`zmq.auth.create_certificates`:

    * ``FOLDER/server.key`` (public) and ``FOLDER/server.key_secret``;
    * ``FOLDER/clients/NAME.key_secret`` per client;
    * ``FOLDER/authorized/NAME.key`` per client (public keys: the folder for
      ``curve_authorized_keys``).

    Secret files are made readable by their owner only (mode 0600).

    Returns:
        ``{"server": server.key_secret, "server_public": server.key,
        "authorized": folder, NAME: client secret file, ...}``.

    Raises:
        FileExistsError: a key file exists already and ``force`` is false.
        ValueError: a client name that is not a plain file name.
    """
    import zmq.auth
    folder = Path(folder)
    for name in clients:
        if not name or name == "server" or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"client name {name!r}: use letters, digits, '-' or '_' "
                             "(and not 'server')")
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    (folder / "authorized").mkdir(exist_ok=True)
    targets = [folder / "server.key", folder / "server.key_secret"] + \
        [folder / "clients" / f"{n}.key_secret" for n in clients] + \
        [folder / "authorized" / f"{n}.key" for n in clients]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise FileExistsError(f"key files exist already: {', '.join(existing)} "
                              "(remove them or use --force)")
    out: dict[str, Path] = {}
    public, secret = zmq.auth.create_certificates(folder, "server")
    os.chmod(secret, 0o600)
    out.update(server=Path(secret), server_public=Path(public),
               authorized=folder / "authorized")
    for name in clients:
        public, secret = zmq.auth.create_certificates(folder / "clients", name)
        os.chmod(secret, 0o600)
        os.replace(public, folder / "authorized" / f"{name}.key")
        out[name] = Path(secret)
    return out
