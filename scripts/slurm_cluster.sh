#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the end-to-end tests of sharded
# inference: `start` installs Debian's slurm-wlm and munge if missing, writes a
# single-node slurm.conf (this machine's cores, no cgroups), starts munged, slurmctld
# and slurmd, and waits until the node is idle; `stop` ends the daemons it started, by
# their pid files. Both may be run again at any time. Needs root.
#
# Exit status of `start`: 0 ready; 2 not root; 3 no way to install Slurm (no apt-get or
# the install failed); 4 a slurm.conf this script did not write is in place; 5 the
# daemons started but the node never became idle (logs under $STATE_DIR/log).
set -euo pipefail

STATE_DIR=${CDWQC_SLURM_DIR:-/var/lib/cdwqc-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# Written by cdwqc scripts/slurm_cluster.sh"

say() { echo "slurm_cluster: $*" >&2; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    say "slurm-wlm and munge are not installed and there is no apt-get to install them"
    exit 3
  fi
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q slurm-wlm munge >"$STATE_DIR/apt.log" 2>&1; then
    apt-get update -q >>"$STATE_DIR/apt.log" 2>&1 || true
    if ! apt-get install -y -q slurm-wlm munge >>"$STATE_DIR/apt.log" 2>&1; then
      say "apt-get could not install slurm-wlm and munge (see $STATE_DIR/apt.log)"
      exit 3
    fi
  fi
}

start_munge() {
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    head -c 1024 /dev/urandom >/etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 400 /etc/munge/munge.key
  chmod 755 /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    su -s /bin/sh munge -c /usr/sbin/munged
    # Only a munged started here is stopped by `stop`.
    touch "$STATE_DIR/munged.ours"
    for _ in $(seq 1 50); do
      munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    say "munged did not answer (see /var/log/munge/munged.log)"
    exit 5
  fi
}

write_conf() {
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  # Slurm refuses a node that has less memory than it declares: declare 90% of it.
  memory=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    say "$CONF exists and was not written by this script: leaving it (and this cluster) alone"
    exit 4
  fi
  mkdir -p /etc/slurm "$STATE_DIR/state" "$STATE_DIR/spool" "$STATE_DIR/log"
  cat >"$CONF.new" <<EOF
$MARKER: one node, this machine.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/log/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -f $CONF ]] && cmp -s "$CONF" "$CONF.new"; then
    rm -f "$CONF.new"
  else
    mv "$CONF.new" "$CONF"
    # A running controller reads a changed file only when restarted.
    stop_daemons
  fi
}

stop_daemons() {
  local pid_file
  for pid_file in "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"; do
    if alive "$pid_file"; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
      for _ in $(seq 1 50); do
        alive "$pid_file" || break
        sleep 0.1
      done
    fi
    rm -f "$pid_file"
  done
}

wait_idle() {
  local host state
  host=$(hostname -s)
  for _ in $(seq 1 300); do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n1 || true)
    case $state in
      idle | mixed | allocated) return 0 ;;
      down* | drain* | fail*)
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.1
  done
  say "the node is '${state:-unknown}', not idle, after 30 s (see $STATE_DIR/log)"
  exit 5
}

start() {
  if [[ $(id -u) -ne 0 ]]; then
    say "needs root to install and run the Slurm daemons"
    exit 2
  fi
  mkdir -p "$STATE_DIR/log"
  install_packages
  start_munge
  write_conf
  alive "$STATE_DIR/slurmctld.pid" || /usr/sbin/slurmctld
  alive "$STATE_DIR/slurmd.pid" || /usr/sbin/slurmd
  wait_idle
  say "node $(hostname -s) idle ($(nproc) CPUs; state and logs in $STATE_DIR)"
}

stop() {
  stop_daemons
  local munge_pid=/run/munge/munged.pid
  if [[ -f $STATE_DIR/munged.ours ]] && alive "$munge_pid"; then
    kill "$(cat "$munge_pid")" 2>/dev/null || true
  fi
  rm -f "$STATE_DIR/munged.ours"
  say "stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 64
    ;;
esac
