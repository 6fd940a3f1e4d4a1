"""Snakemake script: leopart.stages.features.pca."""

from leopart.stages.features import pca
from leopart.stages.runner import run_stage

run_stage(pca, snakemake)
