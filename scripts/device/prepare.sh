#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what scripts/device/study.sh and bench.sh need on a GPU
# machine without network. Everything goes into .device/ (git-ignored), which the transfer
# to that machine must carry along with the checkout:
#   .device/wheels/   the packages of scripts/device/wheels.txt as Python 3.12 wheels
#   .device/data/     the CIFAR-10 data (an image folder's .tar.gz or cifar-10-python.tar.gz)
#   .device/commit    this checkout's commit (the copy on the GPU machine may have no .git)
# usage: scripts/device/prepare.sh PATH/TO/DATA.tar.gz      (from the repository's root)
# env:   PYTHON (default .venv/bin/python), PY_VERSION (default 3.12), MAX_MIB (default 60:
#        the checkout and .device/ together must fit the transfer)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: scripts/device/prepare.sh PATH/TO/cifar10-jpeg.tar.gz (or cifar-10-python.tar.gz)}
PY=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
MAX_MIB=${MAX_MIB:-60}
[ -f "$DATA" ] || { echo "prepare.sh: $DATA is not a file; give the CIFAR-10 .tar.gz" >&2; exit 2; }
rm -rf .device/wheels .device/data
mkdir -p .device/wheels .device/data
platforms=()
for tag in manylinux_2_{5,17,24,26,27,28,31,34,35}_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
built=()
while read -r req; do
  case "$req" in ''|'#'*) continue ;; esac
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
      --implementation cp "${platforms[@]}" -d .device/wheels "$req" >/dev/null 2>&1; then
    # No wheel on PyPI (a pure-Python package published as source only): build one here.
    "$PY" -m pip wheel -q --no-deps -w .device/wheels "$req" >/dev/null
    built+=("$req")
  fi
done < scripts/device/wheels.txt
cp "$DATA" .device/data/
git rev-parse --short=12 HEAD > .device/commit
n=$(ls .device/wheels | wc -l)
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
extra=$(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
device=$(du -sb .device | cut -f1)
total=$(( (tree + ${extra:-0} + device) / 1048576 ))
echo "prepare.sh: $n wheels (built here: ${built[*]:-none}), data $(basename "$DATA"), commit $(cat .device/commit)"
echo "prepare.sh: checkout + untracked + .device = $total MiB (limit $MAX_MIB)"
if [ "$total" -gt "$MAX_MIB" ]; then
  echo "prepare.sh: too large to carry; remove untracked files or large data" >&2
  exit 1
fi
