"""common.streams: stream names users write, ``[NAME=]URI`` specs, and no secret in any
message about them (issue 12 items 2 and 8)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import wire_checks
from common.streams import (ALLOWED_NAMES, MAX_STREAM_NAME, parse_spec, source_kind,
                            stream_name_problem, validate_stream_name)


@pytest.mark.parametrize("name", ["cam0", "Front_Door", "door-1.main", "_x", "Küche",
                                  "入口", "a" * MAX_STREAM_NAME, "9"])
def test_allowed_names(name):
    assert stream_name_problem(name) is None
    assert validate_stream_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("a" * (MAX_STREAM_NAME + 1), "at most"), ("Front/Door", "'/'"),
    ("a\\b", "'\\\\'"), ("tab\there", "'\\t'"), (".", "starts with '.'"), ("..", "'.'"),
    ("-x", "starts with '-'"), (" x", "' '"), ("x ", "' '"), ("Front Door", "' '"),
    ("a+b", "'+'"), ("a#b", "'#'"), ("a:b", "':'"), ("a\x00b", "'\\x00'"),
])
def test_refused_names_say_why_and_what_is_allowed(name, why):
    assert why in stream_name_problem(name)
    with pytest.raises(ValueError) as exc:
        validate_stream_name(name)
    assert ALLOWED_NAMES in str(exc.value)


@given(st.text(max_size=80))
def test_every_allowed_name_is_valid_on_the_wire_and_in_mqtt_topics(name):
    # Given any text, when it passes the check, then the wire accepts it as a stream name
    # and it is a valid single MQTT topic level (no '/', '+', '#', NUL)
    if stream_name_problem(name) is None:
        assert 1 <= len(name) <= 128 and name not in (".", "..")
        assert not wire_checks._BAD_STREAM.search(name)
        assert not set(name) & {"/", "+", "#", "\x00"}


@pytest.mark.parametrize("name", ["Front Door", "Front/Door", "-door", "door:1"])
def test_issue_12_item_2_name_with_url(name):
    # Given the issue's spec (a name with a space) or another name that is not allowed,
    # in front of a URL with a password
    spec = f"{name}=rtsp://admin:Hunter2-Secret@127.0.0.1:8554/x"
    # When it is parsed, then it is refused with the rule, and without the secret
    with pytest.raises(ValueError) as exc:
        parse_spec(spec, exists=lambda p: False)
    msg = str(exc.value)
    assert f"invalid stream name {name!r}" in msg and ALLOWED_NAMES in msg
    assert "Hunter2" not in msg and "admin" not in msg
    # while an allowed name is taken as such
    assert parse_spec(spec.replace(name, "Front_Door"), exists=lambda p: False) == (
        "Front_Door", "rtsp://admin:Hunter2-Secret@127.0.0.1:8554/x")


def test_empty_source_is_an_error_not_the_demo():
    # an unset shell variable ("" or "cam=$URL") is a mistake, not the demo
    for spec in ("  ", "cam="):
        with pytest.raises(ValueError, match="empty source"):
            parse_spec(spec, exists=lambda p: False)


@pytest.mark.parametrize("spec, expected", [
    ("demo", ("demo", "demo")),
    ("0", ("cam0", "0")),
    ("/dev/video2", ("cam2", "/dev/video2")),
    ("rtsp://u:p@h/x?a=b&c=d", ("cam3", "rtsp://u:p@h/x?a=b&c=d")),  # '=' in the query
    ("door=rtsp://h/x?a=b", ("door", "rtsp://h/x?a=b")),
    ("door = 0", ("door", "0")),
    ("clips/walk.mp4", ("walk", "clips/walk.mp4")),
    ("clips/my clip (1).mp4", ("my_clip__1_", "clips/my clip (1).mp4")),
    ("/data/clips/lobby cam.mp4", ("lobby_cam", "/data/clips/lobby cam.mp4")),
    ("clips/.hidden.mp4", ("hidden", "clips/.hidden.mp4")),
    ("clips/---.mp4", ("src3", "clips/---.mp4")),
    ("x=missing.mp4", ("x", "missing.mp4")),  # a name, then the file is reported missing
    ("some/dir=1.mp4", ("dir_1", "some/dir=1.mp4")),  # not a name: a (missing) path
])
def test_specs(spec, expected):
    assert parse_spec(spec, 3, exists=lambda p: False, is_dir=lambda p: False) == expected


def test_existing_paths_win_whatever_they_hold(tmp_path):
    # issue 12 item 8: a file in the current folder with ':' or '=' in its name
    for fname in ("2024-05-01T10:00:00.mp4", "a=b.mp4", "rtsp:x.mp4"):
        f = tmp_path / fname
        f.write_bytes(b"")
        name, uri = parse_spec(str(f))
        assert uri == str(f) and stream_name_problem(name) is None
    # NAME=existing path is a name and that path
    assert parse_spec(f"door={tmp_path}") == ("door", str(tmp_path))


def test_source_kind():
    assert [source_kind(u, is_dir=lambda p: p == "d") for u in
            ("demo", "RTSPS://h", "https://h", "3", "/dev/video1", "d", "x.mp4")] == \
        ["demo", "rtsp", "http", "camera", "camera", "folder", "file"]


@given(st.text(max_size=40))
def test_parse_spec_names_are_always_allowed_or_raise_value_error(spec):
    try:
        name, uri = parse_spec(spec, exists=lambda p: False, is_dir=lambda p: False)
    except ValueError as exc:
        assert re.search(r"empty source|invalid stream name", str(exc))
        return
    assert stream_name_problem(name) is None and uri
