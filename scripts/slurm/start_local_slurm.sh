#!/usr/bin/env bash
# Bring up a throw-away single-node SLURM cluster on loopback (munge + slurmctld + slurmd,
# optionally MariaDB + slurmdbd so that `sacct` works), without systemd. Used by
# tests/test_slurm.py to run the pipeline through `--profile profiles/slurm` for real, and
# handy to try the profile on a laptop or CI machine. Debian/Ubuntu, as root.
#
# Idempotent: if the cluster is already up with the same configuration it only re-checks
# it; if the configuration asked for differs, the daemons are restarted with the new one.
#
# Usage: scripts/slurm/start_local_slurm.sh [--accounting] [--no-install]
#   --accounting  also start a private MariaDB + slurmdbd (sacct, job history)
#   --no-install  never call apt-get (fail if the binaries are missing)
# Environment:
#   SLURM_LOCAL_DIR         state, logs and config live here (default /tmp/cifarlab-slurm)
#   SLURM_LOCAL_PARTITIONS  space-separated partition names, the first is the default
#                           (default "debug")
#   SLURM_LOCAL_CPUS, SLURM_LOCAL_MEM_MB
#                           advertise a bigger (fake) node so a production profile's
#                           requests fit (SlurmdParameters=config_overrides; jobs are then
#                           oversubscribed, nothing enforces memory without cgroups)
#   SLURM_LOCAL_GPUS        advertise N fake "gpu" GRES (character devices like /dev/null)
#                           so that jobs asking for --gpus/--gres=gpu are scheduled; the
#                           jobs still compute on the CPU (default 0)
#   SLURM_LOCAL_KILLWAIT    seconds between SIGTERM and SIGKILL at a time limit (default 10)
# Exit status: 0 up, 1 failed to start, 2 bad usage, 3 packages missing and not installable.
#
# Side effects outside SLURM_LOCAL_DIR (each one is needed):
#   - apt-get install munge slurmctld slurmd slurm-client (+ slurmdbd mariadb-server),
#     unless present; a temporary policy-rc.d keeps the packages from starting daemons
#   - /etc/slurm/slurm.conf becomes a symlink to $SLURM_LOCAL_DIR/etc/slurm.conf (the
#     executor plugin strips SLURM_CONF from a job's environment, so `srun` inside a job
#     only finds the config at the compiled-in default path); an existing regular file
#     there is moved aside to slurm.conf.bak.<pid>
#   - "127.0.0.1 <hostname -s>" is appended to /etc/hosts if the short name does not resolve
# Stop with scripts/slurm/stop_local_slurm.sh [--purge].
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
D=${SLURM_LOCAL_DIR:-/tmp/cifarlab-slurm}
case "$D" in /*) ;; *) D=$(readlink -m "$D") ;; esac   # absolute paths only (slurmctld -f)
ACCOUNTING=0; INSTALL=1
for a in "$@"; do
  case "$a" in
    --accounting) ACCOUNTING=1 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "start_local_slurm.sh: must run as root" >&2; exit 1; }

SECONDS=0
log() { echo "[start_local_slurm ${SECONDS}s] $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

# ---------------------------------------------------------------- packages
PKGS="munge slurmctld slurmd slurm-client"
BINS="munged mungekey munge unmunge slurmctld slurmd sbatch srun squeue sinfo scontrol scancel"
if [ $ACCOUNTING = 1 ]; then
  PKGS="$PKGS slurmdbd mariadb-server"; BINS="$BINS slurmdbd sacct sacctmgr mariadbd mariadb-install-db"
fi
need=0
for b in $BINS; do command -v "$b" >/dev/null || need=1; done
if [ $need = 1 ]; then
  [ $INSTALL = 1 ] || { echo "SLURM packages missing and --no-install given" >&2; exit 3; }
  command -v apt-get >/dev/null || { echo "no apt-get: install $PKGS by hand" >&2; exit 3; }
  log "installing: $PKGS"
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_ok=1
  timeout 300 apt-get update -qq || apt_ok=0
  [ $apt_ok = 1 ] && { timeout 600 apt-get install -y -qq --no-install-recommends $PKGS >/dev/null || apt_ok=0; }
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  # exit status 3: the packages could not be installed (the tests skip on it)
  [ $apt_ok = 1 ] || { echo "could not install $PKGS with apt-get" >&2; exit 3; }
  log "packages installed"
fi

mkdir -p "$D/etc" "$D/run" "$D/log" "$D/munge" "$D/state/ctld" "$D/state/d"
chmod 755 "$D" "$D/run"      # munged refuses a socket directory without o+x
chmod 700 "$D/munge"

NODE=$(hostname -s)
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
MSOCK=$D/run/munge.socket.2

# ---------------------------------------------------------------- slurm.conf (candidate)
# the hardware line from `slurmd -C`, leaving ~10% of the RAM to the OS
HW=$(slurmd -C | head -1)
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW"); MEM=$(( MEM * 9 / 10 ))
HW=$(sed "s/RealMemory=[0-9]*/RealMemory=$MEM/" <<<"$HW")
OVR=""
if [ -n "${SLURM_LOCAL_CPUS:-}${SLURM_LOCAL_MEM_MB:-}" ]; then
  C=${SLURM_LOCAL_CPUS:-$(nproc)}
  HW="NodeName=$NODE CPUs=$C Boards=1 SocketsPerBoard=1 CoresPerSocket=$C ThreadsPerCore=1 RealMemory=${SLURM_LOCAL_MEM_MB:-$MEM}"
  OVR="SlurmdParameters=config_overrides"
