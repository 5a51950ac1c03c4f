"""The detector study (``services.detector.compare``) on real clips with real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from services.detector.compare import Row, compare, compare_command, make_backend, markdown
from services.detector.smallest_face import (FACE_BOX_IN_PATCH, face_sizes, found_face,
                                             paste_face, smallest_face)

WALKING = "face-demographics-walking-and-pause.mp4"
EMPTY = "people-detection.mp4"


def test_study_rows_on_the_walking_and_empty_clips(clip, ground_truth):
    # given the walking clip (3 faces) and the empty room (0), 6 frames each
    clips = [clip(WALKING), clip(EMPTY)]
    # when BlazeFace is compared (the SSD runs as the cost reference)
    rows = compare(clips, ["blazeface"], ground_truth, smallest=False, max_frames=6)
    # then one row per clip, with counts against the annotation and costs vs the SSD
    assert [(r.clip, r.backend) for r in rows] == [(WALKING, "blazeface"), (EMPTY, "blazeface")]
    walk, empty = rows
    assert walk.frames == 6 and walk.expected == 3 and walk.size == "480x270"
    assert walk.faces_per_frame == 3.0 and walk.all_found == 6 and walk.extra_frames == 0
    assert walk.false_positives is None
    assert empty.expected == 0 and empty.false_positives == 0 and empty.all_found is None
    assert walk.ms_per_frame > 0 and walk.cpu_ms_per_frame > 0 and walk.ratio_to_ssd > 0
    assert walk.smallest_face_px is None  # not asked for
    table = markdown(rows)
    assert table.count("\n") == 3 and "| blazeface |" in table and "3.00 (3)" in table


def test_the_ssd_row_is_its_own_reference(clip, ground_truth):
    rows = compare([clip(WALKING)], ["ssd"], ground_truth, smallest=False, max_frames=2)
    assert len(rows) == 1 and rows[0].ratio_to_ssd == 1.0


def test_unknown_backend_is_refused(clip):
    with pytest.raises(ValueError, match="unknown backend"):
        compare([clip(WALKING)], ["nope"], {}, smallest=False)
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("nope")


def test_pasted_face_geometry():
    # given a grey 480x270 frame, when a 40 px face is pasted at its centre
    frame, box = paste_face(np.full((270, 480, 3), 128, np.uint8), 40, (240, 135))
    # then the face box is 40 px wide around that point and the frame changed there only
    x1, y1, x2, y2 = box
    assert x2 - x1 == pytest.approx(40, abs=0.5)
    assert (x1 + x2) / 2 == pytest.approx(240, abs=1) and (y1 + y2) / 2 == pytest.approx(135, abs=1)
    assert (frame != 128).any() and (frame[:, :100] == 128).all()
    # a face pasted near a corner is moved inside the frame
    _, (cx1, cy1, _, _) = paste_face(np.zeros((270, 480, 3), np.uint8), 40, (0, 0))
    assert cx1 >= 0 and cy1 >= 0
    assert FACE_BOX_IN_PATCH[2] - FACE_BOX_IN_PATCH[0] == 100
    assert face_sizes(20, 10) == [20.0, 17.0, 14.5, 12.5, 10.5]


def test_found_face_needs_the_centre_inside_and_a_similar_size():
    class D:
        def __init__(self, box):
            self.box = box
    face = (100, 100, 140, 140)
    assert found_face([D((98, 95, 142, 145))], face)
    assert not found_face([D((0, 0, 40, 40))], face)            # elsewhere
    assert not found_face([D((110, 110, 125, 125))], face)      # far too small (15 px)
    assert not found_face([D((0, 0, 250, 250))], face)          # far too large


def test_smallest_face_blazeface_vs_one_pass_at_480x270():
    # given BlazeFace with tiles and in one pass, when faces shrink on a grey 480x270 frame
    tiled = smallest_face(make_backend("blazeface"), 480, 270)
    one = smallest_face(make_backend("blazeface-onepass"), 480, 270)
    # then both find faces well under the frame's height, and tiles find smaller ones
    assert tiled is not None and one is not None
    assert 8 <= tiled < one <= 60


def test_cli_prints_the_table_and_writes_json(clip, tmp_path):
    out = tmp_path / "study.json"
    result = CliRunner().invoke(compare_command, [
        "--clip", str(clip(WALKING)), "--backend", "blazeface", "--no-smallest",
        "--max-frames", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "| clip | backend |" in result.output
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["blazeface"]
    assert set(rows[0]) == set(Row.__dataclass_fields__)
    bad = CliRunner().invoke(compare_command, ["--clip", str(clip(WALKING)), "--backend", "x"])
    assert bad.exit_code != 0 and "Invalid value" in bad.output
