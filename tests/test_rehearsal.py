"""A rehearsal of the real reproduction, offline: `config/pvoc.yaml` end to end from downloads.

An HTTP server on 127.0.0.1 serves a miniature of each file the real run downloads, in its real
format (see ``rehearsal_files``): the authors' VOC zip (a few dozen real masks, synthetic
images), DINO's full ViT-S/16 checkpoint and a Leopart Lightning checkpoint. The run uses
``config/pvoc.yaml`` with only the URLs, their checksums and the sizes that keep it fast
overridden, so every rule of the real path runs — downloads and checksum verification included.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import http_server
from rehearsal_files import build_dino_full_checkpoint, build_leopart_lightning_checkpoint, build_voc_zip
from test_workflow import smk, workdir  # noqa: F401 - pytest fixture

from leopart.io import read_json, sha256_file

ROOT = Path(__file__).resolve().parents[1]

#: Every rule of the real path (config/pvoc.yaml with downloads) that the table needs.
REAL_PATH_RULES = {"pvoc_download", "pvoc_unpack", "fetch_weights", "manifest", "ground_truth",
                   "extract_features", "attention_masks", "pca_val", "pca_trainval", "overcluster_kmeans",
                   "kmeans_trainval", "cbfe", "fg_kmeans", "cooccurrence", "cd_edges", "infomap_env", "infomap",
                   "cd_score", "table5", "default_table"}



@pytest.fixture(scope="module")
def server(tmp_path_factory, voc_masks_dir):
    """(folder, base URL) of a server on 127.0.0.1 holding the three miniature downloads."""
    www = tmp_path_factory.mktemp("www")
    build_voc_zip(voc_masks_dir, www / "voc_data.zip", n_train=24, n_val=16)
    build_dino_full_checkpoint(www / "dino_deitsmall16_pretrain_full_checkpoint.pth")
    build_leopart_lightning_checkpoint(www / "leopart_vits16.ckpt")
    with http_server(www) as url:
        yield www, url


def _overlay(www: Path, url: str, infomap_envs: Path) -> dict:
    """config/pvoc.yaml's URLs and checksums pointed at the server, sizes that keep it fast, the
    shared infomap 2.2.0 build (built once per checkout, see conftest)."""
    return {
        "dataset": {"pvoc": {"url": f"{url}/voc_data.zip", "sha256": sha256_file(www / "voc_data.zip"),
                             "voc2012": False},                     # 24 + 16 images, not VOC's counts
                    "ground_truth": {"input_size": 224}},
        "models": {
            "dino": {"weights": {"url": f"{url}/dino_deitsmall16_pretrain_full_checkpoint.pth",
                                 "sha256": sha256_file(www / "dino_deitsmall16_pretrain_full_checkpoint.pth")}},
            "leopart": {"weights": {"url": f"{url}/leopart_vits16.ckpt",
                                    "sha256": sha256_file(www / "leopart_vits16.ckpt")}},
        },
        "features": {"input_size": 224, "batch_size": 8, "num_workers": 0},
        "overcluster": {"val_limit": 12},
        "cd": {"infomap_envs": str(infomap_envs)},
        "threads": 2,
    }


@pytest.mark.slow
def test_rehearsal_of_the_real_reproduction(server, workdir: Path,  # noqa: F811 - fixture
                                            infomap_authors_env: Path) -> None:
    www, url = server
    overlay = workdir / "rehearsal.yaml"
    overlay.write_text(yaml.safe_dump(_overlay(www, url, infomap_authors_env.parent)))
    proc = smk("results/table5.csv", "--cores", "2", "--configfile", "config/pvoc.yaml", str(overlay),
               cwd=workdir)
    log = proc.stdout + proc.stderr
    ran = set(re.findall(r"^(?:rule|localrule|checkpoint|localcheckpoint) (\w+):", log, flags=re.M))
    assert REAL_PATH_RULES <= ran, f"rules of the real path that did not run: {REAL_PATH_RULES - ran}"

    # downloads verified against the configured checksums, files intact
    for name, served in (("resources/pvoc/voc_data.zip", "voc_data.zip"),
                         ("resources/weights/dino.pth", "dino_deitsmall16_pretrain_full_checkpoint.pth"),
                         ("resources/weights/leopart.pth", "leopart_vits16.ckpt")):
        record = read_json(workdir / f"{name}.json", "download record")
        assert record["verified"] is True and record["sha256"] == sha256_file(www / served)
        assert sha256_file(workdir / name) == sha256_file(www / served)

    table = pd.read_csv(workdir / "results" / "pvoc" / "table5.csv")
    # config/pvoc.yaml reports the label-free rows beside the paper's (label_free.rows: true)
    assert list(table["row"]) == ["DINO", "+ Leopart", "+ CBFE", "+ CBFE (label-free)", "+ CD",
                                  "+ CD (label-free)", "upper bound"]
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in table["miou"])
    assert table["paper"].isna().all()      # a miniature (voc2012: false) is not compared with the paper
    default_table = (workdir / "results" / "table5.csv").read_bytes()
    assert default_table == (workdir / "results" / "pvoc" / "table5.csv").read_bytes()
    manifest = pd.read_parquet(workdir / "results" / "pvoc" / "dataset" / "val.parquet")
    assert len(manifest) == 16
