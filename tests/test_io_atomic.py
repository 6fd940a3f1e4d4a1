"""Atomic artefact writes: a killed writer's temporaries are removed by the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from leopart.io import atomic_dir, npy_writer, remove_stale_temporaries, save_npy


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kill_9_mid_write_then_rerun_leaves_no_temporary(tmp_path: Path) -> None:
    """Reproduces the fault: ``kill -9`` while a feature dump is being written leaves a hidden
    temporary; the next write of the same artefact removes it."""
    out = tmp_path / "features" / "train_tokens.npy"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from leopart.io import npy_writer
        with npy_writer({str(out)!r}, (64, 8, 8, 16), np.float32) as arr:
            arr[:32] = 1.0
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    left = _hidden(out.parent)
    assert len(left) == 1 and left[0].startswith(".train_tokens.npy.pid")   # the fault
    with npy_writer(out, (64, 8, 8, 16), np.float32) as arr:
        arr[:] = 2.0
    assert _hidden(out.parent) == []
    assert np.load(out).min() == 2.0


def test_temporaries_of_a_live_writer_and_of_other_artefacts_are_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".x.npy.pid{sleeper.pid}.abc.tmp.npy"
        live.write_bytes(b"in progress")
        other = tmp_path / ".y.npy.pid999999999.abc.tmp.npy"      # another artefact's
        other.write_bytes(b"")
        unrelated = tmp_path / ".x.npy.notes"                      # not our naming scheme
        unrelated.write_bytes(b"")
        dead_dir = tmp_path / ".x.npy.pid999999999.def.tmp"        # a killed folder writer's
        dead_dir.mkdir()
        (dead_dir / "member").write_bytes(b"")
        removed = remove_stale_temporaries(tmp_path / "x.npy")
        assert removed == [dead_dir]
        assert live.exists() and other.exists() and unrelated.exists()
        save_npy(tmp_path / "x.npy", np.arange(3))
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.exists(tmp_path / "x.npy")


def test_atomic_dir_cleans_a_killed_unpack(tmp_path: Path) -> None:
    stale = tmp_path / ".unpacked.pid999999999.zz.tmp"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"")
    with atomic_dir(tmp_path / "unpacked") as tmp:
        (tmp / "a.txt").write_text("ok")
    assert _hidden(tmp_path) == []
    assert (tmp_path / "unpacked" / "a.txt").read_text() == "ok"
