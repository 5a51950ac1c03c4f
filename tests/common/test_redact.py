"""common.redact: no credential of a camera URL survives, the camera stays recognisable.

Property-based (hypothesis): user names and passwords with the characters that broke the
old regex (``@ : / # ?`` and percent-escapes), any host/port/path/query, URLs embedded in
arbitrary text. Plus the exact examples of issue 12 items 1-2 and a real logger with a
real exception.
"""

from __future__ import annotations

import io
import logging
import string
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.redact import (MASK, SECRET_PARAMS, RedactingFilter, install_log_redaction,
                           redact, redact_obj, redact_uri)

SCHEMES = ["rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "mqtt", "mqtts"]
# What users put in camera passwords, including what URLs reserve.
NASTY = string.ascii_letters + string.digits + "@:/#?%!$&'()*+,;=-._~[]\"<>^`{|}"
BENIGN_PARAMS = ["channel", "subtype", "stream", "latency", "transport", "profile", "mode"]

secrets_ = st.text(alphabet=NASTY, min_size=1, max_size=24)
label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
hosts = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.lists(label, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["[::1]", "[fe80::1]", "[2001:db8::10]"]),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
paths = st.lists(st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1,
                         max_size=8), max_size=3).map(lambda p: "".join("/" + s for s in p))
query_values = st.text(alphabet=string.ascii_letters + string.digits + "-._~%:/!$'()*+,",
                       min_size=1, max_size=16)
secret_names = st.sampled_from(sorted(SECRET_PARAMS)).flatmap(
    lambda n: st.sampled_from([n, n.upper(), n.capitalize()]))
params = st.lists(st.one_of(st.tuples(st.sampled_from(BENIGN_PARAMS), query_values,
                                      st.just(False)),
                            st.tuples(secret_names, query_values, st.just(True))),
                  max_size=4)
# Text around a URL: anything but whitespace at its edges (the URL is set off by spaces).
around = st.text(max_size=30).map(lambda t: t.strip())


def userinfo_forms():
    """``(text as written in the URL, [secrets it carries])``: raw or percent-encoded
    user, with or without a password."""
    def build(user, password, encode):
        u = quote(user, safe="") if encode else user
        if password is None:
            return u, [user, u]
        p = quote(password, safe="") if encode else password
        return f"{u}:{p}", [user, u, password, p]
    return st.builds(build, secrets_, st.one_of(st.none(), secrets_), st.booleans())


def assert_hidden(secret: str, out: str, visible: str) -> None:
    """``secret`` (raw and percent-decoded) is not in ``out``, when it is long enough to
    mean something and not part of what must stay visible anyway."""
    for form in {secret, unquote(secret)}:
        if len(form) >= 4 and form not in visible and MASK not in form:
            assert form not in out, f"secret {form!r} leaked in {out!r}"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(SCHEMES), info=st.one_of(st.none(), userinfo_forms()),
       host=hosts, port=ports, path=paths, query=params, before=around, after=around)
def test_credentials_never_survive_and_camera_stays_visible(scheme, info, host, port, path,
                                                            query, before, after):
    # Given a camera URL with user info and/or secret query values inside a log line
    hostport = host + (f":{port}" if port is not None else "")
    q = "&".join(f"{n}={v}" for n, v, _ in query)
    qs = f"?{q}" if q else ""
    prefix = f"{info[0]}@" if info else ""
    url = f"{scheme}://{prefix}{hostport}{path}{qs}"
    text = f"{before} {url} {after}"
    # When it is redacted
    out = redact(text)
    # Then the output is exactly the camera without its secrets...
    masked_q = "&".join(f"{n}={MASK if secret else v}" for n, v, secret in query)
    expected_url = (f"{scheme}://{MASK + '@' if info else ''}{hostport}{path}"
                    f"{'?' + masked_q if masked_q else ''}")
    assert out == f"{redact(before)} {expected_url} {redact(after)}"
    # ...so host and port are visible and no secret is left, raw or percent-decoded
    assert hostport in out
    visible = f"{redact(before)} {scheme}://{hostport}{path} {redact(after)} " + "&".join(
        f"{n}={v if not secret else ''}" for n, v, secret in query)
    for secret in (info[1] if info else []):
        assert_hidden(secret, out, visible)
    for _, v, secret in query:
        if secret:
            assert_hidden(v, out, visible)
    # ...and redacting again changes nothing
    assert redact(out) == out


@settings(max_examples=300)
@given(st.text(alphabet="ab:/@?&=#%;. \n'\"x", max_size=60))
def test_idempotent_on_url_like_noise(text):
    # Given any text built from URL punctuation, when redacted twice, then it is stable
    # (and it never raised)
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=300)
@given(st.text(max_size=80).filter(lambda t: "://" not in t))
def test_text_without_urls_is_unchanged(text):
    assert redact(text) == text


