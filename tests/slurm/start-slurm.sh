#!/bin/bash
# Start a single-node SLURM cluster (munged + slurmctld + slurmd) without systemd, for tests/CI.
#
# Needs root and Debian's slurm-wlm + munge packages (tests/slurm/install-slurm.sh). Writes
# /etc/slurm/slurm.conf for one node named after this host with all its CPUs and 80 % of its
# memory, partition "debug". No slurmdbd: accounting is off (sacct does not work, so Snakemake
# must poll with --slurm-status-command squeue) and finished jobs are appended to
# $JOBCOMP (default /var/log/slurm/jobcomp.log). The daemons fork into the background and write
# their PID files to $PIDDIR (munged: /run/munge/munged.pid); stop them with stop-slurm.sh.
# Exits 0 once the node is idle, non-zero if it is not idle within 60 s. A slurm.conf that was
# there before is kept as slurm.conf.before-leopart-test; stop-slurm.sh puts it back.
set -euo pipefail
H=$(hostname -s)
PIDDIR=${PIDDIR:-/run/slurm-ci}
JOBCOMP=${JOBCOMP:-/var/log/slurm/jobcomp.log}
CPUS=$(nproc)
MEM=${SLURM_REALMEM:-$(awk '/^MemTotal:/{print int($2 / 1024 * 0.8)}' /proc/meminfo)}

install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d /var/lib/slurm/slurmd "$PIDDIR" /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && ! grep -q '^# written by leopart tests/slurm/start-slurm.sh' /etc/slurm/slurm.conf; then
  mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.before-leopart-test
fi
cat > /etc/slurm/slurm.conf <<CONF
# written by leopart tests/slurm/start-slurm.sh (removed by stop-slurm.sh)
ClusterName=localci
SlurmctldHost=${H}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=${PIDDIR}/slurmctld.pid
SlurmdPidFile=${PIDDIR}/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups, no systemd: plain process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: accounting off (=> sacct does NOT work); finished jobs go to a text file
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
# squeue keeps finished jobs this long; the snakemake plugin needs >= 3 x its init interval
# and more than its 180 s poll cap, else it falls back to sacct or misses finished jobs
MinJobAge=300
NodeName=${H} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${H} Default=YES MaxTime=INFINITE State=UP
CONF

t0=$(date +%s.%N)
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || { echo "missing /etc/munge/munge.key (reinstall munge)" >&2; exit 1; }
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
scontrol ping >/dev/null 2>&1 || /usr/sbin/slurmctld
{ [ -s "$PIDDIR/slurmd.pid" ] && kill -0 "$(cat "$PIDDIR/slurmd.pid")" 2>/dev/null; } || /usr/sbin/slurmd
for _ in $(seq 1 120); do
  [ "$(sinfo -h -N -o %t 2>/dev/null)" = "idle" ] && break
  sleep 0.5
done
echo "node: $(sinfo -h -N -o '%N %t %c CPUs %m MB')  ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
[ "$(sinfo -h -N -o %t)" = "idle" ]
