"""Stream names and source specs (``[NAME=]URI``), shared by capture and ``agegender run``.

A stream name ends up in metric labels, file names (``annotated_<stream>.mp4``), event
records and MQTT topics (``<prefix>/<stream>/person``), so it is checked once here with a
message that says what is allowed:

* 1 to :data:`MAX_STREAM_NAME` (64) characters: letters and digits (any script, as
  ``str.isalnum``), ``_``, ``-`` and ``.``; no spaces;
* the first character is a letter, a digit or ``_`` (no leading ``-``: it reads as a
  command-line option; no leading ``.``: hidden files, ``.`` and ``..``).

No spaces: a stream name is also a file name (``annotated_<stream>.mp4``), a label value
and an MQTT topic level, and ``Front Door=rtsp://...`` is far more often a shell quoting
slip than a wish; ``Front_Door`` or ``front-door`` read as well. Everything the wire
refuses (``/``, ``\\``, control characters, ``.``/``..``, over 128 characters;
:mod:`common.wire`) and what MQTT forbids in a topic (``+``, ``#``, ``/``, NUL) is outside
this set.

:func:`parse_spec` splits ``[NAME=]URI`` without ever showing a credential: every message
it raises passes through :func:`common.redact.redact`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from common.redact import redact

#: Longest stream name (characters); the wire allows 128, file names and labels stay short.
MAX_STREAM_NAME = 64
#: What :func:`stream_name_problem` and the error messages say is allowed.
ALLOWED_NAMES = (f"1-{MAX_STREAM_NAME} letters, digits, '_', '-' or '.' (no spaces), "
                 "starting with a letter, digit or '_'")
#: A URI with a scheme (``rtsp://``, ``http://``, ...).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_CAMERA = re.compile(r"/dev/video\d+")


def stream_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a stream name, or ``None`` when it is allowed
    (see the module docs for the rule)."""
    if not isinstance(name, str):
        return f"a stream name is text, not {type(name).__name__}"
    if not name:
        return "the stream name is empty"
    if len(name) > MAX_STREAM_NAME:
        return f"the stream name has {len(name)} characters (at most {MAX_STREAM_NAME})"
    bad = sorted({c for c in name if not (c.isalnum() or c in "_-.")})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        return f"the stream name holds {shown}, which {'is' if len(bad) == 1 else 'are'} " \
               "not allowed"
    if not (name[0].isalnum() or name[0] == "_"):
        return f"the stream name starts with {name[0]!r}"
    return None


def validate_stream_name(name: str) -> str:
    """``name`` when it is an allowed stream name.

    Raises:
        ValueError: it is not; the message says why and which names are allowed, and
            holds no credential (redacted).
    """
    problem = stream_name_problem(name)
    if problem:
        raise ValueError(redact(f"invalid stream name {name!r}: {problem}. Allowed: "
                                f"{ALLOWED_NAMES}."))
    return name


def source_kind(uri: str, is_dir: Callable[[str], bool] = os.path.isdir) -> str:
    """Classify a URI: ``demo``, ``rtsp`` (``rtsp://``, ``rtsps://``), ``http``
    (``http://``, ``https://``), ``camera`` (a number or ``/dev/videoN``), ``folder`` (an
    existing directory) or ``file`` (anything else).
    """
    low = uri.lower()
    if low == "demo":
        return "demo"
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if uri.isdigit() or _CAMERA.fullmatch(uri):
        return "camera"
    if is_dir(uri):
        return "folder"
    return "file"


def _looks_like_source(uri: str, exists: Callable[[str], bool]) -> bool:
    """True when ``uri`` is clearly a source: a URL, a camera, the demo or a path on disk."""
    return bool(_SCHEME.match(uri)) or uri.isdigit() or bool(_CAMERA.fullmatch(uri)) \
        or uri.lower() == "demo" or exists(uri)


def parse_spec(spec: str, index: int = 0,
               exists: Callable[[str], bool] = os.path.exists,
               is_dir: Callable[[str], bool] = os.path.isdir) -> tuple[str, str]:
    """Split a source spec ``[NAME=]URI`` into ``(stream_name, uri)``.

    Rules, in order:

    1. A spec that exists on disk is that file or folder, whatever it holds (``=``,
       ``:``): ``a=b.mp4``, ``2024-05-01T10:00:00.mp4``.
    2. A spec that starts with ``scheme://`` is a URL as a whole (query strings hold
       ``=``).
    3. ``NAME=URI`` where URI is clearly a source (URL, camera, ``demo``, existing path):
       NAME must be an allowed stream name, otherwise :class:`ValueError` names the rule
       (``Front Door=rtsp://...`` and ``Front/Door=rtsp://...`` are refused).
    4. ``NAME=URI`` where NAME is an allowed name: taken as such (URI may then turn out
       to be a missing file, reported under that stream's name).
    5. Anything else is a path (reported as missing when it is).

    Default names: ``demo``; ``camN`` for cameras (N = device number) and URLs (N =
    ``index``); otherwise the file or folder name without suffix, with characters outside
    the allowed set (spaces included) replaced by ``_`` (``lobby cam.mp4`` ->
    ``lobby_cam``), leading ``.``/``-`` dropped (``src<index>`` when nothing is left).

    Args:
        spec: the source string as the user gave it.
        index: position of the spec in the source list (default names of URLs).
        exists, is_dir: file-system checks (replaceable in tests).

    Returns:
        ``(stream_name, uri)``, the name allowed by :func:`stream_name_problem`.

    Raises:
        ValueError: the URI part is empty or the given NAME is not allowed. Messages
            never show credentials.
    """
    text = spec.strip()
    name, uri = "", text
    if not exists(text) and not _SCHEME.match(text):
        head, sep, rest = text.partition("=")
        rest = rest.strip()
        if sep and _looks_like_source(rest, exists):
            name, uri = validate_stream_name(head.strip()), rest
        elif sep and stream_name_problem(head.strip()) is None:
            name, uri = head.strip(), rest
    if not uri:
        raise ValueError(redact(f"empty source {spec!r}: give a file, folder, URL or "
                                "camera, or no source at all for the demo"))
    if not name:
        kind = source_kind(uri, is_dir)
        if kind == "demo":
            name = "demo"
        elif kind == "camera":
            name = f"cam{uri.removeprefix('/dev/video')}"
        elif _SCHEME.match(uri):
            name = f"cam{index}"
        else:
            stem = Path(uri.rstrip("/")).stem
            name = re.sub(r"[^\w.\-]", "_", stem)[:MAX_STREAM_NAME]
            if stream_name_problem(name):
                name = re.sub(r"^[^\w]+", "", name)
            if not name or stream_name_problem(name):
                name = f"src{index}"
    return name, uri
