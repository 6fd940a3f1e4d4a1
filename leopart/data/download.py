"""Downloads and archive extraction: streamed, checksummed, atomic, and safe against hostile archives.

* :func:`download` streams a URL (Dropbox ``?dl=0`` share links are rewritten to direct ``?dl=1``
  links, spec §10) into a temporary file beside the destination, hashes it on the fly, verifies the
  SHA-256 when one is given, and only then moves it into place. It returns the digest so the first
  download can record it (the authors publish no checksums).
* :func:`looks_like_html` lets a caller detect an HTML page (an expired share link, a login page)
  where an archive or checkpoint was expected.
* :func:`safe_extract` unpacks a zip or tar(.gz/.bz2/.xz) archive after checking *every* member:
  absolute paths, ``..`` components, links that point outside the archive and device files make it
  refuse the whole archive. It extracts into a temporary folder beside the destination and renames
  it into place (:func:`leopart.io.atomic_dir`), so an interrupted unpack leaves nothing under the final name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import posixpath
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from leopart.errors import LeopartError
from leopart.io import atomic_dir, atomic_path

CHUNK_BYTES = 1 << 20
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile,
                   lzma.LZMAError, NotImplementedError)


def direct_download_url(url: str) -> str:
    """Rewrite a Dropbox share link (``?dl=0`` or no ``dl``) to its direct form ``?dl=1``.

    Other URLs are returned unchanged; other query parameters (e.g. ``rlkey``) are kept in order.
    """
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if not (host == "dropbox.com" or host.endswith(".dropbox.com")):
        return url
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "dl" for k, _ in query):
        query = [(k, "1" if k == "dl" else v) for k, v in query]
    else:
        query.append(("dl", "1"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60,
             progress: bool = False, verify: Callable[[Path], None] | None = None) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's SHA-256 (hex).

    Args:
        url: source URL (Dropbox share links are made direct, see :func:`direct_download_url`).
        dest: destination file; only a complete, verified download ever appears under this name.
        sha256: expected hex digest; on mismatch nothing is written and a LeopartError is raised.
        timeout: socket timeout in seconds.
        progress: show a tqdm bar.
        verify: called with the complete temporary file before it is moved into place (e.g.
            :func:`check_archive`); a LeopartError it raises keeps no file.

    Raises:
        LeopartError: network/HTTP failure, incomplete transfer, checksum mismatch or a failed
            ``verify`` (names the URL).
    """
    direct = direct_download_url(url)
    final = Path(dest)
    digest = hashlib.sha256()
    with atomic_path(final) as tmp:
        try:
            request = urllib.request.Request(direct, headers={"User-Agent": "leopart-pipeline"})
            with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as fh:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                written = 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=final.name,
                          disable=not progress) as bar:
                    while chunk := resp.read(CHUNK_BYTES):
                        fh.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                detail = f"HTTP {exc.code} {exc.reason}"
            else:
                detail = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
            raise LeopartError(f"{url}: download failed ({detail})") from None
        if total is not None and written != total:
            raise LeopartError(f"{url}: download incomplete ({written} of {total} bytes)")
        hexdigest = digest.hexdigest()
        if sha256 is not None and hexdigest != sha256.strip().lower():
            raise LeopartError(f"{url}: SHA-256 mismatch for {final.name}: expected {sha256.strip().lower()}, "
                               f"got {hexdigest} (file not kept)")
        if verify is not None:
            try:
                verify(tmp)
            except LeopartError as exc:
                raise LeopartError(f"{url}: {str(exc).split(': ', 1)[-1]} (file not kept)") from None
    return hexdigest


def looks_like_html(path: str | Path, probe_bytes: int = 2048) -> bool:
    """True if the file starts like an HTML document (e.g. a share page instead of the payload)."""
    with open(path, "rb") as fh:
        head = fh.read(probe_bytes).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")) or b"<html" in head[:512]


