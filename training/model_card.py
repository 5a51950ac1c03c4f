"""Write ``models/<name>/MODEL_CARD.md`` from ``meta.json``, an evaluation report and a
video check.

``python -m training.model_card --model compact`` runs ``evaluate`` on this project's test
split and the gender check on every clip of ``ground_truth.json`` with known genders, saves
``eval_test.json`` / ``video_check.json`` next to the weights and renders the card.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.evaluate import markdown_report

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
  Retraining on BlazeFace crops cut by one rule for chips and video removes the mismatch.
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


def _rule_text(meta: dict) -> str:
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


def render(model_dir: Path, report: dict, video: dict | None) -> str:
    """The model card markdown for ``model_dir`` (``meta.json`` + reports; ``video`` maps
    clip names to :func:`training.video_check.check_clip` results plus ``"expect"``)."""
    meta = json.loads((model_dir / "meta.json").read_text())
    kind = meta["kind"]
    t = meta.get("training", {})
    iv = meta.get("interval", {})
    onnx = meta.get("onnx") or {}
    files = ", ".join(f"`{f}` ({(model_dir / f).stat().st_size / 1e6:.1f} MB)"
                      for f in [*meta["files"].values(), *(onnx.get("files") or {}).values()])
    spec = meta["input"]
    minutes = t.get("seconds_this_run", 0) / 60.0
    lines = [
        f"# Model card: `{meta['name']}`",
        "",
        ABOUT[kind],
        "",
        f"Files: {files}, `meta.json`. Input: {spec['height']}x{spec['width']}x"
        f"{spec['channels']} ({spec.get('color', '')}), pixels 0..255, preprocessing "
        "`common/models/preprocess.py:resize_crop` (shared by training and serving).",
        "",
        f"Serving crops (`common/crops.py:face_crop`, shared by the classifier, `predict` "
        "and the clip checks): the default detector, BlazeFace, gives six keypoints per "
        "face, and the face is cut upright by its eye line in one affine warp, "
        f"{_rule_text(meta)}. Faces without keypoints (the SSD and Haar backends) are "
        "their box widened to "
        + (f"`crop_aspect` {meta['crop_aspect']} (median width/height of the training "
           "boxes) about its centre (`common/geometry.py:widen_box`)."
           if meta.get("crop_aspect") else "nothing (cut as detected).")
        + " The test-split evaluation uses the cached training-style crops.",
        "",
        *([f"The classifier runs the ONNX export on ONNX Runtime (`agegender export`; its "
           f"outputs differ from Keras by at most {onnx['max_abs_diff']:.1e} on "
           f"{onnx['checked_on']} inputs, opset {onnx['opset']}); Keras remains "
           "the runtime for GPUs.", ""] if onnx else []),
        "## Data and split",
        "",
        f"* Dataset: UTKFace, `{t.get('dataset', '?')}` (21,351 aligned and cropped faces of "
        "the project's development portion; 3 malformed names skipped).",
        "* Faces re-detected with the pipeline's SSD detector (`SSDDetector`, pipeline "
        "defaults plus a 50 % border around each close-up, `training.cache.DETECT_PAD`); "
        "the highest-confidence box is the crop; "
        f"{t.get('no_face_dropped', '?')} image(s) with no detected face dropped.",
        "* Split: 80/10/10 by SHA-1 of the file name (`training.datasets.split_of`); "
        f"{t.get('train_images', '?')} training and {t.get('val_images', '?')} validation "
        f"crops; the test split below ({report['evaluated']} crops) was never used for "
        "training or calibration.",
        "",
        "## Training",
        "",
        f"* {t.get('epochs_run', '?')} epochs in {minutes:.0f} min of wall time "
        f"(batch {t.get('batch_size')}, Adam {t.get('lr')}, augmentation "
        f"{'on' if t.get('augment') else 'off'}, age re-weighting "
        f"{'on' if t.get('balance') else 'off'}) on {t.get('hardware', '?')}, "
        f"TensorFlow {t.get('tensorflow', '?')}, on a machine shared with other jobs.",
        *([f"* Exported weights: {t['weights']}."] if t.get("weights") else []),
        *([f"* Started from `{Path(t['init_weights']).name}` of an earlier run (see "
           "\"Known weaknesses\" for its history)."] if t.get("init_weights") else []),
        "* Training curve: `curve.png`. Reproduce: see `docs/models.md`.",
        "",
        "## Evaluation on this project's test split",
        "",
        f"`agegender evaluate --model {meta['name']} --split test` "
        f"({report['evaluated']} faces):",
        "",
        markdown_report(report),
        "",
        f"Age interval: nominal coverage {100 * iv.get('coverage', 0):.0f} %, validation "
        f"coverage {100 * iv.get('val_coverage', 0):.1f} %, **test coverage "
        f"{100 * (report['overall']['interval_coverage'] or 0):.1f} %** (mean width "
        f"{report['overall']['interval_width']} years).",
        "",
    ]
    if video:
        lines += [
            "## Video clips with known genders",
            "",
            f"`python -m training.video_check --model {meta['name']} --clip CLIP --expect "
            "G1,G2,..`: every frame's faces found by the default detector (BlazeFace), cut "
            "as served, sorted left to right and compared with the genders in "
            "`../shared/videos/ground_truth.json` (the people are adults; true ages "
            "unknown). \"Frames all correct\" counts frames with every face found and "
            "every gender right (percentage of all frames).",
            "",
            "| clip | frames with all faces found | frames all correct | per-person accuracy "
            "(left to right) | mean age per person |",
            "|---|---:|---:|---|---|",
        ]
        for clip, v in video.items():
            per = ", ".join(f"{g} {100 * a:.0f} %" for g, a in
                            zip(v.get("expect", []), v["per_position_accuracy"]))
            lines.append(
                f"| `{clip}` | {v['frames_with_n_faces']} / {v['frames']} | "
                f"**{v['frames_all_correct']} ({100 * v['frames_all_correct'] / v['frames']:.0f} "
                "%)** | "
                f"{per} | {v['mean_age_per_position']} |")
        lines.append("")
    lines += [
        "## Known weaknesses",
        "",
        WEAKNESSES[kind],
        "",
        "## License",
        "",
        "Trained on UTKFace (Zhang, Song and Qi, \"Age Progression/Regression by Conditional "
        "Adversarial Autoencoder\", CVPR 2017), which is available for **non-commercial "
        "research purposes only**; these weights inherit that restriction. No images or "
        "arrays derived from them are in this repository.",
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--model", default="compact", show_default=True)
@click.option("--dataset", default=None, help="Default: the dataset the model was trained on.")
@click.option("--clip-dir", default=None, help="Folder with the clips and ground_truth.json "
              "[default: ../shared/videos]; every clip with known genders is checked.")
@click.option("--threads", type=int, default=None)
def main(model, dataset, clip_dir, threads):
    """Evaluate on the test split, check the clips with known genders, write MODEL_CARD.md."""
    from common.models import load_model
    from training.defaults import SHARED
    from training.evaluate import evaluate
    from training.video_check import check_clip

    m = load_model(model, threads=threads)
    dataset = dataset or m.meta["training"]["dataset"]
    report = evaluate(m, dataset, split="test", progress=False)
    (m.directory / "eval_test.json").write_text(json.dumps(report, indent=2))
    videos = Path(clip_dir) if clip_dir else SHARED / "videos"
    video = {}
    truth = videos / "ground_truth.json"
    if truth.is_file():
        for name, facts in json.loads(truth.read_text()).items():
            people = facts.get("people_left_to_right") if isinstance(facts, dict) else None
            if people and (videos / name).is_file():
                expect = [p["gender"] for p in people]
                video[name] = {"expect": expect,
                               **check_clip(m, str(videos / name), expect)}
        (m.directory / "video_check.json").write_text(json.dumps(video, indent=2))
    (m.directory / "MODEL_CARD.md").write_text(render(m.directory, report, video))
    click.echo(json.dumps({"report": report["overall"], "video": video}, indent=2))


if __name__ == "__main__":
    main()
