"""Snakemake script: leopart.stages.clustering.score_labels."""

from leopart.stages.clustering import score_labels
from leopart.stages.runner import run_stage

run_stage(score_labels, snakemake)
