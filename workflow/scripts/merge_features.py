"""Snakemake script: leopart.stages.features.merge_features."""

from leopart.stages.features import merge_features
from leopart.stages.runner import run_stage

run_stage(merge_features, snakemake)
