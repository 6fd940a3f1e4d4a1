"""Snakemake script: leopart.stages.data.fetch_weights."""

from leopart.stages.data import fetch_weights
from leopart.stages.runner import run_stage

run_stage(fetch_weights, snakemake)
