"""Hide credentials in anything that may show a camera or broker URL.

One function, :func:`redact`, for every place a source is shown: log lines, error
messages, exception text, the run summary, status files, ``/healthz`` JSON. It finds every
``scheme://...`` URL inside a longer text and rewrites it so the user still recognises the
camera (scheme, host, port and path stay) while the secrets are gone:

* **user info** (``user:password@``, ``user@``) becomes ``***@``. A password may hold
  ``@``, ``:``, ``/``, ``#``, ``?`` or percent-escapes such as ``%40``; the user info
  therefore ends at the **last** ``@`` of the URL (the URL runs to the next whitespace).
  ``rtsp://ops@example.com:Secret-42@127.0.0.1:8554/s2`` -> ``rtsp://***@127.0.0.1:8554/s2``.
* **secret parameters** (``?password=...``, ``&token=...``, and the path-style
  ``/user=admin&password=...`` some cameras use) keep their name and get ``***`` as value.
  Names (case-insensitive) are :data:`SECRET_PARAMS`, also as the last part of a longer
  name (``X-Amz-Signature``, ``x_api_key``). A value runs to the next ``&name=`` or to the
  end of the URL, so an ``&`` inside a password does not end it early.

Fail-safe choices (secrets are worth more than a pretty log line):

* any scheme counts (``rtsp``, ``rtsps``, ``http(s)``, ``rtmp(s)``, ``srt``, ``mqtt(s)``,
  ``tcp``, ...);
* an ``@`` further right in the path or query (``?mail=a@b.example``) also hides the host;
* whitespace ends a URL: a password with a raw space is not a valid URL (write ``%20``),
  and its part after the space is not recognised.

:func:`redact` is idempotent, never raises, and returns text without ``://`` unchanged.
:class:`RedactingFilter` applies it to every log record (message, arguments, exception
text, stack), :func:`install_log_redaction` puts that filter on the handlers of a logger,
and :func:`redact_obj` redacts every string inside JSON-like data (summary, status).
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Query (or path) parameter names whose values are secrets, compared case-insensitively;
#: a longer name ending in ``-NAME``, ``_NAME`` or ``.NAME`` counts too.
SECRET_PARAMS = frozenset({
    "user", "username", "login", "pass", "password", "passwd", "pwd", "passphrase",
    "token", "access_token", "refresh_token", "auth", "authorization", "key", "apikey",
    "api_key", "secret", "client_secret", "signature", "sig", "credential", "credentials",
})
#: What replaces user info (before ``@``) and secret parameter values.
MASK = "***"

# A URL: a scheme (RFC 3986: letter, then letters, digits, + . -) not glued to a longer
# word, "://", then everything up to whitespace.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*://)(\S*)")
# "name=" after ?, &, ; or / (path-style camera URLs), and where a value ends: at the
# next "&name=" / ";name=" or at the end of the URL.
_PARAM_NAME = re.compile(r"(?<=[?&;/])([A-Za-z0-9_.\-]+)=")
_VALUE_END = re.compile(r"[&;][A-Za-z0-9_.\-]+=")


def _is_secret_name(name: str) -> bool:
    low = name.lower()
    if low in SECRET_PARAMS:
        return True
    for sep in "-_.":
        if sep in low and low.rsplit(sep, 1)[1] in SECRET_PARAMS:
            return True
    return False


def _mask_params(rest: str) -> str:
    """``rest`` (a URL after ``scheme://``) with the values of secret parameters masked.
    A non-secret value is not skipped: a secret name inside it is still found."""
    out, pos = [], 0
    m = _PARAM_NAME.search(rest)
    while m is not None:
        if _is_secret_name(m.group(1)):
            end = _VALUE_END.search(rest, m.end())
            stop = end.start() if end else len(rest)
            out.append(rest[pos:m.end()] + MASK)
            pos = stop
            m = _PARAM_NAME.search(rest, stop)
        else:
            m = _PARAM_NAME.search(rest, m.end())
    out.append(rest[pos:])
    return "".join(out)


def redact_uri(uri: str) -> str:
    """One URL (or URI-ish string) with its credentials hidden.

    ``scheme://`` is kept, user info up to the last ``@`` becomes ``***@``, and the
    values of :data:`SECRET_PARAMS` become ``***``. A string without ``://`` (a file
    path, a camera index) is returned unchanged. Never raises.

    Example:
        ``rtsp://admin:P@ssw0rd2024@127.0.0.1:8554/s1?channel=1&token=abc`` ->
        ``rtsp://***@127.0.0.1:8554/s1?channel=1&token=***``
    """
    return redact(uri)


def _redact_url(m: re.Match) -> str:
    scheme, rest = m.group(1), m.group(2)
    at = rest.rfind("@")
    if at >= 0:
        rest = f"{MASK}@{rest[at + 1:]}"
    if "=" in rest:
        rest = _mask_params(rest)
    return scheme + rest


def redact(text: Any) -> str:
    """``text`` with the credentials of every URL in it hidden (see the module docs).

    Args:
        text: any text (log line, error message, exception text); non-strings are
            converted with ``str()`` first.

    Returns:
        The text with each ``scheme://user:pass@host:port/path?query`` rewritten as
        ``scheme://***@host:port/path?query`` and secret parameter values as ``***``.
        Text without ``://`` comes back unchanged. Idempotent.

    Never raises: if anything goes wrong the whole text is replaced by a notice.
    """
    try:
        if not isinstance(text, str):
            text = str(text)
        if "://" not in text:
            return text
        return _URL.sub(_redact_url, text)
    except Exception:  # noqa: BLE001 - a log line must never crash a service
        return "<text hidden: credential redaction failed>"


def redact_obj(obj: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, tuples, strings, numbers) with
    :func:`redact` applied to every string, keys included. Other objects are returned
    as they are."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record in place before it is formatted.

    The final message (``msg % args``), the exception text (traceback and message of
    ``exc_info``) and ``stack_info`` pass through :func:`redact`. Always lets the record
    through. Put it on **handlers** (:func:`install_log_redaction`): a filter on a logger
    does not see records that propagate from its child loggers.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; returns ``True``."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad args: logging would print them raw
            message = f"{record.msg} (logging arguments: {record.args!r})"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            try:
                record.exc_text = self._formatter.formatException(record.exc_info)
            except Exception:  # noqa: BLE001
                record.exc_text = "<traceback could not be formatted>"
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of ``logger`` (the root logger
    when ``None``) that does not have one yet. Call it after the handlers exist (after
    ``logging.basicConfig``); handlers added later need it too.

    Returns:
        The filter (the same instance on every handler).
    """
    logger = logger or logging.getLogger()
    filt = RedactingFilter()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
