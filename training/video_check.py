"""Check a model's genders on a clip with known people, left to right.

``python -m training.video_check --model compact --clip PATH --expect female,male,female``
detects faces with the pipeline's default detector (BlazeFace, as the detector service
runs it) on every frame, cuts each face as the classifier does
(:func:`common.crops.face_crop`: upright by the eye line by the model's ``crop_rule``
when the detector gives keypoints, else the box widened to the model's ``crop_aspect``),
sorts the faces by their box's left edge ``x1`` and compares the predicted genders with
the expected order. Prints JSON: frames, frames with the expected number of faces, frames
whose genders all match (and their fraction of the frames with the expected number of
faces), per-position accuracy and mean age.
"""

from __future__ import annotations

import json

import click
import cv2

from common.crops import face_crop
from common.detectors import BACKENDS, DEFAULT_BACKEND


def check_clip(model, clip: str, expect: list[str], detector=None) -> dict:
    """Gender order check of ``model`` on ``clip``.

    Args:
        model: an :class:`common.models.AgeGenderModel`.
        clip: video file path.
        expect: genders left to right (``"female"``/``"male"``).
        detector: a detector (default: the default backend with the detector service's
            defaults, :func:`common.detectors.make_detector`).

    Returns:
        ``{"frames", "frames_with_n_faces", "frames_all_correct", "fraction_correct"
        (of frames with n faces), "per_position_accuracy", "mean_age_per_position"}``.

    Raises:
        FileNotFoundError: the clip cannot be opened.
    """
    if detector is None:
        from common.detectors import make_detector
        detector = make_detector()
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open clip {clip}")
    n = len(expect)
    frames = with_n = all_ok = 0
    pos_ok = [0] * n
    ages = [[] for _ in range(n)]
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames += 1
            dets = sorted(detector.detect(frame), key=lambda d: d.box[0])
            if len(dets) != n:
                continue
            with_n += 1
            preds = model.predict([face_crop(frame, d.box, d.keypoints, model.crop_aspect,
                                             model.crop_rule) for d in dets])
            genders = [p["gender"] for p in preds]
            all_ok += genders == list(expect)
            for i, (g, e) in enumerate(zip(genders, expect)):
                pos_ok[i] += g == e
                ages[i].append(preds[i]["age"])
    finally:
        cap.release()
    return {"frames": frames, "frames_with_n_faces": with_n, "frames_all_correct": all_ok,
            "fraction_correct": round(all_ok / with_n, 3) if with_n else None,
            "per_position_accuracy": [round(k / with_n, 3) if with_n else None for k in pos_ok],
            "mean_age_per_position": [round(sum(a) / len(a), 1) if a else None for a in ages]}


@click.command()
@click.option("--model", default="compact", show_default=True)
@click.option("--clip", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--expect", default="female,male,female", show_default=True,
              help="Genders left to right, comma separated.")
@click.option("--detector-backend", type=click.Choice(list(BACKENDS)),
              default=DEFAULT_BACKEND, show_default=True, help="Face detector.")
@click.option("--threads", type=int, default=None)
def main(model, clip, expect, detector_backend, threads):
    """Print the gender-order check as JSON."""
    from common.detectors import make_detector
    from common.models import load_model

    m = load_model(model, threads=threads)
    det = make_detector(detector_backend, threads=threads)
    click.echo(json.dumps({"model": m.name, "clip": clip, "detector": detector_backend,
                           **check_clip(m, clip, [e.strip() for e in expect.split(",")],
                                        det)}, indent=2))


if __name__ == "__main__":
    main()
