"""Snakemake script: leopart.stages.data.toy_dataset."""

from leopart.stages.data import toy_dataset
from leopart.stages.runner import run_stage

run_stage(toy_dataset, snakemake)
