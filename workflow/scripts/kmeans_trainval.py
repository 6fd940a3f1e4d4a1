"""Snakemake script: leopart.stages.clustering.kmeans_trainval."""

from leopart.stages.clustering import kmeans_trainval
from leopart.stages.runner import run_stage

run_stage(kmeans_trainval, snakemake)
