"""Snakemake script: leopart.stages.train.train_leopart_stage."""

from leopart.stages.runner import run_stage
from leopart.stages.train import train_leopart_stage

run_stage(train_leopart_stage, snakemake)
