#!/bin/bash
# Stop daemons started by start-slurm.sh, by their PID files (never by process name):
# SIGTERM, wait up to 10 s each, then SIGKILL. Arguments pick daemons among slurmd, slurmctld and
# munged (default: all three, in that order). Safe to run when nothing is running.
PIDDIR=${PIDDIR:-/run/slurm-ci}
[ $# -gt 0 ] || set -- slurmd slurmctld munged
for d in "$@"; do
  case "$d" in
    slurmd|slurmctld) f="$PIDDIR/$d.pid" ;;
    munged) f=/run/munge/munged.pid ;;
    *) echo "unknown daemon $d" >&2; exit 2 ;;
  esac
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$f"
done
exit 0
