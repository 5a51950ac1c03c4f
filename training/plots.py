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


def plot_distill_history(csv_path: Path, png_path: Path, title: str) -> None:
    """Training curve PNG of a :func:`training.distill.train` run: loss and learning
    rate, validation age MAE and gender accuracy per epoch, clean and wild-proxy faces."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(epochs, [float(r["loss"]) for r in rows], label="train loss")
    lr = axes[0].twinx()
    lr.plot(epochs, [float(r["lr"]) for r in rows], color="gray", ls=":", label="lr")
    lr.set_ylabel("learning rate")
    axes[0].set_title("loss")
    for ax, key, name in ((axes[1], "mae", "val age MAE (years)"),
                          (axes[2], "gender", "val gender accuracy")):
        for part in ("clean", "wild"):
            ax.plot(epochs, [float(r[f"val_{part}_{key}"]) for r in rows], label=part)
        ax.set_title(name)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
