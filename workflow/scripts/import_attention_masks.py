"""Snakemake script: leopart.stages.features.import_attention_masks."""

from leopart.stages.features import import_attention_masks
from leopart.stages.runner import run_stage

run_stage(import_attention_masks, snakemake)
