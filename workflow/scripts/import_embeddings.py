"""Snakemake script: leopart.stages.features.import_embeddings."""

from leopart.stages.features import import_embeddings
from leopart.stages.runner import run_stage

run_stage(import_embeddings, snakemake)
