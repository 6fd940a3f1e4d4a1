"""Offline tests for downloads and safe archive extraction (leopart.data.download)."""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import http_server
from test_data_voc import make_authors_layout

from leopart.data.download import check_archive, direct_download_url, download, looks_like_html, safe_extract
from leopart.data.voc import voc_split_index
from leopart.errors import LeopartError
from leopart.io import sha256_file

INVALID = "not a valid zip/tar archive (truncated or wrong file?)"



@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving a mini authors'-layout PVOC zip."""
    folder = tmp_path_factory.mktemp("www")
    src = make_authors_layout(tmp_path_factory.mktemp("src"))
    shutil.make_archive(str(folder / "voc_data"), "zip", root_dir=src)
    (folder / "page.html").write_text("<!DOCTYPE html>\n<html><body>Dropbox - log in</body></html>\n")
    with http_server(folder) as url:
        yield folder, url


def test_direct_download_url():
    assert (direct_download_url("https://www.dropbox.com/s/6gd4x0i9ewasymb/voc_data.zip?dl=0")
            == "https://www.dropbox.com/s/6gd4x0i9ewasymb/voc_data.zip?dl=1")
    assert (direct_download_url("https://www.dropbox.com/scl/fi/abc/x.ckpt?rlkey=k1&dl=0")
            == "https://www.dropbox.com/scl/fi/abc/x.ckpt?rlkey=k1&dl=1")
    assert direct_download_url("https://dropbox.com/s/x/y.pt") == "https://dropbox.com/s/x/y.pt?dl=1"
    other = "https://dl.fbaipublicfiles.com/dino/x.pth?dl=0"
    assert direct_download_url(other) == other


def test_download_extract_and_index(served, tmp_path):
    folder, url = served
    dest = tmp_path / "dl" / "voc_data.zip"
    digest = download(f"{url}/voc_data.zip", dest)
    assert digest == sha256_file(folder / "voc_data.zip") == sha256_file(dest)
    assert download(f"{url}/voc_data.zip", dest, sha256=digest.upper()) == digest  # verified, re-download ok
    assert not looks_like_html(dest)
    data = safe_extract(dest, tmp_path / "data")
    assert voc_split_index(data, "train", expected_count=3).names[0] == "2008_000003"
    assert len(voc_split_index(data, "val", expected_count=2)) == 2
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["voc_data.zip"]


