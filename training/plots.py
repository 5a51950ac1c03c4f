"""The training curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_history(csv_path: Path, png_path: Path, title: str) -> None:
    """Training curve PNG (loss, age MAE and gender accuracy per epoch, train and val)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    keys = [k for k in rows[0] if k != "epoch" and not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        ax.plot(epochs, [float(r[key]) for r in rows], label="train")
        if f"val_{key}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label="val")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
