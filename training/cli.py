"""``agegender train | evaluate | prepare | export`` (click commands, loaded lazily by
services.cli)."""

from __future__ import annotations

import json
import logging
import sys

import click

from common.models.registry import DEFAULT_MODEL
from training.defaults import DEFAULT_DATASET
from training.recipes import RECIPES

_device = click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
                       show_default=True, help="Where TensorFlow runs (auto: GPU if present).")
_threads = click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="TensorFlow intra-op threads (default: TensorFlow's choice).")


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("train")
@click.option("--model", "model", type=click.Choice(list(RECIPES)),
              default="compact", show_default=True, help="Model family to train.")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
              help="utkface=FOLDER (UTKFace-named images), imdb=imdb.mat or wiki=wiki.mat.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Model folder to write [default: <models folder>/<name>].")
@click.option("--name", default=None, help="Model name [default: the family].")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoints, history, curve [default: $AGEGENDER_CACHE/runs/<name>].")
@click.option("--epochs", type=click.IntRange(1, 10000), default=None,
              help="[default: 60]")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="[default: 128 seed, 64 compact]")
@click.option("--lr", type=click.FloatRange(1e-7, 1.0), default=None,
              help="Adam learning rate [default: 1e-3].")
@click.option("--patience", type=click.IntRange(1, 10000), default=None,
              help="Early-stopping patience, epochs [default: 50 seed, 10 compact].")
@click.option("--max-minutes", type=click.FloatRange(0.1, None), default=None,
              help="Stop after the epoch that exceeds this wall time.")
@click.option("--limit", type=click.IntRange(1, None), default=None,
              help="Use only the first N images (smoke runs).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Flip, rotation, zoom, shift, brightness, contrast, low resolution.")
@click.option("--balance/--no-balance", default=None,
              help="Age re-weighting [default: on for compact].")
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from a previous run's best.keras (same model family).")
@click.option("--fresh", is_flag=True, help="Ignore a previous run's backup; start again.")
@_device
@_threads
@click.option("-v", "--verbose", is_flag=True)
def train_command(model, dataset, out, name, run_dir, epochs, batch_size, lr, patience,
                  max_minutes, limit, augment, balance, init_weights, fresh, device, threads, verbose):
    """Train a model and export it with meta.json (resumes an interrupted run)."""
    _logging(verbose)
    from common.models import models_dir
    from training.cache import cache_dir
    from training.train import TrainOptions, train

    name = name or model
    out = out or str(models_dir() / name)
    lr, epochs = lr or 1e-3, epochs or 60
    run_dir = run_dir or str(cache_dir() / "runs" / name)
    info = train(model, dataset, out, run_dir, TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
        max_minutes=max_minutes, device=device, threads=threads, limit=limit, augment=augment,
        balance=balance, resume=not fresh, name=name, init_weights=init_weights))
    click.echo(json.dumps(info, indent=2))


@click.command("evaluate")
@click.option("--model", "model", default=DEFAULT_MODEL, show_default=True,
              help="Model name in the models folder or a model folder.")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True,
              help="utkface=FOLDER of UTKFace-named images (any folder).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True, help="'all' for a held-out folder; 'test' for this "
              "project's test split of the training folder.")
@click.option("--limit", type=click.IntRange(1, None), default=None,
              help="First N images by name (with --wild: an even subset of N).")
@click.option("--wild", is_flag=True, help="Clean vs wild-proxy report (training.wild): "
              "each face cut as served from the detector's box, and a degraded version of "
              "it (small, blurred, JPEG, colour cast, occluded, box error); overall, per "
              "age band, per race x gender, per face size.")
@click.option("--detector", type=click.Choice(["blazeface", "ssd"]), default="blazeface",
              show_default=True, help="With --wild: the boxes (and crop rule) the faces "
              "are cut by.")
@click.option("--second-opinion", type=click.Choice(["none", "dlib"]), default="none",
              show_default=True, help="With --wild: merge the classifier's gender second "
              "opinion as served (its own crops, the model's weight; 60-80 ms a face).")
@click.option("--latency/--no-latency", default=True, show_default=True,
              help="Measure latency per crop at batch 1 and 32.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--runtime", type=click.Choice(["auto", "onnx", "keras"]), default="auto",
              show_default=True, help="ONNX Runtime or Keras (auto: ONNX when exported).")
