"""Snakemake script: leopart.stages.clustering.overcluster_kmeans."""

from leopart.stages.clustering import overcluster_kmeans
from leopart.stages.runner import run_stage

run_stage(overcluster_kmeans, snakemake)
