#!/bin/bash
# Install Debian's SLURM (slurmctld, slurmd, client) and munge if missing; a no-op when present.
# Needs root and apt-get. About 9 packages, 3.5 MB download.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
   && command -v munged >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge
}