@pytest.mark.parametrize("text, secret, shown", [
    # issue 12 item 1: the old regex printed "***@ssw0rd2024" and "ops@example.com:Secret-42"
    ("stream cam0: reconnecting to rtsp://admin:P@ssw0rd2024@127.0.0.1:8554/s1 (attempt 1)",
     "ssw0rd2024", "stream cam0: reconnecting to rtsp://***@127.0.0.1:8554/s1 (attempt 1)"),
    ("cannot open rtsp://ops@example.com:Secret-42@127.0.0.1:8554/s2",
     "Secret-42", "cannot open rtsp://***@127.0.0.1:8554/s2"),
    # issue 12 item 2: the error path repeats the whole spec
    ("source Front Door=rtsp://admin:Hunter2-Secret@127.0.0.1:8554/x: no such file or "
     "folder: Front Door=rtsp://admin:Hunter2-Secret@127.0.0.1:8554/x",
     "Hunter2-Secret", "source Front Door=rtsp://***@127.0.0.1:8554/x: no such file or "
                       "folder: Front Door=rtsp://***@127.0.0.1:8554/x"),
    ("open rtsp://admin:P%40ss%2Fw0rd@cam.local:554/Streaming/Channels/101",
     "P%40ss%2Fw0rd", "open rtsp://***@cam.local:554/Streaming/Channels/101"),
    ("rtsp://admin:pa/ss#wo?rd@10.0.0.5:554/stream1", "ss#wo?rd",
     "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsp://viewer@10.0.0.5/live", "viewer", "rtsp://***@10.0.0.5/live"),
    # query parameters, any case, and the path-style credentials of XMEye-type cameras
    ("http://10.0.0.7/video.mjpg?USER=admin&PWD=s3cr3t-pw&resolution=640x480", "s3cr3t-pw",
     "http://10.0.0.7/video.mjpg?USER=***&PWD=***&resolution=640x480"),
    ("rtsp://10.0.0.9:554/user=admin&password=tlJwpbo6&channel=1&stream=0.sdp", "tlJwpbo6",
     "rtsp://10.0.0.9:554/user=***&password=***&channel=1&stream=0.sdp"),
    ("srt://10.0.0.3:9000?mode=caller&passphrase=verylongsecret", "verylongsecret",
     "srt://10.0.0.3:9000?mode=caller&passphrase=***"),
    ("https://bucket.example/v.mp4?X-Amz-Credential=AKIAXYZ&X-Amz-Signature=deadbeef",
     "deadbeef", "https://bucket.example/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***"),
    # an "&" inside a secret value does not end it early
    ("rtmp://live.example/app?token=ab&cd&x=1", "ab&cd", "rtmp://live.example/app?token=***&x=1"),
    # OpenCV/FFmpeg-style messages that repeat the URL in brackets and quotes
    ("[ WARN:0@1.2] global cap_ffmpeg_impl.hpp:1234 open "
     "'rtsp://root:pass1234@192.0.2.10:554/axis-media/media.amp' failed",
     "pass1234", "[ WARN:0@1.2] global cap_ffmpeg_impl.hpp:1234 open "
                 "'rtsp://***@192.0.2.10:554/axis-media/media.amp' failed"),
])
def test_known_leaks_are_closed(text, secret, shown):
    # Given a text a user has seen leak, when redacted, then it shows exactly the camera
    out = redact(text)
    assert out == shown
    assert secret not in out and unquote(secret) not in out


def test_several_urls_in_one_text_and_non_strings():
    text = ("a=rtsp://u1:pw-one-1@h1:554/a b=rtsps://u2:pw-two-2@h2/b "
            "c=http://h3/c?token=tok-three")
    out = redact(text)
    for secret in ("pw-one-1", "pw-two-2", "tok-three", "u1", "u2"):
        assert secret not in out
    assert all(h in out for h in ("h1:554/a", "h2/b", "h3/c"))
    # a non-string (an exception object) is converted, never raises
    assert redact(ValueError("open rtsp://a:secret99@h/x")) == "open rtsp://***@h/x"
    assert redact_uri("rtsp://a:secret99@h/x") == "rtsp://***@h/x"
    assert redact_uri("clips/walk.mp4") == "clips/walk.mp4"


def test_redact_obj_walks_json_like_data():
    summary = {"refused": {"service": "capture",
                           "error": "no such file: rtsp://a:Hunter2@h/x"},
               "streams": {"rtsp://a:Hunter2@h/x": 3}, "list": ["token=x", 1, None]}
    out = redact_obj(summary)
    assert "Hunter2" not in repr(out)
    assert out["refused"]["error"] == "no such file: rtsp://***@h/x"
    assert out["list"] == ["token=x", 1, None]  # no URL: unchanged


def test_logging_filter_redacts_message_args_and_traceback():
    # Given a real logger whose handler has the redacting filter
    stream = io.StringIO()
    logger = logging.getLogger("test.redact.filter")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)  # twice: still one filter
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        url = "rtsp://admin:P@ssw0rd2024@127.0.0.1:8554/s1?token=Tok-12345"
        # When a child logger logs the URL as an argument and a real exception carries it
        child = logging.getLogger("test.redact.filter.child")
        child.warning("stream %s: cannot open %s", "cam0", url)
        try:
            raise ConnectionError(f"connection to {url} refused")
        except ConnectionError:
            child.exception("reconnect failed")
        child.error("stack", stack_info=True, extra={})
        child.error("bad args %s %s", url)  # a logging mistake must not leak either
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    # Then no secret appears, the camera and the traceback do
    for secret in ("P@ssw0rd2024", "ssw0rd2024", "admin", "Tok-12345"):
        assert secret not in out
    assert "rtsp://***@127.0.0.1:8554/s1?token=***" in out
    assert "Traceback (most recent call last)" in out and "ConnectionError" in out
    assert "stream cam0: cannot open" in out


def test_filter_keeps_records_usable_by_other_formatters():
    # Given a record with args and exc_info, when filtered and then formatted normally,
    # then the formatter sees the redacted message and the redacted traceback
    try:
        raise RuntimeError("rtsp://u:verysecret@h/x")
    except RuntimeError:
        import sys
        exc_info = sys.exc_info()
    record = logging.LogRecord("n", logging.ERROR, __file__, 1, "open %s", ("rtsp://u:p4ss@h/",),
                               exc_info)
    assert RedactingFilter().filter(record) is True
    text = logging.Formatter("%(message)s").format(record)
    assert "p4ss" not in text and "verysecret" not in text
    assert text.startswith("open rtsp://***@h/")
