"""``agegender predict IMG_OR_DIR...``: one-shot age and gender for image files.

Prints one JSON object per detected face on stdout, one line each::

    {"file": str, "box": [x1, y1, x2, y2] (int pixels, clipped), "confidence": float (0..1),
     "age": float (years), "age_range": [low, high] (years) or null, "gender":
     "female" | "male", "gender_confidence": float (0..1)}

Faces are found by the default detector, BlazeFace (``--detector-backend``): photos larger
than the detector's tiles are read on a pyramid of tiles (a 12000x9000 photo: three tile
levels, faces from about 60 px wide), and each face is cut from the original image by
the model's crop rule (:func:`common.crops.face_crop`). Folders are expanded to their
image files (by suffix, sorted, not recursive). Odd images
(grayscale, gray + alpha, RGBA, 16-bit, 1x1) are normalised to ``(H, W, 3) uint8`` BGR
(:func:`common.images.to_bgr8`); unreadable files are reported on stderr and the
batch goes on.

Exit codes: 0 every file was read (with or without faces); 1 at least one file could not
be read or processed (each named on stderr; the faces of the others are printed), or no
image file was given; 2 the model or detector cannot be used (nothing is read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from common.detectors import BACKENDS, DEFAULT_BACKEND, PHOTO_PAD  # names only: no runtime imported
from common.models.registry import DEFAULT_MODEL
from common.process import MAX_FILE_PIXELS

#: Largest image decoded (pixels): :data:`common.process.MAX_FILE_PIXELS` (2**27, e.g. a
#: 12000x9000 photo, 108 Mpx, fits). Photos are not sent over the wire, so the services'
#: cap (8192x8192) does not apply; a header announcing more is refused before any
#: allocation.
MAX_PIXELS = MAX_FILE_PIXELS


def expand(paths: list[Path]) -> list[Path]:
    """Files to process: each file as given, each folder's image files (sorted)."""
    from common.images import IMAGE_SUFFIXES
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir()
                          if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def face_record(path: Path, det, pred: dict) -> dict:
    """The JSON object of one face (see the module docstring): the file name, then the
    face's JSON form (:func:`common.faces.face_json`) of a
    :class:`common.geometry.Detection` and its model prediction."""
    from common.faces import classified, face_json

    face = classified({"box": det.box, "confidence": det.confidence}, pred)
    return {"file": str(path), **face_json(face)}


class Predictor:
    """Detector + lazily loaded age/gender model, batching crops across images.

    Args:
        model: model name or folder (``load_model``).
        detector_backend: a name of :data:`common.detectors.BACKENDS`.
        confidence: minimum detection confidence (0..1); ``None``: the backend's default.
        threads: thread budget (OpenCV, ONNX Runtime or TensorFlow).
        batch: crops per model call.
        emit: called with each face record.
        pad: border for close-ups, fraction of the image's longer side (SSD: added around
            the image; BlazeFace: one more whole-image pass inside it).
        runtime: ``auto``, ``onnx`` or ``keras`` (``load_model``).
        models_dir: folder of the named models (``None``: the registry's search,
            :func:`common.models.registry.models_dir`).
        second_opinion: ``"none"`` or ``"dlib"`` (the classifier's gender second opinion,
            :mod:`common.models.dlib_descriptor`, on crops cut by its own rule).

    Raises:
        DlibUnavailable (a RuntimeError): ``"dlib"`` without dlib installed.
        FileNotFoundError: no such model.
        ValueError: the runtime is unavailable for it, or a bad detector setting.
    """

    def __init__(self, model: str, detector_backend: str, confidence: float | None,
                 threads: int, batch: int, emit, pad: float = 0.5, runtime: str = "auto",
                 models_dir: str | Path | None = None, second_opinion: str = "none"):
        from common.detectors import make_detector
        from common.models import choose_runtime, read_meta, resolve_model_dir
        folder = resolve_model_dir(model, models_dir)  # fail now, not at the first face
        choose_runtime(folder, read_meta(folder), runtime)
        self.models_dir = models_dir
        self.model_name = model
        self.runtime = runtime
        self.threads = threads
        self.batch = batch
        self.emit = emit
        # Photos are often close-ups (a face filling the image), which both detectors only
        # find inside a border (their pad setting).
        self.detector = make_detector(detector_backend, confidence=confidence, threads=threads,
                                      pad=pad)
        from common.models.dlib_descriptor import load_opinion
        self.opinion = load_opinion(second_opinion)  # fail now (no dlib, no head file)
        self._model = None
        self._pending: list[tuple[Path, object, object]] = []

    def add(self, path: Path, image) -> int:
        """Detect faces in a ``(H, W, 3) uint8`` BGR image and queue them (the crops are
        cut from it at :meth:`flush` by the model's rule, :func:`common.crops.face_crop`).

        Returns:
            Number of faces found.
        """
        dets = self.detector.detect(image)
        self._pending += [(path, d, image) for d in dets]
        if len(self._pending) >= self.batch:
            self.flush()
        return len(dets)

    def flush(self) -> None:
        """Classify every queued crop and emit one record per face, in order."""
        if not self._pending:
            return
        if self._model is None:
            from common.models import load_model
            self._model = load_model(self.model_name, threads=self.threads,
                                     runtime=self.runtime, models=self.models_dir)
        from common.crops import face_crop
        items, self._pending = self._pending, []
        m = self._model
        for i in range(0, len(items), self.batch):
            chunk = items[i:i + self.batch]
            preds = m.predict([face_crop(image, d.box, d.keypoints, m.crop_aspect, m.crop_rule)
                               for _, d, image in chunk])
            if self.opinion is not None:
                from common.models.dlib_descriptor import (combine_gender,
                                                           logits_of_large_faces,
                                                           opinion_weight)
                op = self.opinion
                # faces narrower than the opinion's min_face_px keep the model's answer
                logits = logits_of_large_faces(
                    op, [face_crop(image, d.box, d.keypoints, op.crop_aspect, op.rule)
                         for _, d, image in chunk], [d.box[2] - d.box[0] for _, d, _ in chunk])
                weight = opinion_weight(m.meta, op.name)
                preds = [combine_gender(p, float(z), weight) for p, z in zip(preds, logits)]
            for (path, det, _), pred in zip(chunk, preds):
                self.emit(face_record(path, det, pred))