fi
GPUS=${SLURM_LOCAL_GPUS:-0}
GRES=""
if [ "$GPUS" -gt 0 ]; then
  HW="$HW Gres=gpu:$GPUS"
  GRES="GresTypes=gpu"
  [ $ACCOUNTING = 1 ] && GRES="$GRES
AccountingStorageTRES=gres/gpu"
  # fake GPUs: slurmd 22.05 registers no gpu GRES without device files, so each one is a
  # character device like /dev/null (a job sees CUDA_VISIBLE_DEVICES but no real GPU)
  mkdir -p "$D/dev"
  for i in $(seq 0 $((GPUS - 1))); do [ -c "$D/dev/gpu$i" ] || mknod "$D/dev/gpu$i" c 1 3; done
  printf '# generated by start_local_slurm.sh: fake GPUs\nNodeName=%s Name=gpu File=%s/dev/gpu[0-%s]\n' \
    "$NODE" "$D" "$((GPUS - 1))" > "$D/etc/gres.conf.new"
else
  : > "$D/etc/gres.conf.new"
fi
PARTS=""; dflt=YES
for p in ${SLURM_LOCAL_PARTITIONS:-debug}; do
  PARTS+="PartitionName=$p Nodes=$NODE Default=$dflt MaxTime=INFINITE State=UP"$'\n'; dflt=NO
