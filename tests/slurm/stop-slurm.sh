#!/bin/bash
# Stop daemons started by start-slurm.sh, by their PID files (never by process name):
# SIGTERM, wait up to 10 s each, then SIGKILL. Arguments pick daemons among slurmd, slurmctld and
# munged (default: all three, in that order). Safe to run when nothing is running.
# Stopping all three also removes the slurm.conf that start-slurm.sh wrote (restoring one that was
# there before): with SLURM's client tools installed and a slurm.conf naming a controller that no
# longer runs, every `scontrol` call -- and so every Snakemake start, whose SLURM executor plugin
# calls `scontrol show config` on import -- waits ~10 s for a timeout; without a slurm.conf it
# fails at once.
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
if [ "$*" = "slurmd slurmctld munged" ] && [ -e /etc/slurm/slurm.conf ] \
   && grep -q '^# written by leopart tests/slurm/start-slurm.sh' /etc/slurm/slurm.conf; then
  rm -f /etc/slurm/slurm.conf
  if [ -e /etc/slurm/slurm.conf.before-leopart-test ]; then
    mv /etc/slurm/slurm.conf.before-leopart-test /etc/slurm/slurm.conf
  fi
fi
exit 0
