# Sourced by scripts/device/study.sh and bench.sh on a GPU machine without network:
# makes snakemake, papermill and the rest importable from the carried wheels (only when
# they are not importable already, as in a .venv made by `make`), puts the checkout's src/
# on PYTHONPATH, and names the checkout's commit when the copy has no .git.
# Needs REPO (the checkout) and PY (the python to use); returns 3 when it cannot.
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
