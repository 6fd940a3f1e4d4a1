"""`python -m leopart inspect` and `show`: streamed summaries, provenance, label-map overlays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leopart.cli import main
from leopart.errors import LeopartError
from leopart.inspect_artefact import describe, summarise_array
from leopart.io import provenance, save_npy, sidecar_path, write_json, write_parquet
from leopart.overlay import render_overlay, resize_nearest, voc_palette
from leopart.resample import upsample_labels

ROOT = Path(__file__).resolve().parents[1]


# ---- inspect ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
def test_chunked_integer_summary_equals_whole_array_counts(order: str) -> None:
    rng = np.random.default_rng(0)
    arr = np.asarray(rng.integers(0, 9, size=(7, 5, 6)), dtype=np.int32, order=order)
    arr[0, 0, 0] = 255
    s = summarise_array(arr, chunk_bytes=40)  # 10 elements per chunk: 21 chunks
    values, counts = np.unique(arr, return_counts=True)
    assert s.distinct == values.size
    assert dict(zip(s.values, s.counts)) == dict(zip(values.tolist(), counts.tolist()))
    assert s.counts == sorted(s.counts, reverse=True)
    assert (s.min, s.max) == (0, 255)
    assert s.mean == pytest.approx(arr.mean())
    assert s.count == arr.size


@pytest.mark.parametrize("order", ["C", "F"])
def test_memmap_chunks_equal_in_memory_summary(tmp_path: Path, order: str) -> None:
    rng = np.random.default_rng(1)
    arr = np.asarray(rng.integers(-5, 5, size=(6, 7, 3)), dtype=np.int16, order=order)
    np.save(tmp_path / "x.npy", arr)  # np.save keeps Fortran order on disk
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.flags.f_contiguous == (order == "F")
    assert summarise_array(mm, chunk_bytes=10) == summarise_array(np.array(arr), chunk_bytes=1 << 20)
    f = rng.standard_normal((5, 4)).astype(np.float64)
    np.save(tmp_path / "f.npy", f)
    s = summarise_array(np.load(tmp_path / "f.npy", mmap_mode="r"), chunk_bytes=24)
    assert (s.min, s.max) == (f.min(), f.max()) and s.mean == pytest.approx(f.mean())


def test_float_summary_skips_non_finite() -> None:
    arr = np.array([[1.0, np.nan], [3.0, np.inf]], dtype=np.float32)
    s = summarise_array(arr, chunk_bytes=4)
    assert (s.min, s.max, s.mean, s.nonfinite) == (1.0, 3.0, 2.0, 2)
    assert s.distinct is None


def test_npy_is_memory_mapped_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_npy(tmp_path / "x.npy", np.arange(100, dtype=np.int64).reshape(10, 10))
    seen = []
    real = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("mmap_mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    text = describe(tmp_path / "x.npy")
    assert seen == ["r"]
    assert "shape (10, 10)  dtype int64" in text and "min 0  max 99  mean 49.5" in text
    assert "distinct values 100" in text


def test_describe_npy_with_sidecar_parquet_json(tmp_path: Path) -> None:
    labels = tmp_path / "val_labels.npy"
    save_npy(labels, np.array([[[0, 0, 2], [2, 2, 255]]], dtype=np.uint8))
    write_json(sidecar_path(labels), provenance(stage="fg_kmeans", params={"k": 6}, inputs={"x": labels}))
    text = describe(labels)
    assert "distinct values 3; most frequent: 2: 3 (50.0%), 0: 2 (33.3%), 255: 1 (16.7%)" in text
    assert "stage fg_kmeans" in text and 'params {"k": 6}' in text and "x: " in text

    table = tmp_path / "edges.parquet"
    write_parquet(table, pd.DataFrame({"source": [0, 1, 2], "target": [1, 2, 0], "weight": [0.5, 0.25, 1.0]}))
    text = describe(table, rows=2)
    assert "rows 3  columns 3" in text and "weight: double" in text
    assert "head (2 rows)" in text and "0.25" in text and "1.0" not in text.split("head")[1]
    assert "provenance: no sidecar" in text

    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"miou": 41.7, "iou_per_class": list(range(30)),
                         **provenance(stage="score", params={"matching": "hungarian"})})
    text = describe(metrics)
    assert "miou: 41.7" in text and "… 22 more" in text and "stage score" in text


def test_inspect_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    (tmp_path / "x.bin").write_bytes(b"\0")
    for name, message in (("missing.npy", "file is missing"), ("bad.npy", "cannot read as .npy"),
                          ("x.bin", "unsupported artefact type")):
        with pytest.raises(LeopartError, match=message):
            describe(tmp_path / name)
        assert main(["inspect", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / name) in err


# ---- show ---------------------------------------------------------------------------------


def test_voc_palette_known_colours() -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]  # ignore
    assert len({tuple(c) for c in voc_palette(1000)}) == 1000


def test_resize_nearest_is_the_evaluation_upsampling() -> None:
    lab = np.arange(28 * 28, dtype=np.int32).reshape(28, 28)
    np.testing.assert_array_equal(resize_nearest(lab, 100, 100), upsample_labels(lab, 100))
    assert resize_nearest(lab, 60, 90).shape == (60, 90)


def _toy_run(tmp_path: Path) -> tuple[Path, Path]:
    """results/r with a (2, 2, 2) label map, a 4x4 image per row and the dataset manifest."""
    run = tmp_path / "results" / "r"
    (run / "dataset" / "img").mkdir(parents=True)
    images = []
    for i in range(2):
        p = run / "dataset" / "img" / f"{i}.png"
        Image.fromarray(np.full((4, 6, 3), 100 * i, dtype=np.uint8)).save(p)
        images.append(str(p.relative_to(tmp_path)))
    write_parquet(run / "dataset" / "val.parquet", pd.DataFrame({"name": ["a", "b"], "image": images,
                                                                   "mask": ["m0", "m1"]}))
    labels = run / "labels.npy"
    save_npy(labels, np.array([[[0, 1], [2, 255]], [[15, 15], [0, 0]]], dtype=np.int32))
    return run, labels


def test_overlay_blends_upsampled_palette_with_manifest_image(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run, labels = _toy_run(tmp_path)
    monkeypatch.chdir(tmp_path / "results")  # manifest paths resolve against the work folder, not cwd
    rgb, info = render_overlay(labels, 1, image=run / "dataset" / "val.parquet", alpha=0.5, min_size=1)
    assert rgb.shape == (4, 6, 3) and info["image_size"] == [4, 6]
    person = (0.5 * np.array([192, 128, 128]) + 0.5 * 100 + 0.5).astype(np.uint8)
    background = np.uint8(0.5 * 100 + 0.5)
    np.testing.assert_array_equal(rgb[:2, :], np.broadcast_to(person, (2, 6, 3)))
    np.testing.assert_array_equal(rgb[2:, :], background)
    assert info["labels_present"] == [0, 15]


def test_overlay_without_image_and_run_axis(tmp_path: Path) -> None:
    runs = tmp_path / "val_merged.npy"
    save_npy(runs, np.stack([np.zeros((3, 2, 2), np.int16), np.ones((3, 2, 2), np.int16)]))
    rgb, info = render_overlay(runs, 2, run=1, min_size=8)
    assert rgb.shape == (8, 8, 3) and info["scale"] == 4 and info["run"] == 1
    assert (rgb == np.array([128, 0, 0], np.uint8)).all()
    rgb, _ = render_overlay(runs, 2, min_size=1)  # run 0 by default
    assert (rgb == 0).all()


@pytest.mark.parametrize("args, message", [
    (["labels.npy", "2"], "image index 2 out of range"),
    (["labels.npy", "0", "--run", "1"], "no run axis"),
    (["float.npy", "0"], "expected integers"),
    (["missing.npy", "0"], "label map file is missing"),
    (["labels.npy", "0", "--image", "nope.png"], "image file is missing"),
    (["labels.npy", "0", "--image", "maskonly.parquet"], "mask-only"),
])
def test_show_bad_input_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    run, _ = _toy_run(tmp_path)
    save_npy(run / "float.npy", np.zeros((1, 2, 2), np.float32))
    write_parquet(run / "maskonly.parquet", pd.DataFrame({"name": ["a"], "image": pd.Series([None], dtype="string"),
                                                          "mask": ["m"]}))
    monkeypatch.chdir(run)
    assert main(["show", *args, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


def test_python_dash_m_show_writes_png(tmp_path: Path) -> None:
    run, labels = _toy_run(tmp_path)
    out = tmp_path / "overlay.png"
    proc = subprocess.run([sys.executable, "-m", "leopart", "show", str(labels), "0", "--image",
                           str(run / "dataset" / "val.parquet"), "--out", str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "labels [0, 1, 2, 255]" in proc.stdout
    with Image.open(out) as im:
        arr = np.asarray(im)
    assert arr.shape == (172, 258, 3)  # 4x6 image enlarged x43: the longer side reaches 256 px
    # top-left quadrant: label 0 over black image = black; bottom-right: ignore colour blended
    assert arr[0, 0].tolist() == [0, 0, 0]
    assert arr[-1, -1].tolist() == [112, 112, 96]
