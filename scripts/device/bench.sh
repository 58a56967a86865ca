#!/usr/bin/env bash
# The profiling and benchmark call of a GPU session, before the study call (study.sh):
# checks that the carried wheels install and import, runs the CUDA tests of the execution
# paths, profiles a training step (scripts/device/profile_step.py), and runs
# `cifarlab bench` on CUDA (sections peak, jobs, precision, engines). Everything goes to
# $OUT (at most 8 files come back from the device tool: bench.csv, bench.json,
# profile.json and bench.log, and mps/bench.csv and mps/bench.json: the jobs section again
# under NVIDIA's MPS, where the machine has it; MPS_COMPARE=0 skips that).
# usage (from the checkout's root, .device/ carried): OUT=... bash scripts/device/bench.sh
# env: SECTIONS (default "peak jobs precision engines"), QUICK (1, the default: the quick
#      preset; 0: the full one)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$REPO/results/device-bench}
PY=${PYTHON:-python3}
SECTIONS=${SECTIONS:-peak jobs precision engines}
preset=--quick
[ "${QUICK:-1}" = 0 ] && preset=
mkdir -p "$OUT"
cd "$REPO" || exit 2
# shellcheck source=scripts/device/env.sh
. "$REPO/scripts/device/env.sh"
log=$OUT/bench.log
{
  cifarlab_device_env || exit 3
  echo "== packages"; "$PY" -m snakemake --version; "$PY" -c 'import torch, papermill;
print("torch", torch.__version__, "cuda", torch.version.cuda, "papermill", papermill.__version__)'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  echo "== CUDA tests"; "$PY" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_layers.py
  echo "== profile"; "$PY" scripts/device/profile_step.py "$OUT/profile.json"
  echo "== bench"
  # shellcheck disable=SC2086
  "$PY" -m cifarlab bench $preset --out "$OUT" --only $SECTIONS
  rc=$?
  if [ "${MPS_COMPARE:-1}" = 1 ] && cifarlab_mps_start; then
    echo "== jobs under MPS"
    "$PY" -m cifarlab bench $preset --out "$OUT/mps" --only jobs
    cifarlab_mps_stop
  fi
  exit $rc
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