done
if [ $ACCOUNTING = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# for slurmdbd connections Slurm takes the munge socket from AccountingStoragePass
AccountingStoragePass=$MSOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# sacct shows the --comment of a job (the executor plugin puts the rule and wildcards there)
AccountingStoreFlags=job_comment"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > "$D/etc/slurm.conf.new" <<EOF
# generated by scripts/slurm/start_local_slurm.sh
ClusterName=localci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MSOCK
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$D/state/ctld
SlurmdSpoolDir=$D/state/d
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups here: time limits are enforced, memory is not. proctrack/pgid, not linuxproc:
# linuxproc finds a job's processes through their parents, so one that outlives its
# parent (the batch shell dies of SIGTERM at the time limit while a child still shuts
# down) is no longer found and escapes the SIGKILL after KillWait; a process group keeps
# it, as a cgroup does on a real cluster.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
$ACCT
JobCompType=jobcomp/none
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job reaches its time limit
KillWait=${SLURM_LOCAL_KILLWAIT:-10}
# keep finished jobs visible to squeue/scontrol for 5 min (--slurm-status-command squeue)
MinJobAge=300
$GRES
$OVR
$HW NodeAddr=127.0.0.1 State=UNKNOWN
$PARTS
EOF

# ---------------------------------------------------------------- already up?
export SLURM_CONF=$D/etc/slurm.conf
same_conf=0
cmp -s "$D/etc/slurm.conf.new" "$D/etc/slurm.conf" 2>/dev/null \
  && cmp -s "$D/etc/gres.conf.new" "$D/etc/gres.conf" 2>/dev/null && same_conf=1
if [ $same_conf = 1 ] && [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$D/etc/slurm.conf" ] \
   && alive "$D/run/munged.pid" && alive "$D/run/slurmctld.pid" && alive "$D/run/slurmd.pid" \
   && { [ $ACCOUNTING = 0 ] || { alive "$D/run/slurmdbd.pid" && alive "$D/run/mysqld.pid"; }; } \
   && timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  rm -f "$D/etc/slurm.conf.new" "$D/etc/gres.conf.new"
  log "cluster already running: $(timeout 10 sinfo -h -o '%P %a %D %T %N' | tr '\n' ' ')"
  exit 0
fi
# half-started leftovers or another configuration: stop what runs (state is kept)
SLURM_LOCAL_DIR=$D "$HERE/stop_local_slurm.sh" >/dev/null 2>&1 || true
for port in 6817 6818 6819; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use by a process this script did not start (another SLURM?)" >&2
    exit 1
  fi
done
mv -f "$D/etc/slurm.conf.new" "$D/etc/slurm.conf"
mv -f "$D/etc/gres.conf.new" "$D/etc/gres.conf"
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
  mv /etc/slurm/slurm.conf "/etc/slurm/slurm.conf.bak.$$"
fi
ln -sfn "$D/etc/slurm.conf" /etc/slurm/slurm.conf
# gres.conf is read from the directory of slurm.conf
if [ "$GPUS" -gt 0 ] || [ -L /etc/slurm/gres.conf ]; then
  if [ -e /etc/slurm/gres.conf ] && [ ! -L /etc/slurm/gres.conf ]; then
    mv /etc/slurm/gres.conf "/etc/slurm/gres.conf.bak.$$"
  fi
  ln -sfn "$D/etc/gres.conf" /etc/slurm/gres.conf
fi

# ---------------------------------------------------------------- munge
if [ ! -s "$D/munge/munge.key" ]; then
  mungekey --create --keyfile="$D/munge/munge.key" --force
  chmod 400 "$D/munge/munge.key"
fi
munged --socket="$MSOCK" --key-file="$D/munge/munge.key" --log-file="$D/log/munged.log" \
       --pid-file="$D/run/munged.pid" --seed-file="$D/munge/munged.seed"
timeout 10 munge -S "$MSOCK" -n | timeout 10 unmunge -S "$MSOCK" >/dev/null
log "munged up (pid $(cat "$D/run/munged.pid"))"

# ---------------------------------------------------------------- accounting (optional)
if [ $ACCOUNTING = 1 ]; then
  if [ ! -d "$D/mysql/data/mysql" ]; then
    mkdir -p "$D/mysql"
    timeout 120 mariadb-install-db --no-defaults --user=root --datadir="$D/mysql/data" \
        --auth-root-authentication-method=socket --skip-test-db > "$D/log/mariadb-install.log" 2>&1
  fi
  mariadbd --no-defaults --user=root --datadir="$D/mysql/data" --socket="$D/run/mysqld.sock" \
      --pid-file="$D/run/mysqld.pid" --bind-address=127.0.0.1 --port=13306 --skip-name-resolve \
      --log-error="$D/log/mariadb.err" --innodb-buffer-pool-size=256M \
      --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  ok=0
  for _ in $(seq 1 120); do
    timeout 5 mariadb-admin --socket="$D/run/mysqld.sock" ping >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.5
  done
  [ $ok = 1 ] || { echo "mariadb did not start:"; tail -n 20 "$D/log/mariadb.err"; exit 1; } >&2
  timeout 30 mariadb --socket="$D/run/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  log "mariadb up (pid $(cat "$D/run/mysqld.pid"))"
  cat > "$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MSOCK
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf"
  slurmdbd    # reads slurmdbd.conf next to $SLURM_CONF
  ok=0
  for _ in $(seq 1 60); do
    timeout 5 sacctmgr -n show cluster >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.5
  done
  [ $ok = 1 ] || { echo "slurmdbd did not answer:"; tail -n 20 "$D/log/slurmdbd.log"; exit 1; } >&2
  log "slurmdbd up (pid $(cat "$D/run/slurmdbd.pid"))"
fi

# ---------------------------------------------------------------- slurmctld + slurmd
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
ok=0
for _ in $(seq 1 60); do
  alive "$D/run/slurmctld.pid" || { echo "slurmctld died:"; tail -n 20 "$D/log/slurmctld.log"; exit 1; } >&2
  st=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in
    idle*|mixed*|allocated*) ok=1; break ;;
    down*|drain*) timeout 5 scontrol update nodename="$NODE" state=resume || true ;;
  esac
  sleep 0.5
done
if [ $ok = 0 ]; then
  { echo "node did not become idle:"; timeout 5 sinfo || true
    tail -n 20 "$D/log/slurmctld.log" "$D/log/slurmd.log"; } >&2
  exit 1
fi
if [ $ACCOUNTING = 1 ]; then
  # the cluster registers with slurmdbd asynchronously
  for _ in $(seq 1 20); do
    timeout 5 sacctmgr -n show cluster format=cluster 2>/dev/null | grep -q localci && break
    sleep 0.5
  done
fi
log "slurm up: $(timeout 10 sinfo -h -o '%P %a %D %T %N' | tr '\n' ' ')"
timeout 60 srun -t 1 true && log "srun smoke test ok"