@click.command(name="predict", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Model name in the models folder or a model folder.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the named models [default: $AGEGENDER_MODELS_DIR, else the "
                   "checkout's models/ or the installed package's].")
@click.option("--detector-backend", type=click.Choice(list(BACKENDS)),
              default=DEFAULT_BACKEND, show_default=True, help="Face detector.")
@click.option("--confidence", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Minimum face detection confidence [default: the backend's own: "
                   "blazeface 0.4, ssd 0.5].")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Thread budget (OpenCV, ONNX Runtime or TensorFlow).")
@click.option("--runtime", type=click.Choice(["auto", "onnx", "keras"]), default="auto",
              show_default=True, help="Model runtime (auto: ONNX Runtime when the model "
              "has an ONNX export, else Keras).")
@click.option("--batch", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Face crops per model call.")
@click.option("--pad", type=click.FloatRange(0.0, 2.0), default=PHOTO_PAD, show_default=True,
              help="Black border around each image for close-ups (a face filling the "
                   "photo), as a fraction of its longer side: BlazeFace reads the image once "
                   "more inside it (small faces are still found); the SSD reads the image "
                   "only inside it (use 0 for wide SSD photos with small faces).")
@click.option("--max-pixels", type=click.IntRange(1, 2 ** 31), default=None,
              help="Largest image decoded (width x height); larger ones are reported and "
              f"skipped [default: $OPENCV_IO_MAX_IMAGE_PIXELS if set, else {MAX_PIXELS}].")
@click.option("--second-opinion", type=click.Choice(["none", "dlib"]), default="dlib",
              show_default=True, help="Gender second opinion: 'dlib' merges dlib's face "
              "descriptor + the models/dlib-gender head with the model (weighted mean of "
              "logits, the model's weight; faces under 24 px keep the model's answer).")
def command(paths, model, models_dir, detector_backend, confidence, threads, batch, pad,
            runtime, max_pixels, second_opinion):
    """Age and gender of every face in image files or folders: one JSON object per face
    per line on stdout; problems go to stderr and the batch goes on. Exit code 0: every
    file read; 1: some file failed (or no image file found); 2: the model cannot be used,
    or a usage error (no path given)."""
    import os

    from common.process import limit_image_decoding, set_thread_budget
    if max_pixels is not None:  # the option wins over the environment
        os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_pixels)
    limit_image_decoding(MAX_PIXELS)  # before the first decode; photos may exceed 8192x8192
    set_thread_budget(threads)  # before any runtime is imported
    from common.images import BadImage, read_image

    files = expand(list(paths))
    if not files:
        click.echo("error: no image files found in the given paths", err=True)
        raise SystemExit(1)

    def emit(record: dict) -> None:
        """Write one face record as a JSON line to stdout."""
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    try:
        predictor = Predictor(model, detector_backend, confidence, threads, batch, emit, pad,
                              runtime, models_dir, second_opinion)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2)
    import cv2
    read = faces = failed = 0
    for path in files:
        try:
            image = read_image(path)
        except BadImage as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        except (cv2.error, OSError, ValueError, MemoryError) as exc:
            # e.g. a header announcing more pixels than the decoding cap
            click.echo(f"error: {path}: cannot decode ({type(exc).__name__}: "
                       f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''})",
                       err=True)
            failed += 1
            continue
        read += 1
        try:
            n = predictor.add(path, image)
        except (cv2.error, ValueError) as exc:
            click.echo(f"error: {path}: detection failed ({exc})", err=True)
            failed += 1
            continue
        faces += n
        if n == 0:
            click.echo(f"{path}: no face found ({image.shape[1]}x{image.shape[0]})", err=True)
    try:
        predictor.flush()
    except (FileNotFoundError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2)
    click.echo(f"{read} of {len(files)} images read, {faces} face{'' if faces == 1 else 's'}"
               + (f", {failed} failed" if failed else ""), err=True)
    raise SystemExit(1 if failed or not read else 0)
