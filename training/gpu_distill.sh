#!/usr/bin/env bash
# One distillation training run on a lent GPU machine (PyTorch, no TensorFlow, no network).
#
# Usage (repository root):  bash training/gpu_distill.sh CARRY [training.distill train options]
#   CARRY: a folder (carried with the working tree, e.g. .cache/gpu, ignored by git) with
#     wheels/     keras, namex, optree, msgpack (cp312 manylinux), packaging: extracted to a
#                 temp folder and put on PYTHONPATH (wheels are zip files; no pip or network
#                 needed); skipped when keras and msgpack already import;
#     cache.npz   the distillation cache (python -m training.distill cache ..., built on a
#                 CPU machine; UTKFace-derived: never commit it).
#   The code that runs is the checkout this script belongs to (its parent folder), so a
#   copy of another branch's training/ and common/ (e.g. CARRY/code/training/gpu_distill.sh)
#   runs as itself (python -P: the current folder is not put first on sys.path); the
#   models (--init, models/compact/meta.json) come from $AGEGENDER_MODELS_DIR, default
#   the current folder's models/.
#   $OUT: where the run writes env.txt, train.log, time.txt and run/ (net.keras, meta.json,
#     history.csv, summary.json); default /tmp/distill-out.
# The .keras file is exported to ONNX afterwards on a machine with TensorFlow
# (agegender export --model DIR).
set -euo pipefail
CARRY=${1:?usage: gpu_distill.sh CARRY [train options]}
shift
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/distill-out}
CODE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
T0=$(date +%s)
DEPS=$(mktemp -d)
if ! "$PY" -c "import keras, msgpack" 2>/dev/null; then
  for w in "$CARRY"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$DEPS"; done
fi
export PYTHONPATH="$CODE:$DEPS${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=torch
export AGEGENDER_MODELS_DIR=${AGEGENDER_MODELS_DIR:-$PWD/models}
"$PY" -P - <<'PY' 2>&1 | tee "$OUT/env.txt"
import os, torch, keras, cv2, numpy, training
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("keras", keras.__version__, keras.backend.backend(), "cv2", cv2.__version__,
      "numpy", numpy.__version__, "cpus", os.cpu_count(), "code", training.__file__)
PY
"$PY" -P -m training.distill train --cache "$CARRY/cache.npz" --out "$OUT/run" "$@" \
  2>&1 | tee "$OUT/train.log"
echo "wall_s $(( $(date +%s) - T0 ))" | tee "$OUT/time.txt"
