"""Security settings shared by every service: the error they raise, secrets given as a
setting's value or as a file, and HTTP authentication (bearer token, basic auth) for
``/metrics`` and the sink's live view. ZeroMQ CURVE is in :mod:`common.curve`.

Everything is off by default (docs/deploy.md, "Security"). Secrets are compared in
constant time and never logged; a message about a setting names the setting or the file,
never its content.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


class SecurityConfigError(ValueError):
    """Security settings that cannot work: a key or credentials file that does not load,
    a socket that would run in clear although CURVE is on. Messages never show a secret."""


def secret_text(value) -> str | None:
    """The text of a ``SecretStr`` (or plain string, path) setting; ``None`` when unset
    or empty."""
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text.strip() or None


#: Paths that stay open without credentials unless ``http_auth_probes`` is on: liveness
#: and readiness say only ok/state/stage (no image, no source), and every orchestrator
#: (Docker health checks, Kubernetes probes) calls them without credentials.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


@dataclasses.dataclass(frozen=True)
class HttpAuth:
    """Credentials an HTTP server requires: a bearer token, basic-auth ``USER:PASSWORD``,
    or both (either is accepted). Build it with :meth:`from_config`.

    Attributes:
        token: the bearer token (UTF-8 bytes) or ``None``.
        basic: ``USER:PASSWORD`` (UTF-8 bytes) or ``None``.
        probes: ``/healthz`` and ``/readyz`` need the credentials too.
    """

    token: bytes | None = dataclasses.field(default=None, repr=False)
    basic: bytes | None = dataclasses.field(default=None, repr=False)
    probes: bool = False

    @classmethod
    def from_config(cls, cfg) -> "HttpAuth | None":
        """The credentials of ``cfg``'s ``http_auth_*`` / ``http_basic_auth*`` fields
        (files read now, surrounding whitespace stripped); ``None`` when none is set.

        Raises:
            SecurityConfigError: a credentials file cannot be read, is empty, or a basic-auth
                value has no ``:`` (the message names the file, never its content).
        """
        token = _value_or_file(getattr(cfg, "http_auth_token", None),
                               getattr(cfg, "http_auth_token_file", None), "http_auth_token")
        basic = _value_or_file(getattr(cfg, "http_basic_auth", None),
                               getattr(cfg, "http_basic_auth_file", None), "http_basic_auth")
        if basic is not None and b":" not in basic:
            raise SecurityConfigError("http_basic_auth: the value must be USER:PASSWORD")
        if token is None and basic is None:
            return None
        return cls(token=token, basic=basic, probes=bool(getattr(cfg, "http_auth_probes",
                                                                 False)))

    def required(self, path: str) -> bool:
        """Whether ``path`` needs credentials."""
        return self.probes or path not in PROBE_PATHS

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries valid credentials
        (``Bearer TOKEN`` or ``Basic base64(USER:PASSWORD)``), compared in constant time
        (:func:`hmac.compare_digest`)."""
        import base64
        import binascii
        import hmac
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode("utf-8", "replace"), self.token)
        if scheme.lower() == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return False
            return hmac.compare_digest(given, self.basic)
        return False

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header value of a 401 answer."""
        return ", ".join(
            (['Basic realm="agegender", charset="UTF-8"'] if self.basic is not None else [])
            + (['Bearer realm="agegender"'] if self.token is not None else []))


def _value_or_file(value, path, what: str) -> bytes | None:
    """A secret given as a setting's value or as the content of a file."""
    text = secret_text(value)
    if text is None and path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityConfigError(f"{what}_file: cannot read {path}: {type(exc).__name__}") \
                from None
        if not text:
            raise SecurityConfigError(f"{what}_file: {path} is empty")
    return text.encode("utf-8") if text else None


def is_loopback(host: str) -> bool:
    """Whether an HTTP listen address only accepts connections from this host
    (``127.0.0.0/8``, ``::1``, ``localhost``); ``0.0.0.0``, ``::`` and ``""`` are every
    interface."""
    import ipaddress
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
