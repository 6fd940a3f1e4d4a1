"""Snakemake script: leopart.stages.train.train_dino_stage."""

from leopart.stages.runner import run_stage
from leopart.stages.train import train_dino_stage

run_stage(train_dino_stage, snakemake)
