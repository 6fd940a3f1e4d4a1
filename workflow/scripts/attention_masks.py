"""Snakemake script: leopart.stages.features.attention_masks."""

from leopart.stages.features import attention_masks
from leopart.stages.runner import run_stage

run_stage(attention_masks, snakemake)
