#!/usr/bin/env bash
# Run the study on a GPU machine without network in one command, and pack what it produced
# into a few files to bring back. Prepare first, where PyPI is reachable:
#     scripts/device/prepare.sh PATH/TO/cifar10-jpeg.tar.gz
# then carry the checkout with .device/ to the GPU machine and run, from its root:
#     OUT=/where/files/go/back bash scripts/device/study.sh [KEY=VALUE ...]
# where each KEY=VALUE is one more `--config` item, e.g. "train={compile: true}".
# It installs the packages the machine lacks from .device/wheels (only when they are not
# importable), runs `snakemake --profile profiles/gpu` on .device/data's images (training,
# tables, figures, report), stops Snakemake so that the whole script ends within BUDGET_S
# seconds (runs left unfinished keep their checkpoints and resume on the next invocation on
# that machine),
# and bundles the report, tables, figures, logs and every run's spec, history and metrics
# (no weights) with `cifarlab bundle`: at most 8 files of 16 MiB in $OUT.
#
# env:  OUT          where the bundle goes (default results/device-bundle)
#       BUDGET_S     seconds the whole script may take (default 560: under a 600 s limit).
#                    Snakemake gets what is left after the set-up, less RESERVE_S
#                    (default 40: its stop, up to 15 s, and the bundle)
#       CONFIGFILES  config files for --configfile (default none: the full study); with a
#                    profile's file, end with profiles/gpu/gpu.yaml (it replaces the
#                    profile's own entry), e.g. "config/smoke.yaml profiles/gpu/gpu.yaml"
#       DATA         the data (default: the one file in .device/data/)
#       DATA_SOURCE  folder (an image folder or its .tar.gz; default) or archive
#       DATA_MD5     the archive's MD5 when it is not the official one (none: no check)
#       REPORT_DIR   where the report goes (default results/<profile>/report; report/full
#                    for the report the repository commits)
#       WORK         the folder results/ and logs/ go to (default: the repository's root)
#       SNAKEMAKE_ARGS more snakemake options, split on spaces (e.g. "--resources gpu=8")
#       MPS          1: run the study under NVIDIA's Multi-Process Service (where the
#                    machine allows it; without it otherwise, as the log says)
#       RESUME       a bundle of an earlier call on another machine (its .tar.gz, or the
#                    folder of it or its parts; relative to here or to the checkout, e.g.
#                    bundles/full): its completed runs are restored first, without weights
#                    (`cifarlab unbundle --runs-only`), and only the missing runs train
# Exit status: Snakemake's (124 when the budget stopped it, 137 when it had to be killed 15 s
# later); 2: bad input (DATA, RESUME, the budget); 3: the packages cannot be installed;
# 4: no bundle. The bundle is written whenever Snakemake ran.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-$REPO}
OUT=${OUT:-$WORK/results/device-bundle}
BUDGET_S=${BUDGET_S:-560}
RESERVE_S=${RESERVE_S:-40}
DATA_SOURCE=${DATA_SOURCE:-folder}
PY=${PYTHON:-python3}
t0=$(date +%s)
if [ -n "${RESUME:-}" ]; then  # before the cd: relative to here, else to the checkout
  for candidate in "$RESUME" "$REPO/$RESUME"; do
    if [ -e "$candidate" ]; then RESUME=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate"); break; fi
  done
  [ "${RESUME:0:1}" = / ] && [ -e "$RESUME" ] || { echo "study.sh: RESUME=$RESUME is neither" \
    "here nor in $REPO; give the bundle (its .tar.gz or its folder) brought back earlier" >&2; exit 2; }
fi
mkdir -p "$WORK" && cd "$WORK" || exit 2

# 1. What the machine's image lacks, from the carried wheels.
# shellcheck source=scripts/device/env.sh
. "$REPO/scripts/device/env.sh"
cifarlab_device_env || exit 3
mkdir -p "$OUT" logs/device

