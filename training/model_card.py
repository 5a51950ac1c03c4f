"""Write ``models/<name>/MODEL_CARD.md`` from ``meta.json``, evaluation reports and a
video check.

``python -m training.model_card --model compact`` runs ``evaluate`` on this project's test
split (cached SSD crops), the clean vs wild-proxy evaluation of the same split as served
(BlazeFace boxes, the model's crop rule; :mod:`training.wild`) and the gender check on
every clip of ``ground_truth.json`` with known genders, saves ``eval_test.json`` /
``eval_wild.json`` / ``video_check.json`` next to the weights and renders the card. 
``--served`` adds the same split as served with the dlib gender second opinion
(``eval_served.json``). ``--before MODEL`` adds a before/after table from another model folder's reports
(``eval_wild.json``, ``video_check.json``, ``demo_check.json``); ``--demo-events`` adds the
built-in demo's share of frames read female (``events.jsonl`` of ``agegender run --out
DIR``, saved as ``demo_check.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from common.models.registry import DEFAULT_MODEL

from training.card_sections import (ABOUT, WEAKNESSES, before_after, demo_share, num, pct,
                                    rule_text, served_table, training_lines, wild_tables)
from training.evaluate import markdown_report


def render(model_dir: Path, report: dict, video: dict | None, wild: dict | None = None,
           demo: dict | None = None, before: Path | None = None,
           served: dict | None = None) -> str:
    """The model card markdown for ``model_dir`` (``meta.json`` + reports; ``video`` maps
    clip names to :func:`training.video_check.check_clip` results plus ``"expect"``;
    ``wild`` a :func:`training.wild.evaluate_wild` report; ``demo`` a
    :func:`demo_share` result; ``before`` another model folder with the same reports;
    ``served`` the :func:`training.wild.evaluate_served` report with the dlib second
    opinion, ``eval_served.json``)."""
    meta = json.loads((model_dir / "meta.json").read_text())
    kind = meta["kind"]
    t = meta.get("training", {})
    iv = meta.get("interval", {})
    onnx = meta.get("onnx") or {}
    files = ", ".join(f"`{f}` ({(model_dir / f).stat().st_size / 1e6:.1f} MB)"
                      for f in [*meta["files"].values(), *(onnx.get("files") or {}).values()])
    spec = meta["input"]
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
        f"{rule_text(meta)}. Faces without keypoints (the SSD and Haar backends) are "
        "their box widened to "
        + (f"`crop_aspect` {meta['crop_aspect']} (median width/height of the training "
           "boxes) about its centre (`common/geometry.py:widen_box`)."
           if meta.get("crop_aspect") else "nothing (cut as detected).")
        + (" The test-split evaluation below cuts the test faces as served (BlazeFace, "
           "this rule) and, for comparison with earlier models, uses the cached SSD crops."
           if wild else " The test-split evaluation uses the cached training-style crops."),
        "",
        *([f"The classifier runs the ONNX export on ONNX Runtime (`agegender export`; its "
           f"outputs differ from Keras by at most {onnx['max_abs_diff']:.1e} on "
           f"{onnx['checked_on']} inputs, opset {onnx['opset']}); Keras remains "
           "the runtime for GPUs.", ""] if onnx else []),
        *training_lines(meta, t),
        "## Evaluation on this project's test split",
        "",
    ]
    if wild:
        lines += [
            f"As served: {wild['n']} test faces found by BlazeFace ({wild['no_face']} without a "
            "face), each cut by the crop rule (*clean*) and as a wild-proxy detection "
            "(*wild*: the face made small, blurred, JPEG-compressed, colour-cast, occluded, "
            "with box error; `training/wild.py`, seeded per face). `agegender evaluate "
            f"--model {meta['name']} --split test --wild`:", "",
            *wild_tables(wild), ""]
    lines += [
        f"Cached SSD crops (`agegender evaluate --model {meta['name']} --split test`, "
        f"{report['evaluated']} faces; the SSD box widened to `crop_aspect`, the crops "
        "the previous models were trained on):",
        "",
        markdown_report(report),
        "",
        f"Age interval: nominal coverage {100 * iv.get('coverage', 0):.0f} %, validation "
        f"coverage {100 * iv.get('val_coverage', 0):.1f} %"
        + (f" (clean {100 * iv['val_clean']['coverage']:.1f} %, width "
           f"{iv['val_clean']['width']:.1f}; wild {100 * iv['val_wild']['coverage']:.1f} %, "
           f"width {iv['val_wild']['width']:.1f}; scale fitted on both together)"
           if iv.get("val_clean") else "")
        + (f"; test as served: clean {pct(wild['clean']['overall']['interval_coverage'])} "
           f"(width {num(wild['clean']['overall']['interval_width'])}), wild "
           f"{pct(wild['wild']['overall']['interval_coverage'])} (width "
           f"{num(wild['wild']['overall']['interval_width'])})" if wild else
           f"; **test coverage {100 * (report['overall']['interval_coverage'] or 0):.1f} %** "
           f"(mean width {report['overall']['interval_width']} years)") + ".",
        "",
    ]
    if wild and served:
        from common.models.dlib_descriptor import opinion_weight

        lines += [
            "## As served: with the dlib gender second opinion", "",
            "The classifier merges dlib's face-descriptor gender opinion "
            "(`models/dlib-gender`, read on its own `SSD_VIDEO_RULE` crop of the face) into "
            "the faces it classifies, at weight "
            f"**{opinion_weight(meta)}** for the opinion's log-odds (`meta.json` "
            "`second_opinion`), on faces at least `min_face_px` wide, within its CPU "
            "share. The same test faces, each given the opinion without a CPU cap "
            f"(`agegender evaluate --model {meta['name']} --split test --wild "
            "--second-opinion dlib`); faces narrower than `min_face_px` or without "
            "plausible landmarks keep the model's answer "
            f"({served['failed']['clean']} clean, {served['failed']['wild']} wild). Age "
            "is the model's:", "",
            *served_table(wild, served), ""]
    fusion = meta.get("fusion")
    if fusion:
        from training.fusion import markdown as fusion_markdown

        lines += [
            "## Evidence per person: the fused interval", "",
            "The sink fuses a track's classified faces (quality-weighted mean age, each side "
            "of the interval the mean side times `sqrt((1 - rho) / n_eff + rho)`); `meta.json` "
            f"`fusion.rho` = **{fusion['rho']}**, fitted by `python -m training.fusion` on "
            "simulated tracks: 8 wild-proxy views of each validation face that share the "
            "scene (colour cast, gray, face size) and differ in blur, JPEG, occlusion and box "
            "error. Equal weights:", "",
            fusion_markdown(fusion), "",
            "The direct estimate (correlation of two views' age errors) is "
            f"{fusion['rho_direct']}: most of a face's error is the face's own (it looks "
            "older or younger than its age), so more frames narrow the interval little. "
            "Frames of one walking person are more alike than these views, so video errors "
            "correlate at least as much.", ""]
    if wild and before is not None and (before / "eval_wild.json").is_file():
        def read(name):
            """A report of the ``before`` model, or None."""
            f = before / name
            return json.loads(f.read_text()) if f.is_file() else None

        lines += ["## Before and after", "",
                  f"Before: `{before.name}`; after: `{meta['name']}`. Test split as served "
                  "(BlazeFace, each model's own crop rule), clips and demo as above.", "",
                  *before_after(wild, read("eval_wild.json"), video, read("video_check.json"),
                                demo, read("demo_check.json")), ""]
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
    if demo:
        lines += [f"Built-in demo (`agegender run` without `--source`, `--no-realtime`: "
                  "scikit-image's astronaut photo, a woman, panning and zooming): "
                  f"**{demo['female']} of {demo['frames']} frames read female** "
                  f"({100 * demo['female'] / max(demo['frames'], 1):.0f} %; a face was "
                  f"found on {demo['with_face']}).", ""]
    lines += [
        "## Known weaknesses",
        "",
        WEAKNESSES.get(meta["name"], WEAKNESSES[kind]),
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
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--dataset", default=None, help="Default: the dataset the model was trained on.")
@click.option("--clip-dir", default=None, help="Folder with the clips and ground_truth.json "
              "[default: ../shared/videos]; every clip with known genders is checked.")
@click.option("--wild/--no-wild", default=True, show_default=True,
              help="Also evaluate the test split as served, clean and wild-proxy.")
@click.option("--demo-events", type=click.Path(exists=True, dir_okay=False), default=None,
              help="events.jsonl of `agegender run --out DIR` on the built-in demo "
              "(written to demo_check.json).")
@click.option("--before", default=None, help="Model (name or folder) whose saved reports "
              "make the before/after table.")
@click.option("--served", is_flag=True, help="Also evaluate the test split as served with "
              "the dlib gender second opinion (written to eval_served.json; about 10 "
              "minutes of dlib on one core); without it a saved eval_served.json is used.")
@click.option("--threads", type=int, default=None)
def main(model, dataset, clip_dir, wild, demo_events, before, served, threads):
    """Evaluate on the test split, check the clips with known genders, write MODEL_CARD.md."""
    from common.models import load_model, resolve_model_dir
    from training.defaults import SHARED
    from training.evaluate import evaluate
    from training.video_check import check_clip

    m = load_model(model, threads=threads)
    t = m.meta["training"]
    dataset = dataset or t.get("dataset") or "utkface=" + t["cache_meta"]["dataset"]
    report = evaluate(m, dataset, split="test", progress=False)
    (m.directory / "eval_test.json").write_text(json.dumps(report, indent=2))
    wild_report = None
    if wild:
        from training import wild as wild_proxy

        faces = wild_proxy.load_faces(dataset.split("=", 1)[-1], "test", detector="blazeface")
        wild_report = wild_proxy.evaluate_wild(wild_proxy.student_predictor(m), faces,
                                               wild_proxy.model_crop_rule(m, "blazeface"))
        wild_report.update({"model": m.name, "detector": "blazeface"})
        (m.directory / "eval_wild.json").write_text(json.dumps(wild_report, indent=1))
    elif (m.directory / "eval_wild.json").is_file():
        wild_report = json.loads((m.directory / "eval_wild.json").read_text())
    served_report = None
    if served and wild_report is not None:
        from common.models.dlib_descriptor import load_opinion, opinion_weight

        opinion = load_opinion("dlib")
        served_report = wild_proxy.evaluate_served(m, faces, "blazeface", opinion)
        served_report.update({"model": m.name, "detector": "blazeface", "second_opinion": {
            "name": opinion.name, "weight": opinion_weight(m.meta, opinion.name),
            "min_face_px": opinion.min_face_px}})
        (m.directory / "eval_served.json").write_text(json.dumps(served_report, indent=1))
    elif (m.directory / "eval_served.json").is_file():
        served_report = json.loads((m.directory / "eval_served.json").read_text())
    demo = None
    if demo_events:
        demo = demo_share(Path(demo_events))
        (m.directory / "demo_check.json").write_text(json.dumps(demo, indent=2))
    elif (m.directory / "demo_check.json").is_file():
        demo = json.loads((m.directory / "demo_check.json").read_text())
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
    (m.directory / "MODEL_CARD.md").write_text(render(
        m.directory, report, video, wild_report, demo,
        resolve_model_dir(before) if before else None, served_report))
    click.echo(json.dumps({"report": report["overall"], "video": video,
                           "wild": wild_report and wild_report["wild"]["overall"],
                           "demo": demo}, indent=2))


if __name__ == "__main__":
    main()
