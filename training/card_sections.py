"""The parts of a model card (:mod:`training.model_card` renders it): each model's
description and known weaknesses, the crop rule in words, the clean/wild tables, the
before/after table, the demo's share of frames read female, and the data and training
sections from ``meta.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

ABOUT = {
    "compact": """\
One convolutional network with two heads (`training/architectures.py:build_compact`):
64x64 BGR input, a 3x3-conv trunk (stride-2 stem, 32 | 64-64 | 128-128 | 256 channels,
global average pooling), an **age head** with a softmax over whole years 0..100 whose
expected value is the age (DEX, Rothe et al., ICCVW 2015), trained against a Gaussian label
distribution (sigma 2 years; DLDL, Gao et al., IEEE TIP 2017) plus the L1 error of the
expectation (DLDL-v2, Gao et al., IJCAI 2018), and a **gender head** (softmax, male/female).
The classifier averages the predictions of the crop and its mirror image (test-time flip).
The **age interval** is the central 80 % interval of the predicted distribution, widened by
a factor fitted on the validation split so that 80 % of validation ages fall inside.""",
    "seed": """\
The seed thesis' two networks, layer for layer (`training/architectures.py:build_seed`):
80 high x 60 wide gray input; Conv64-Conv64-MaxPool-Dropout0.3-Conv128-Conv128-MaxPool-
Dropout0.3-Conv196-Dropout0.3-Flatten-Dense64, then Dense(1) (age, MAE loss) in one network
and Dense(2) softmax (gender, cross-entropy) in the other. Adam 1e-3, batch 128, early
stopping patience 50, learning rate x0.1 after 12 epochs without improvement. Trained on the
seed's data preparation: **ages 20-50 only**, at most 1,500 images per age (largest files
first). Weights are stored as float16 (loaded as float32). The **age interval** is the
predicted age +- the 80 % quantile of the validation absolute errors (split conformal).""",
}

WEAKNESSES = {
    "compact": """\
* Trained from scratch on about 17k UTKFace images only, for a short CPU budget (see
  "Training"): accuracy is below what ImageNet-pretrained or IMDB-WIKI-pretrained models
  reach; the oldest and youngest bands have few examples and larger errors.
* UTKFace faces are aligned, frontal, mostly well lit portraits; surveillance video
  (small, blurry, turned or tilted faces) is harder. A low-resolution augmentation helps but
  does not close the gap: per-frame predictions fluctuate, smooth them per track.