# 2. The data, and the machine as the runs will see it.
if [ -z "${DATA:-}" ]; then
  shopt -s nullglob
  found=("$REPO"/.device/data/*)
  if [ ${#found[@]} -ne 1 ]; then
    echo "study.sh: set DATA, or put exactly one data file in $REPO/.device/data" \
         "(scripts/device/prepare.sh does); found ${#found[@]}" >&2
    exit 2
  fi
  DATA=${found[0]}
fi
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
"$PY" -m cifarlab info > logs/device/info.txt 2>&1
nvidia-smi > logs/device/nvidia-smi.txt 2>&1 || echo "no nvidia-smi" > logs/device/nvidia-smi.txt

# 3. The runs an earlier machine completed (RESUME), then the study, stopped (SIGINT: Snakemake ends its jobs, which keep their checkpoints)
#    when the budget is spent. A Snakemake killed earlier on this machine left its lock.
items=("data={source: $DATA_SOURCE, path: '$DATA'${DATA_MD5:+, md5: $DATA_MD5}}" "$@")
[ -n "${REPORT_DIR:-}" ] && items+=("report_dir=$REPORT_DIR")
# The profile's own config file, unless CONFIGFILES lists files (which replace it).
read -r -a files <<< "${CONFIGFILES:-$REPO/profiles/gpu/gpu.yaml}"
configs=(--configfile "${files[@]}")
read -r -a more <<< "${SNAKEMAKE_ARGS:-}"
if [ -n "$(ls -A .snakemake/locks 2>/dev/null)" ]; then
  "$PY" -m snakemake -s "$REPO/Snakefile" --profile "$REPO/profiles/gpu" "${configs[@]}" \
    --config "${items[@]}" --unlock > logs/device/unlock.log 2>&1
fi
if [ -n "${RESUME:-}" ]; then
  "$PY" -m cifarlab unbundle "$RESUME" --into . --runs-only > logs/device/resume.txt 2>&1
  rc=$?
  head -n 1 logs/device/resume.txt
  [ "$rc" -eq 0 ] || { cat logs/device/resume.txt >&2; echo "study.sh: RESUME=$RESUME" \
    "could not be restored (above); give an intact bundle or unset RESUME" >&2; exit 2; }
  # How many of this plan's runs that makes complete (a bundle of another configuration
  # or data file restores runs of other ids: then every run trains).
  "$PY" -m cifarlab status "${configs[@]}" --config "${items[@]}" > logs/device/status.txt 2>&1
  echo "study.sh: before training: $(grep -E '^[0-9]+ runs:' logs/device/status.txt || tail -n 1 logs/device/status.txt)"
fi
left=$(( BUDGET_S - ($(date +%s) - t0) - RESERVE_S ))
[ "$left" -gt 0 ] || { echo "study.sh: no time left for snakemake (BUDGET_S=$BUDGET_S)" >&2; exit 2; }
echo "study.sh: snakemake started $(date -u +%FT%TZ), ${left}s left" | tee logs/device/study.txt
# (not through a pipe: the function exports MPS's variables to the jobs)
if [ "${MPS:-0}" = 1 ]; then cifarlab_mps_start >> logs/device/study.txt 2>&1; fi
timeout --signal=INT --kill-after=15 "$left" "$PY" -m snakemake -s "$REPO/Snakefile" \
  --profile "$REPO/profiles/gpu" --scheduler greedy "${configs[@]}" --config "${items[@]}" \
  "${more[@]}" > logs/device/snakemake.log 2>&1
rc=$?
cifarlab_mps_stop
echo "study.sh: snakemake exited $rc after $(( $(date +%s) - t0 ))s" | tee -a logs/device/study.txt
tail -n 5 logs/device/snakemake.log

# 4. Everything but the weights, in at most 8 files of 16 MiB.
extra=(logs/device)
[ -d results/bench ] && extra+=(results/bench)
"$PY" -m cifarlab bundle "${configs[@]}" --config "${items[@]}" \
  --out "$OUT" --extra "${extra[@]}" || exit 4
exit $rc