def test_checksum_mismatch_leaves_nothing(served, tmp_path):
    _, url = served
    dest = tmp_path / "voc_data.zip"
    with pytest.raises(LeopartError, match=r"voc_data\.zip\?dl=0: SHA-256 mismatch for voc_data\.zip"):
        download(f"{url}/voc_data.zip?dl=0", dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_html(served, tmp_path):
    _, url = served
    with pytest.raises(LeopartError, match=r"missing\.zip: download failed .*404"):
        download(f"{url}/missing.zip", tmp_path / "m.zip")
    assert list(tmp_path.iterdir()) == []
    page = tmp_path / "page.zip"
    download(f"{url}/page.html", page)
    assert looks_like_html(page)
    with pytest.raises(LeopartError) as exc:
        safe_extract(page, tmp_path / "out")
    assert str(exc.value) == f"{page}: {INVALID}"


def test_truncated_archives_rejected(served, tmp_path):
    folder, _ = served
    data = (folder / "voc_data.zip").read_bytes()
    trunc_zip = tmp_path / "t.zip"
    trunc_zip.write_bytes(data[: len(data) // 2])
    with pytest.raises(LeopartError, match=r"t\.zip: not a valid zip/tar archive"):
        safe_extract(trunc_zip, tmp_path / "out")
    tgz = tmp_path / "full.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(folder / "voc_data.zip", arcname="inner/voc_data.zip")
    raw = tgz.read_bytes()
    trunc_tgz = tmp_path / "t.tar.gz"
    trunc_tgz.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(LeopartError, match=r"t\.tar\.gz: not a valid zip/tar archive"):
        safe_extract(trunc_tgz, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the intact tar.gz extracts
    safe_extract(tgz, tmp_path / "ok")
    assert (tmp_path / "ok" / "inner" / "voc_data.zip").read_bytes() == (folder / "voc_data.zip").read_bytes()
    with pytest.raises(LeopartError, match=r"nothere\.zip: archive file is missing"):
        safe_extract(tmp_path / "nothere.zip", tmp_path / "out")


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, b"x")
    return path


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    ti.size = 1 if kind == tarfile.REGTYPE else 0
    return ti


@pytest.mark.parametrize("bad", ["../evil", "ok/../../evil", "/abs/evil", "C:/evil"])
def test_unsafe_zip_refused(tmp_path, bad):
    archive = _zip(tmp_path / "a.zip", ["good/file.txt", bad])
    dest = tmp_path / "box" / "out"
    with pytest.raises(LeopartError, match=r"a\.zip: refusing to extract, member"):
        safe_extract(archive, dest)
    assert not (tmp_path / "box").exists() or list((tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("member", [
    _info("../evil"),
    _info("/abs/evil"),
    _info("link", tarfile.SYMTYPE, "../outside"),
    _info("sub/link", tarfile.SYMTYPE, "../../outside"),
    _info("link", tarfile.SYMTYPE, "/etc/passwd"),
    _info("hard", tarfile.LNKTYPE, "../outside"),
    _info("dev", tarfile.CHRTYPE),
    _info("fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "abs", "symlink", "nested-symlink", "abs-symlink", "hardlink", "chardev", "fifo"])
def test_unsafe_tar_refused(tmp_path, member):
    archive = _tar(tmp_path / "a.tar", [_info("good.txt"), member])
    dest = tmp_path / "box" / "out"
    with pytest.raises(LeopartError, match=r"a\.tar: refusing to extract, member"):
        safe_extract(archive, dest)
    assert not dest.exists()
    assert list((tmp_path / "box").iterdir()) == [] if (tmp_path / "box").exists() else True


def test_safe_tar_links_and_replace(tmp_path):
    archive = _tar(tmp_path / "a.tar", [_info("d/good.txt"), _info("d/link", tarfile.SYMTYPE, "good.txt")])
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    safe_extract(archive, dest)
    assert (dest / "d" / "link").read_bytes() == b"x"
    assert not (dest / "stale.txt").exists()  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out"]


def test_corrupt_member_mid_extraction_leaves_nothing(tmp_path):
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"A" * 1000)
        zf.writestr("b.txt", b"B" * 1000)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"B" * 100) + 50] = ord("C")  # CRC error in the second member only
    archive.write_bytes(bytes(raw))
    with pytest.raises(LeopartError, match=r"c\.zip: not a valid zip/tar archive"):
        safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zip"]


def test_truncated_download_of_an_archive_keeps_no_file(served, tmp_path):
    """A server that sends a complete response holding a cut archive (no Content-Length mismatch,
    no checksum configured): with ``verify=check_archive`` nothing is kept, so a rerun after the
    server is fixed downloads again instead of failing the same way."""
    folder, url = served
    data = (folder / "voc_data.zip").read_bytes()
    (folder / "cut.zip").write_bytes(data[: len(data) // 2])
    dest = tmp_path / "dl" / "voc_data.zip"
    with pytest.raises(LeopartError, match=r"cut\.zip: not a valid zip/tar archive .*\(file not kept\)"):
        download(f"{url}/cut.zip", dest, verify=check_archive)
    assert list(dest.parent.iterdir()) == []
    digest = download(f"{url}/voc_data.zip", dest, verify=check_archive)
    assert digest == sha256_file(dest)


def test_check_archive_detects_a_corrupt_member(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("x.txt", b"hello world" * 100)
    check_archive(archive)                       # intact
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"hello") + 3] ^= 0xFF         # flip a payload byte: the central directory is intact
    archive.write_bytes(bytes(raw))
    with pytest.raises(LeopartError, match=r"a\.zip: corrupt zip archive \(member 'x\.txt' fails its CRC\)"):
        check_archive(archive)
    text = tmp_path / "t.zip"
    text.write_text("not an archive")
    with pytest.raises(LeopartError, match=rf"t\.zip: {re.escape(INVALID)}"):
        check_archive(text)


def test_unreadable_archive_is_removed_so_the_next_run_downloads_again(tmp_path):
    archive = tmp_path / "voc_data.zip"
    archive.write_bytes(b"PK\x03\x04 cut short")
    record = tmp_path / "voc_data.zip.json"
    record.write_text("{}")
    with pytest.raises(LeopartError) as exc:
        safe_extract(archive, tmp_path / "out", remove_invalid=[archive, record])
    assert str(exc.value) == (f"{archive}: {INVALID}; removed {archive}, {record} so that the next run "
                              "downloads it again")
    assert not archive.exists() and not record.exists() and not (tmp_path / "out").exists()
    # an unsafe (but readable) archive is refused and kept: deleting it would not help
    unsafe = _zip(tmp_path / "unsafe.zip", ["../evil.txt"])
    with pytest.raises(LeopartError, match="refusing to extract"):
        safe_extract(unsafe, tmp_path / "out", remove_invalid=[unsafe])
    assert unsafe.exists()
