#!/usr/bin/env bash
# Stop the cluster started by start_local_slurm.sh: cancel its jobs, then stop only the
# daemons whose PIDs are in its pid files. Idempotent (nothing running: nothing to do).
# Usage: scripts/slurm/stop_local_slurm.sh [--purge]
#   --purge  also delete state, logs, config, database and munge key under $SLURM_LOCAL_DIR
# The /etc/slurm/{slurm,gres}.conf links to this cluster are removed in any case.
# Environment: SLURM_LOCAL_DIR (default /tmp/cifarlab-slurm)
set -uo pipefail
D=${SLURM_LOCAL_DIR:-/tmp/cifarlab-slurm}
case "$D" in /*) ;; *) D=$(readlink -m "$D") ;; esac
PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if [ -s "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
  # cancel whatever is still queued or running, so that no job outlives slurmd
  ids=$(SLURM_CONF=$D/etc/slurm.conf timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    SLURM_CONF=$D/etc/slurm.conf timeout 10 scancel $ids 2>/dev/null || true
    for _ in $(seq 1 40); do
      left=$(SLURM_CONF=$D/etc/slurm.conf timeout 5 squeue -h -t R,CG -o %i 2>/dev/null || true)
      [ -z "$left" ] && break
      sleep 0.25
    done
    echo "cancelled jobs: $(echo $ids)"
  fi
fi

stop_pid() {   # $1 = name, $2 = pid file
  local f=$2 p
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$p" 2>/dev/null; then
      echo "$1 ($p) ignored SIGTERM, sending SIGKILL"; kill -KILL "$p" 2>/dev/null; sleep 0.5
    fi
    echo "stopped $1 ($p)"
  fi
  rm -f "$f"
}
stop_pid slurmd    "$D/run/slurmd.pid"
stop_pid slurmctld "$D/run/slurmctld.pid"
stop_pid slurmdbd  "$D/run/slurmdbd.pid"
stop_pid mariadbd  "$D/run/mysqld.pid"
stop_pid munged    "$D/run/munged.pid"

# Remove the /etc/slurm links to this cluster (start_local_slurm.sh makes them again): with
# a config naming a controller that is gone, every `scontrol`/`sinfo` waits ~10 s for it, and
# so does every `snakemake` start on this machine (the SLURM plugin asks `scontrol show
# config` when it is imported).
for f in slurm.conf gres.conf; do
  [ "$(readlink "/etc/slurm/$f" 2>/dev/null)" = "$D/etc/$f" ] && rm -f "/etc/slurm/$f"
done

if [ $PURGE = 1 ]; then
  rm -rf "$D/etc" "$D/run" "$D/log" "$D/munge" "$D/state" "$D/mysql" "$D/dev"
  rmdir "$D" 2>/dev/null || true
  echo "purged $D"
fi
exit 0
