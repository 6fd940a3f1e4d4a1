"""Snakemake script: leopart.stages.data.manifest."""

from leopart.stages.data import manifest
from leopart.stages.runner import run_stage

run_stage(manifest, snakemake)
