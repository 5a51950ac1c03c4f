#!/usr/bin/env bash
# One distillation training run on a lent GPU machine (PyTorch, no TensorFlow, no network).
#
# Usage (repository root):  bash training/gpu_distill.sh CARRY [training.distill train options]
#   CARRY: a folder (carried with the working tree, e.g. .cache/gpu, ignored by git) with
#     wheels/     keras, namex, optree (cp312 manylinux), packaging: extracted to a temp folder
#                 and put on PYTHONPATH (wheels are zip files; no pip or network needed);
#                 skipped when keras already imports;
#     cache.npz   the distillation cache (python -m training.distill cache ..., built on a
#                 CPU machine with the teachers; UTKFace-derived: never commit it).
#   $OUT: where the run writes env.txt, train.log and run/ (net.keras, meta.json,
#     history.csv, summary.json); default /tmp/distill-out.
# The .keras file is exported to ONNX afterwards on a machine with TensorFlow
# (agegender export --model DIR).
set -euo pipefail
CARRY=${1:?usage: gpu_distill.sh CARRY [train options]}
shift
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/distill-out}
mkdir -p "$OUT"
DEPS=$(mktemp -d)
if ! "$PY" -c "import keras" 2>/dev/null; then
  for w in "$CARRY"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$DEPS"; done
fi
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=torch
"$PY" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import os, torch, keras, cv2, numpy
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("keras", keras.__version__, keras.backend.backend(), "cv2", cv2.__version__,
      "numpy", numpy.__version__, "cpus", os.cpu_count())
PY
"$PY" -m training.distill train --cache "$CARRY/cache.npz" --out "$OUT/run" "$@" \
  2>&1 | tee "$OUT/train.log"
