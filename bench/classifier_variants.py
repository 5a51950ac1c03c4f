"""Benchmark: ONNX Runtime cost per crop of compact-network variants (input size, width).

Prints JSON: for each variant, multiply-adds, parameters and the median milliseconds per
crop at batch 1 and batch 32 on ONE intra-op thread, network only, two passes per crop
(the classifier's test-time flip), random weights (cost does not depend on them). The
issue's budget is 3 ms per crop batched on one core, preprocessing and the roll estimator
included; the shipped network (64 px, width 1) is the reference row, so the extra cost of
a variant is its difference to that row. Numbers on a shared machine vary by about a
third between runs: compare rows of one run.

``python -m bench.classifier_variants [--sizes 64,80,96] [--widths 1,1.25,1.5]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _macs(net) -> int:
    """Multiply-adds of the Conv2D and Dense layers of a built Keras model (per image)."""
    import keras

    total = 0
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def measure(size: int, width: float, repeats: int = 30) -> dict:
    """Export one variant to ONNX (Keras' exporter) and time it on ONNX Runtime."""
    import onnxruntime as ort

    from common.models import InputSpec
    from training.architectures import build_compact

    net = build_compact(InputSpec(size, size, 3), width=width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        net(np.zeros((1, size, size, 3), np.float32), training=False)
        net.export(str(path), format="onnx", verbose=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    row = {"input": size, "width": width, "macs_millions": round(_macs(net) / 1e6, 1),
           "params_millions": round(net.count_params() / 1e6, 3)}
    for n in (1, 32):
        x = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
        sess.run(None, {name: x})
        times = []
        for _ in range(repeats if n == 1 else max(5, repeats // 3)):
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            sess.run(None, {name: np.ascontiguousarray(x[:, :, ::-1])})
            times.append(time.perf_counter() - t0)
        row[f"batch{n}_ms_per_crop"] = round(1000 * float(np.median(times)) / n, 3)
    return row


def main() -> None:
    """Print the variants' costs as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,80,96")
    parser.add_argument("--widths", default="1,1.25,1.5")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = [measure(int(s), float(w)) for s in args.sizes.split(",")
            for w in args.widths.split(",")]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
