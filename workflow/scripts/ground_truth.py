"""Snakemake script: leopart.stages.data.ground_truth."""

from leopart.stages.data import ground_truth
from leopart.stages.runner import run_stage

run_stage(ground_truth, snakemake)