def _unsafe_name(name: str) -> str | None:
    """Why an archive member name is unsafe, or None if it is a plain relative path."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "has an absolute path"
    if ".." in norm.split("/"):
        return "has a '..' path component"
    return None


def _unsafe_tar_member(member: tarfile.TarInfo) -> str | None:
    reason = _unsafe_name(member.name)
    if reason:
        return reason
    if member.isdev():
        return "is a device file or FIFO"
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            return f"is a link to an absolute path ({member.linkname})"
        base = posixpath.dirname(member.name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, link))
        if target == ".." or target.startswith("../"):
            return f"is a link pointing outside the archive ({member.linkname})"
    elif not (member.isfile() or member.isdir()):
        return "has an unsupported member type"
    return None


def _invalid(archive: Path) -> LeopartError:
    return _InvalidArchive(f"{archive}: not a valid zip/tar archive (truncated or wrong file?)")


def check_archive(archive: str | Path) -> None:
    """Read a whole zip or tar(.gz/.bz2/.xz) archive and check its integrity (zip: every CRC).

    Raises:
        LeopartError: not a zip/tar archive, truncated or corrupt (names the file).
    """
    src = Path(archive)
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise LeopartError(f"{src}: corrupt zip archive (member {bad!r} fails its CRC)")
            return
        if tarfile.is_tarfile(src):
            with tarfile.open(src, "r:*") as tf:
                for member in tf:
                    if member.isfile():
                        with tf.extractfile(member) as fh:
                            while fh.read(CHUNK_BYTES):
                                pass
            return
    except _ARCHIVE_ERRORS:
        raise _invalid(src) from None
    raise _invalid(src)


def safe_extract(archive: str | Path, dest_dir: str | Path, remove_invalid: Sequence[str | Path] = ()) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir`` after checking every member.

    The archive's content becomes the content of ``dest_dir`` (an existing ``dest_dir`` is
    replaced). Nothing is extracted if any member is unsafe.

    ``remove_invalid`` lists files to delete when the archive turns out not to be a readable
    archive (typically the archive itself, when it was downloaded, and its checksum record), so
    that the next run downloads it again instead of failing the same way.

    Returns:
        ``dest_dir`` as a Path.

    Raises:
        LeopartError: missing file; not an archive or truncated/corrupt; an unsafe member (absolute
            path, ``..``, link outside, device file) — names the archive and the member.
    """
    src, dest = Path(archive), Path(dest_dir)
    try:
        return _extract(src, dest)
    except _InvalidArchive as exc:
        if not remove_invalid:
            raise
        for path in remove_invalid:
            Path(path).unlink(missing_ok=True)
        removed = ", ".join(str(p) for p in remove_invalid)
        raise LeopartError(f"{exc}; removed {removed} so that the next run downloads it again") from None


class _InvalidArchive(LeopartError):
    """Not a readable archive (as opposed to a readable archive with an unsafe member)."""


def _extract(src: Path, dest: Path) -> Path:
    if not src.is_file():
        raise LeopartError(f"{src}: archive file is missing")
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                for info in zf.infolist():
                    reason = _unsafe_name(info.filename)
                    if reason:
                        raise LeopartError(f"{src}: refusing to extract, member {info.filename!r} {reason}")
                with atomic_dir(dest) as tmp:
                    zf.extractall(tmp)
            return dest
        if tarfile.is_tarfile(src):
            with tarfile.open(src, "r:*") as tf:
                members = tf.getmembers()          # reads the whole archive: detects truncation
                for member in members:
                    reason = _unsafe_tar_member(member)
                    if reason:
                        raise LeopartError(f"{src}: refusing to extract, member {member.name!r} {reason}")
                with atomic_dir(dest) as tmp:
                    tf.extractall(tmp, members=members, filter="data")
            return dest
    except _ARCHIVE_ERRORS:
        raise _invalid(src) from None
    raise _invalid(src)
