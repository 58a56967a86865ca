# Sourced by scripts/device/study.sh and bench.sh on a GPU machine without network:
# makes snakemake, papermill and the rest importable from the carried wheels (only when
# they are not importable already, as in a .venv made by `make`), puts the checkout's src/
# on PYTHONPATH, and names the checkout's commit when the copy has no .git.
# Needs REPO (the checkout) and PY (the python to use); returns 3 when it cannot.
# NVIDIA's Multi-Process Service lets the processes of several runs share the GPU
# concurrently instead of time-sliced. Starting its control daemon changes no GPU setting;
# where the machine refuses it, the functions say so and everything runs without it.
cifarlab_mps_start() {
  command -v nvidia-cuda-mps-control >/dev/null || { echo "cifarlab: no MPS on this machine"; return 1; }
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/cifarlab-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/cifarlab-mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "cifarlab: the MPS daemon did not start"; \
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; return 1; }
  echo "cifarlab: MPS daemon started"
}

cifarlab_mps_stop() {
  [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] || return 0
  echo quit | nvidia-cuda-mps-control
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

cifarlab_device_env() {
  if ! "$PY" -c 'import snakemake, papermill, nbconvert, ipykernel' 2>/dev/null; then
    shopt -s nullglob
    local wheels=("$REPO"/.device/wheels/*.whl)
    shopt -u nullglob
    if [ ${#wheels[@]} -eq 0 ]; then
      echo "cifarlab: snakemake/papermill are not importable and $REPO/.device/wheels holds" \
           "no wheels; run scripts/device/prepare.sh where PyPI is reachable and carry" \
           ".device/ with the checkout" >&2
      return 3
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/cifarlab-site "${wheels[@]}" || return 3
    export PYTHONPATH=/tmp/cifarlab-site${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c 'import snakemake, papermill, nbconvert, ipykernel' || {
      echo "cifarlab: the wheels in $REPO/.device/wheels installed, but the packages do not" \
           "import (above); compare scripts/device/wheels.txt with the machine's packages" >&2
      return 3
    }
  fi
  export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
  if [ -z "${CIFARLAB_COMMIT:-}" ] && [ -f "$REPO/.device/commit" ] \
      && ! git -C "$REPO" rev-parse HEAD >/dev/null 2>&1; then
    CIFARLAB_COMMIT=$(cat "$REPO/.device/commit")
    export CIFARLAB_COMMIT
  fi
}
