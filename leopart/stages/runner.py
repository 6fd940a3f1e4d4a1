"""Run a pipeline stage from a Snakemake ``script:`` with logging, thread limits, provenance and
one-line errors.

A stage is a function ``stage(call: StageCall) -> Sidecars | None``. :class:`StageCall` holds plain
mappings (``input``, ``output``, ``params``, ``wildcards``) and ``threads``, so a stage can be called
without Snakemake. The stage returns the provenance sidecars it wants: ``{output name: extra}``.
:func:`run_stage` then writes, for each named output, the record of :func:`leopart.io.provenance`
(stage = the rule's name, params, input and output checksums, versions, ``extra``) to the output's
sidecar (``x.npy`` -> ``x.json``); a JSON output is its own sidecar, and the record is merged into it.

Bad input raises :class:`LeopartError`; the runner writes its one-line message to the rule's log and
to stderr and exits with status 1 — no traceback. Outputs are written atomically by
:mod:`leopart.io`, and Snakemake removes the outputs of failed jobs, so a failed or interrupted job
leaves no half-written artefact behind.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leopart.errors import LeopartError
from leopart.io import file_info, provenance, read_json, sidecar_path, write_json

log = logging.getLogger("leopart")

#: What a stage returns: the outputs that get a provenance sidecar, each with its extra fields.
Sidecars = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class StageCall:
    """The arguments of one job: paths by name (an input may be a list of paths), the rule's
    ``params:``, the job's wildcards and its thread count."""

    input: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    wildcards: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1

    @classmethod
    def from_snakemake(cls, smk: Any) -> StageCall:
        """The named entries of Snakemake's ``snakemake`` object (every rule names its files)."""

        def paths(value: Any) -> str | list[str]:
            return str(value) if isinstance(value, str) else [str(v) for v in value]

        return cls(
            input={name: paths(value) for name, value in smk.input.items()},
            output={name: str(value) for name, value in smk.output.items()},
            params=dict(smk.params.items()),
            wildcards={name: str(value) for name, value in smk.wildcards.items()},
            threads=int(smk.threads),
        )


def setup_logging(log_path: str | None) -> None:
    """Log INFO to stderr and, when given, to ``log_path`` (the rule's ``log:`` file)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def set_threads(threads: int) -> None:
    """Cap the OpenMP, torch and faiss thread pools at ``threads``.

    ``OMP_NUM_THREADS`` covers libraries imported later (torch and faiss read it when they load);
    those already imported are set directly. torch is not imported here: it costs seconds and
    hundreds of MB, which the many small numpy-only stages should not pay.
    """
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def write_sidecars(stage: str, call: StageCall, sidecars: Sidecars) -> None:
    """Write the provenance record of each output named in ``sidecars`` (see the module doc).

    JSON results get their record first, so that the other sidecars checksum them as final.
    """
    if not sidecars:
        return
    unknown = sorted(set(sidecars) - set(call.output))
    if unknown:
        raise ValueError(f"stage {stage}: sidecars for unknown outputs {unknown}")
    record = provenance(stage=stage, params=call.params, inputs=call.input, outputs=call.output)
    results = [name for name in sidecars if sidecar_path(call.output[name]) == Path(call.output[name])]
    for name in results:
        others = {n: info for n, info in record["outputs"].items() if n != name}
        write_json(call.output[name], {**read_json(call.output[name]), **record, "outputs": others,
                                       **sidecars[name]})
    for name in results:
        record["outputs"][name] = file_info(call.output[name])
    for name, extra in sidecars.items():
        if name not in results:
            write_json(sidecar_path(call.output[name]), {**record, **extra})


def run_stage(stage: Callable[[StageCall], Sidecars | None], smk: Any) -> None:
    """Run ``stage`` for the Snakemake job ``smk``: logging, threads, sidecars, one-line errors."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    call = StageCall.from_snakemake(smk)
    set_threads(call.threads)
    start = time.perf_counter()
    try:
        write_sidecars(smk.rule, call, stage(call) or {})
    except LeopartError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("interrupted")
        sys.exit(130)
    log.info("%s finished in %.1f s", smk.rule, time.perf_counter() - start)
