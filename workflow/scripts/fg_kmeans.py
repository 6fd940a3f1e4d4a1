"""Snakemake script: leopart.stages.clustering.fg_kmeans."""

from leopart.stages.clustering import fg_kmeans
from leopart.stages.runner import run_stage

run_stage(fg_kmeans, snakemake)