* Training history (three runs, each starting from the previous one's best weights):
  30 epochs (50 min) on crops from the SSD without a border, which on UTKFace close-ups
  returns the lower-right quadrant of the face (found afterwards, see `docs/models.md`);
  21 min on whole-face crops (SSD with `pad=0.5`); then the run under "Training", with
  head-roll and colour augmentation and weight averaging. About 2 CPU-hours in all.
* Gender on video is weaker than on the test split: see "Video clips with known genders"
  above. It depends on how much of the head the crop shows: the SSD's video boxes take in
  more forehead and hair than its boxes on the chips, and this model reads gender far
  better on such crops (demo clip, BlazeFace faces: 11 of 41 frames all right with crops
  that match the training crops on chips, `common.crops.CHIP_RULE`, 23 with crops that
  match the SSD's video crops, the shipped `SSD_VIDEO_RULE`; 25 with the SSD itself).
  The right woman of the demo clip (older, short light hair, glasses) is the hardest face;
  small blurry faces walking in (35-45 px) are read wrongly for several frames in a row.
* On degraded faces (the wild proxy, "Evaluation") it falls far: age MAE about 12 years,
  gender about 76 %, and it leans female: adult men 68 % right, women 92 % (Asian and
  "other" men about half). `compact-wild`, trained on BlazeFace crops with wild
  augmentation, fixes this on the proxy, and with the dlib second opinion it reads the
  clips' women right too; it replaced this model as the default (see its card).
* Its single-frame interval covers only about 65 % of the true ages of wild faces (it was
  calibrated on clean faces), so a fused track interval cannot reach 80 %: `fusion.rho`
  0.99 keeps it from narrowing.
* Gender is a binary label as annotated in UTKFace; it is an appearance estimate, not an
  identity. Ages are the dataset's labels (real age), biased by its demographics
  (race labels are imbalanced toward White).""",
    "compact-wild": """\
* **The default model, served with the dlib gender second opinion** (weight 0.7 for the
  opinion's log-odds, faces of 24 px or more; "As served" above). Alone it reads two of
  the clips' women male: the demo clip's right woman (older, short light hair, glasses, a
  washed-out face of 45-65 px) on almost every frame, and the built-in demo's astronaut
  (short hair, spacesuit) on two thirds of the frames ("Video clips" and "Before and
  after" show the model alone). With the opinion, end to end with tracking and the
  default CPU cap, the astronaut reads female on 120 of 120 frames and the 720p loop's
  right woman on 220 of 246, and the demo clip's right woman on 36 of 41: both read male
  for the first frames of a track, where few faces have had the opinion. Their person
  events are right (`docs/accuracy-in-the-wild.md`, phase 4).
* Fine-tuned from `compact`'s weights for 48 epochs (4.5 min on one H200) on about 17k
  UTKFace faces, no external pretraining. Children's gender stays weak (0-9: 70.1 % clean
  with the opinion, 63.5 % wild), and so does age in the oldest bands on wild faces
  (60-69 MAE 11.8, 70+ 13.6 years).
* Per group on wild faces (ages 20-69), as served: Asian men 84.9 % gender against
  93.9 % for all adults, more than the issue's 4 points below.
* The 80 % interval is calibrated on clean and wild validation faces together: 14.1 years
  wide on clean test faces and 20.4 on wild ones (the issue's 10 years is not reached);
  fusing a track narrows it little (rho 0.68, see above).
* The wild proxy is a simulation of detections (`training/wild.py`); the box error is
  jittered, not re-detected, and low contrast is in training only.
* Gender is a binary label as annotated in UTKFace; it is an appearance estimate, not an
  identity. Ages are the dataset's labels (real age), biased by its demographics
  (race labels are imbalanced toward White).""",
    "seed": """\
* Trained on ages 20-50 only (the seed's preparation): it cannot predict children or older
  adults, so its errors outside 20-50 are large by design; compare it with `compact` on the
  20-29 .. 40-49 bands.
* Large (2.4 M parameters per network, most in the Dense(64) after Flatten) and slow on CPU;
  trained from scratch for the short budget under "Training" on one CPU thread shared with
  another job, far from convergence (the thesis trained until early stopping with patience
  50 on a GPU).
* Same dataset biases as `compact` (UTKFace demographics, frontal aligned faces); no
  roll augmentation (the serving crops are cut upright by the eye line).""",
}


def rule_text(meta: dict) -> str:
    """How the model's crop rule cuts a face, in words (:class:`common.crops.CropRule`)."""
    from common.crops import SSD_VIDEO_RULE, CropRule

    rule = CropRule.from_meta(meta)
    where = ("above" if rule.shift_down < 0 else "below")
    own = ("`meta.json` `crop_rule`" if meta.get("crop_rule") else
           "`common.crops.SSD_VIDEO_RULE`, the default for models trained on SSD crops: it "
           "reproduces the SSD's video crops this model was served before" if
           rule == SSD_VIDEO_RULE else "the default rule")
    return (f"{rule.width:g} x {rule.height:g} BlazeFace box sides, centred "
            f"{abs(rule.shift_down):g} sides {where} the box centre ({own})")


def pct(v) -> str:
    """A fraction as a percentage with one decimal, or ``–`` when missing."""
    return "–" if v is None else f"{100 * v:.1f} %"


def num(v) -> str:
    """A number with two decimals, or ``–`` when missing."""
    return "–" if v is None else f"{v:.2f}"


def wild_tables(w: dict) -> list[str]:
    """Markdown tables of a :func:`training.wild.evaluate_wild` report: clean / wild per
    group (overall and adults, per age band, per race x gender, per face size)."""
    head = ["| group | n | age MAE clean / wild | gender clean / wild | ±1 band clean / wild "
            "| 80 % interval coverage (width) clean / wild |", "|---|---:|---:|---:|---:|---:|"]

    def row(name, c, x):
        """One table row: ``name``, face count, then clean / wild age MAE, gender and band
        accuracy."""
        return (f"| {name} | {c['n']} | {num(c['age_mae'])} / {num(x['age_mae'])} | "
                f"{pct(c['gender_accuracy'])} / {pct(x['gender_accuracy'])} | "
                f"{pct(c['within_one_band'])} / {pct(x['within_one_band'])} | "
                f"{pct(c['interval_coverage'])} ({num(c['interval_width'])}) / "
                f"{pct(x['interval_coverage'])} ({num(x['interval_width'])}) |")

    c, x = w["clean"], w["wild"]
    lines = head + [row("**overall**", c["overall"], x["overall"]),
                    row("adults 20-69", c["adults_20_69"], x["adults_20_69"])]
    lines += [row(b, c["per_band"][b], x["per_band"][b]) for b in c["per_band"]]
    lines += ["", "Per race x gender (UTKFace labels), ages 20-69 and all ages:", ""] + head
    lines += [row(f"{g}, 20-69", c["per_race_gender_adults"][g], x["per_race_gender_adults"][g])
              for g in c["per_race_gender_adults"]]
    lines += [row(f"{g}, all", c["per_race_gender"][g], x["per_race_gender"][g])
              for g in c["per_race_gender"]]
    sizes = x.get("per_face_size") or {}
    if sizes:
        lines += ["", "Wild versions per face size (box width after downscaling): " + "; ".join(
            f"{k} (n {v['n']}): MAE {num(v['age_mae'])}, gender {pct(v['gender_accuracy'])}"
            for k, v in sizes.items()) + "."]
    return lines


def before_after(now: dict, before: dict, video_now: dict | None, video_before: dict | None,
                 demo_now: dict | None, demo_before: dict | None) -> list[str]:
    """A before/after markdown table of the headline numbers (wild reports, clip checks,
    demo share)."""
    def get(r, part, group, key):
        """The metric ``key`` of ``group`` in ``part`` of report ``r``."""
        return r[part][group][key]

    rows = [("age MAE, clean", "clean", "overall", "age_mae", num),
            ("gender, clean", "clean", "overall", "gender_accuracy", pct),
            ("gender 20-69, clean", "clean", "adults_20_69", "gender_accuracy", pct),
            ("80 % interval coverage (width), clean", "clean", "overall", None, None),
            ("age MAE, wild", "wild", "overall", "age_mae", num),
            ("gender, wild", "wild", "overall", "gender_accuracy", pct),
            ("gender 20-69, wild", "wild", "adults_20_69", "gender_accuracy", pct),
            ("±1 decade band, wild", "wild", "overall", "within_one_band", pct),
            ("80 % interval coverage (width), wild", "wild", "overall", None, None)]
    lines = ["| | before | after |", "|---|---:|---:|"]
    for name, part, group, key, fmt in rows:
        if key is None:
            cell = [f"{pct(get(r, part, group, 'interval_coverage'))} "
                    f"({num(get(r, part, group, 'interval_width'))})" for r in (before, now)]
        else:
            cell = [fmt(get(r, part, group, key)) for r in (before, now)]
        lines.append(f"| {name} | {cell[0]} | {cell[1]} |")
    worst = [min(r["wild"]["per_race_gender_adults"].items(),
                 key=lambda kv: kv[1]["gender_accuracy"]) for r in (before, now)]
    lines.append("| weakest adult group, wild gender | " + " | ".join(
        f"{g} {pct(v['gender_accuracy'])}" for g, v in worst) + " |")
    for clip in (video_now or {}):
        if clip in (video_before or {}):
            cells = []
            for v in (video_before[clip], video_now[clip]):
                per = ", ".join(f"{100 * a:.0f}" for a in v["per_position_accuracy"])
                cells.append(f"{v['frames_all_correct']} / {v['frames']} ({per} %)")
            lines.append(f"| `{clip}`: frames all right (per person) | {cells[0]} | "
                         f"{cells[1]} |")
    if demo_now and demo_before:
        lines.append(f"| built-in demo (`agegender run`, one woman): frames read female | "
                     f"{demo_before['female']} / {demo_before['frames']} | "
                     f"{demo_now['female']} / {demo_now['frames']} |")
    return lines


def served_table(alone: dict, served: dict) -> list[str]:
    """A markdown table of gender as the classifier serves it: the model alone against
    the model with the gender second opinion (two :func:`training.wild.evaluate_wild`
    reports of the same faces; age is the model's in both)."""
    lines = ["| gender | model alone | with the second opinion |", "|---|---:|---:|"]
    for name, part, group in (("clean", "clean", "overall"),
                              ("clean, ages 20-69", "clean", "adults_20_69"),
                              ("wild", "wild", "overall"),
                              ("wild, ages 20-69", "wild", "adults_20_69")):
        lines.append(f"| {name} | {pct(alone[part][group]['gender_accuracy'])} | "
                     f"**{pct(served[part][group]['gender_accuracy'])}** |")
    for band in served["wild"]["per_band"]:
        lines.append(f"| wild, {band} | {pct(alone['wild']['per_band'][band]['gender_accuracy'])}"
                     f" | {pct(served['wild']['per_band'][band]['gender_accuracy'])} |")
    for group, v in served["wild"]["per_race_gender_adults"].items():
        lines.append(f"| wild, {group} (20-69) | "
                     f"{pct(alone['wild']['per_race_gender_adults'][group]['gender_accuracy'])}"
                     f" | {pct(v['gender_accuracy'])} |")
    return lines


def demo_share(events_path: Path) -> dict:
    """Frames of an ``agegender run`` demo (one woman) read female: ``{"frames",
    "with_face", "female"}`` from its ``events.jsonl``."""
    frames = with_face = female = 0
    for line in events_path.read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        frames += 1
        faces = [f for f in e.get("faces", []) if f.get("gender")]
        if faces:
            with_face += 1
            best = max(faces, key=lambda f: (f["box"][2] - f["box"][0]))
            female += best["gender"] == "female"
    return {"frames": frames, "with_face": with_face, "female": female}


def training_lines(meta: dict, t: dict) -> list[str]:
    """The "Data and split" and "Training" sections."""
    if "cache_meta" not in t:          # training.train (SSD crops, TensorFlow)
        minutes = t.get("seconds_this_run", 0) / 60.0
        return [
            "## Data and split", "",
            f"* Dataset: UTKFace, `{t.get('dataset', '?')}` (21,351 aligned and cropped faces "
            "of the project's development portion; 3 malformed names skipped).",
            "* Faces re-detected with the pipeline's SSD detector (`SSDDetector`, pipeline "
            "defaults plus a 50 % border around each close-up, `training.cache.DETECT_PAD`); "
            "the highest-confidence box is the crop; "
            f"{t.get('no_face_dropped', '?')} image(s) with no detected face dropped.",
            "* Split: 80/10/10 by SHA-1 of the file name (`training.datasets.split_of`); "
            f"{t.get('train_images', '?')} training and {t.get('val_images', '?')} validation "
            "crops; the test split was never used for training or calibration.", "",
            "## Training", "",
            f"* {t.get('epochs_run', '?')} epochs in {minutes:.0f} min of wall time "
            f"(batch {t.get('batch_size')}, Adam {t.get('lr')}, augmentation "
            f"{'on' if t.get('augment') else 'off'}, age re-weighting "
            f"{'on' if t.get('balance') else 'off'}) on {t.get('hardware', '?')}, "
            f"TensorFlow {t.get('tensorflow', '?')}, on a machine shared with other jobs.",
            *([f"* Exported weights: {t['weights']}."] if t.get("weights") else []),
            *([f"* Started from `{Path(t['init_weights']).name}` of an earlier run (see "
               "\"Known weaknesses\" for its history)."] if t.get("init_weights") else []),
            "* Training curve: `curve.png`. Reproduce: see `docs/models.md`.", ""]
    cm = t["cache_meta"]
    tp = cm.get("train_params", {})
    no_face = cm.get("no_face", {})
    dev = t.get("device") or {}
    return [
        "## Data and split", "",
        f"* Dataset: UTKFace, `{cm.get('dataset', '?')}` (21,351 aligned and cropped faces of "
        "the project's development portion; 3 malformed names skipped).",
        "* Faces detected with the serving detector, BlazeFace (`common/detectors/blazeface.py`)"
        ", on each chip centred in a black border of half its side (`training.wild."
        "blazeface_boxes`); the highest-confidence face's box and six keypoints are mapped "
        "back to the chip, and its crop is cut from the chip by the crop rule above "
        "(`common.crops.cut_crop`; parts beyond the chip repeat its edge pixels, as in "
        f"video frames). Images without a face: {no_face.get('train', '?')} train, "
        f"{no_face.get('val', '?')} val.",
        "* Split: 80/10/10 by SHA-1 of the file name (`training.datasets.split_of`); "
        f"{t.get('train_faces', '?')} training and {t.get('val_faces', '?')} validation faces; "
        "the test split was never used for training or calibration.",
        f"* Cache (`python -m training.distill cache --no-teacher --k-aug {cm.get('k_aug')} "
        "--rule ...`): per face its clean network input (cut from the full-resolution chip) "
        f"and a {cm.get('size')}-px WebP source from which {cm.get('k_aug', 1) - 1} seeded wild "
        "augmentations are regenerated during training (faces "
        f"{tp.get('face_px', ['?', '?'])[0]:g}-{tp.get('face_px', ['?', '?'])[1]:g} px, JPEG "
        f"{tp.get('jpeg_quality', ['?', '?'])[0]}-{tp.get('jpeg_quality', ['?', '?'])[1]}, blur, "
        f"colour cast, gray, occlusion, box scale {tp.get('box_scale', ['?', '?'])[0]:g}-"
        f"{tp.get('box_scale', ['?', '?'])[1]:g} and shift {tp.get('box_shift', '?')}).", "",
        "## Training", "",
        f"* `training.distill train`: {t.get('epochs_run')} epochs, batch {t.get('batch_size')}, "
        f"Adam {t.get('lr')} on a cosine schedule, clean crop with probability "
        f"{t.get('p_clean')} else one of the wild augmentations, random mirror, true labels "
        f"only (teacher weights alpha {t.get('alpha')}, beta {t.get('beta')}), age re-weighting,"
        f" started from `{Path(t['init']).name if t.get('init') else 'scratch'}`"
        + (" (the previous compact)" if t.get("init") else "") + ".",
        f"* Weights: {t.get('weights')} (the last epoch's or the averaged weights of the last "
        "40 % of the run, BatchNorm statistics re-estimated on clean or mixed crops; the "
        "best of the four on clean + wild validation faces).",
        f"* Cost: {t.get('seconds_total', 0):.0f} s of wall time in the training process "
        f"({t.get('seconds_data', 0):.0f} s of it materialising the augmentations) on "
        f"{t.get('hardware', '?')}, Keras {t.get('keras')} on {t.get('backend')}"
        + (f"; {dev['lease_seconds']:.0f} s of lent GPU time in all ({dev.get('note', '')})"
           if dev.get("lease_seconds") else "") + ".",
        "* Training curve: `curve.png` (loss, validation age MAE and gender accuracy on clean "
        "and wild-proxy faces per epoch). Reproduce: see `docs/models.md`.", ""]
