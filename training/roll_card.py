"""``MODEL_CARD.md`` of the roll estimator (written by ``python -m training.roll``)."""

from __future__ import annotations


def render_card(meta: dict, bench: dict, bench_split: str) -> str:
    """``MODEL_CARD.md`` text of the roll estimator from its ``meta.json`` and a
    :func:`rotation_benchmark` report."""
    t, v = meta["training"], meta["validation"]
    rows = ["| roll (degrees) | estimate MAE | age MAE as cut | age MAE aligned | "
            "gender as cut | gender aligned |", "|---:|---:|---:|---:|---:|---:|"]
    for angle, r in bench.items():
        rows.append(f"| {angle} | {r['roll_mae_degrees']:.2f} | {r['as_cut']['age_mae']:.2f} | "
                    f"{r['aligned']['age_mae']:.2f} | "
                    f"{100 * r['as_cut']['gender_accuracy']:.1f} % | "
                    f"{100 * r['aligned']['gender_accuracy']:.1f} % |")
    return "\n".join([
        f"# Model card: {meta['name']} (head-roll estimator)", "",
        "Reads the in-plane rotation (roll) of a face crop so that the classifier can turn "
        "it upright before the age/gender network sees it (`common/models/align.py`; "
        "Rowley, Baluja and Kanade, CVPR 1998). Input: 64x64 BGR crop of a detector box; "
        f"output: roll in degrees, counter-clockwise positive, within +-{meta['max_degrees']:.0f}. "
        f"Rolls under {meta['min_degrees']:.0f} degrees leave the crop as cut.", "",
        "## Data and training", "",
        f"Self-supervised on the UTKFace training split ({t['train_images']} faces; aligned "
        "upright chips, so a random rotation is its own label; see `training/roll.py` for "
        f"the jitter). {t['epochs_run']} epochs, batch {t['batch_size']}, Adam {t['lr']:g} "
        f"with cosine decay, {t['seconds'] / 60:.0f} min on {t['hardware']} "
        f"(TensorFlow {t['tensorflow']}). Rebuild: `agegender train --model roll`.", "",
        "## Validation", "",
        f"On {v['rolled_faces']} validation faces turned by random angles within "
        f"+-{meta['max_degrees']:.0f} degrees: mean absolute error {v['mae_degrees']:.2f} "
        f"degrees, 95th percentile {v['p95_error_degrees']:.2f}. On the same faces upright, "
        f"95 % of the estimates are under {v['upright_p95_estimate_degrees']:.2f} degrees; "
        f"that sets the threshold of {meta['min_degrees']:.0f} degrees.", "",
        f"## Effect on the compact model ({bench_split} split, faces turned by +-angle)", "",
        "`python -m training.roll --split test` turns every face of the split by the angle "
        "(random sign) and classifies it as cut and after alignment:", "",
        *rows, "",
        "## Known weaknesses", "",
        "* Trained on synthetic rotations of upright, frontal chips: a detector box around a "
        "really rolled head also holds background and hair that a rotated chip does not; "
        "yaw (turning left/right) and pitch are not estimated.",
        f"* Rolls beyond {meta['max_degrees']:.0f} degrees read as "
        f"{meta['max_degrees']:.0f}; upside-down faces are not handled.",
        "",
        "## License", "",
        "Trained on UTKFace (non-commercial research use only; "
        "https://susanqq.github.io/UTKFace/). The weights are this project's; no images "
        "are included.", ""])