@_device
@_threads
@click.option("-v", "--verbose", is_flag=True)
def evaluate_command(model, dataset, split, limit, wild, detector, second_opinion, latency,
                     as_json, runtime, device, threads, verbose):
    """Age MAE, gender accuracy, per age band / gender, interval coverage, latency
    (--wild: clean vs wild-proxy, per group)."""
    _logging(verbose)
    if second_opinion != "none" and not wild:
        raise click.UsageError("--second-opinion is evaluated on faces cut as served: add "
                               "--wild")
    from common.models import load_model
    from training.evaluate import evaluate, format_report

    try:
        m = load_model(model, threads=threads, device=device, runtime=runtime)
        if wild:
            from training import wild as wild_proxy

            kind, _, folder = dataset.partition("=")
            if kind != "utkface" or not folder:
                raise ValueError(f"--wild needs utkface=FOLDER, got {dataset!r}")
            from common.models.dlib_descriptor import (DlibUnavailable, load_opinion,
                                                       opinion_weight)

            try:
                opinion = load_opinion(second_opinion)
            except DlibUnavailable as exc:
                raise ValueError(str(exc)) from None
            faces = wild_proxy.load_faces(folder, split, limit, detector=detector)
            report = wild_proxy.evaluate_served(m, faces, detector, opinion)
            served = {"name": second_opinion} if opinion is None else {
                "name": opinion.name, "weight": opinion_weight(m.meta, opinion.name),
                "min_face_px": opinion.min_face_px}
            report.update({"model": m.name, "dataset": dataset, "split": split,
                           "detector": detector, "second_opinion": served})
            said = "" if opinion is None else (
                f", gender merged with the {opinion.name} second opinion at weight "
                f"{served['weight']} on faces of {served['min_face_px']:g} px or more")
            click.echo(json.dumps(report, indent=2) if as_json else
                       f"model {m.name} on {dataset} (split {split}, {detector} boxes{said}): "
                       f"{report['n']} faces, {report['no_face']} without a detected face\n\n"
                       + wild_proxy.markdown({m.name: report}))
            return
        report = evaluate(m, dataset, split=split, limit=limit, with_latency=latency,
                          progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@click.command("prepare")
@click.option("--dataset", "datasets", multiple=True, default=[DEFAULT_DATASET],
              show_default=True, help="utkface=FOLDER, imdb=imdb.mat or wiki=wiki.mat "
              "(repeatable).")
@click.option("--model", "models", multiple=True, type=click.Choice(list(RECIPES)),
              default=["compact", "seed"], show_default=True,
              help="Whose input size to cache (repeatable).")
@click.option("--limit", type=click.IntRange(1, None), default=None)
@click.option("-v", "--verbose", is_flag=True)
def prepare_command(datasets, models, limit, verbose):
    """Detect and crop faces (SSD), preprocess, cache arrays, print split counts."""
    _logging(verbose)
    from training.data import load_dataset, split_arrays
    from training.recipes import recipe_for

    summary = []
    for ds in datasets:
        for m in models:
            recipe = recipe_for(m)
            try:
                loaded = load_dataset(ds, recipe.spec, seed_prep=recipe.seed_prep, limit=limit,
                                      progress=sys.stderr.isatty())
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise click.ClickException(f"{ds}: {exc}") from None
            parts = split_arrays(loaded.arrays)
            summary.append({"dataset": ds, "model": m, "input": recipe.spec.tag,
                            "faces": len(loaded.arrays), "no_face_dropped": loaded.no_face,
                            "skipped_names": loaded.skipped_names,
                            **{k: len(v) for k, v in parts.items()}})
    click.echo(json.dumps(summary, indent=2))


@click.command("export")
@click.option("--model", "model", default=DEFAULT_MODEL, show_default=True,
              help="Model name under models/ or a model folder.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "saved_model"]), default="onnx",
              show_default=True, help="onnx: <head>.onnx in the model folder, listed in "
              "meta.json after a check against Keras; saved_model: one SavedModel per "
              "network under --out.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="SavedModel target folder [default: <model folder>/saved_model].")
@click.option("-v", "--verbose", is_flag=True)
def export_command(model, fmt, out, verbose):
    """Export a model to ONNX (used by the classifier's ONNX Runtime path) or SavedModel."""
    _logging(verbose)
    from common.models import resolve_model_dir
    from training.export import export_onnx, export_saved_model

    if fmt == "onnx" and out is not None:
        raise click.UsageError("--out is for --format saved_model; the ONNX export goes "
                               "into the model folder, next to the Keras file it checks")
    try:
        if fmt == "onnx":
            click.echo(json.dumps(export_onnx(model), indent=2))
        else:
            target = out or resolve_model_dir(model) / "saved_model"
            click.echo("\n".join(str(p) for p in export_saved_model(model, target)))
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
