"""Snakemake script: leopart.stages.features.extract_features."""

from leopart.stages.features import extract_features
from leopart.stages.runner import run_stage

run_stage(extract_features, snakemake)
