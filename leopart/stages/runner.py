"""Run a pipeline stage from a Snakemake ``script:`` with logging and one-line errors.

Stage functions take the ``snakemake`` object (``input``, ``output``, ``params``, ``threads``,
``log``, ``wildcards``) and call the library. Bad input raises :class:`LeopartError`; the runner
writes its one-line message to the rule's log and to stderr and exits with status 1 — no traceback.
Outputs are written atomically by :mod:`leopart.io`, and Snakemake removes the outputs of failed
jobs, so a failed or interrupted job leaves no half-written artefact behind.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from leopart.errors import LeopartError

log = logging.getLogger("leopart")


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
    """Cap the torch/faiss thread pools at the rule's ``threads``.

    Only libraries the stage has already imported are touched: importing torch costs seconds and
    hundreds of MB, which the many small numpy-only stages should not pay.
    """
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def run_stage(main: Callable[[Any], None], smk: Any) -> None:
    """Call ``main(smk)`` with logging and thread limits; turn user errors into one line + exit 1."""
    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    set_threads(getattr(smk, "threads", 1))
    name = getattr(smk, "rule", main.__module__)
    start = time.perf_counter()
    try:
        main(smk)
    except LeopartError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("interrupted")
        sys.exit(130)
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)


def params_of(smk: Any) -> dict[str, Any]:
    """The rule's ``params:`` as a plain dict (for provenance sidecars)."""
    return dict(smk.params.items())
