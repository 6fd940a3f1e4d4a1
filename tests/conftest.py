"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LEOPART_SHARED", REPO_ROOT.parent / "shared"))
VOC_MASKS = SHARED / "data" / "voc2012-masks"


@pytest.fixture(scope="session")
def voc_masks_dir() -> Path:
    """The real PVOC 2012 train/val masks shipped beside the checkout (skip if absent)."""
    if not (VOC_MASKS / "SegmentationClass").is_dir():
        pytest.skip(f"real VOC masks not found at {VOC_MASKS}")
    return VOC_MASKS


@pytest.fixture()
def one_torch_thread():
    """One intra-op torch thread: on a shared 2-core machine it is several times faster than two."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


INFOMAP_ENVS = Path(os.environ.get("LEOPART_INFOMAP_ENVS") or REPO_ROOT / "resources" / "envs")


@pytest.fixture(scope="session")
def infomap_authors_env() -> Path:
    """infomap 2.2.0 (``cd.infomap: authors``), built once into ``resources/envs`` of the checkout
    (or ``$LEOPART_INFOMAP_ENVS``) and reused by later sessions. The first build needs PyPI (or a
    pip cache holding the wheel) and a C++ compiler: about 3 CPU-minutes."""
    from leopart.cd.infomap_env import ensure_infomap_env

    return ensure_infomap_env(root=INFOMAP_ENVS)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (an ephemeral port) and yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the SLURM tests last. While their cluster runs, and after a teardown that could not
    remove its slurm.conf, every Snakemake start waits up to 10 s: the SLURM executor plugin runs
    ``scontrol show config`` when it is imported, and that waits for the controller the config
    names (README, Troubleshooting). Tests that run Snakemake go first."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)  # stable sort
