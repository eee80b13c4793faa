"""The uint8 tensor cache: decoded datasets on disk, keyed by their source's content hash.

One file per (source, decode options), named ``<kind>-<identity>-<content>.pt``: *identity*
hashes where the data comes from and how it is decoded (path, image size, subset), *content*
hashes the source's fingerprint (see :mod:`cnnzoo.data.sources`). When the source changes, its
content hash changes, the file is rebuilt and the stale one with the same identity is deleted.

Writes are atomic (a temp file in the same folder, fsync, rename, fsync of the folder), so a
killed process leaves either the old cache or the new one, never half a file. A cache file that
cannot be read (truncated by a full disk, written by another version) is rebuilt. Files load
with ``torch.load(weights_only=True)``: a cache never runs code.

Facts needed before the main file can be named (an image folder's size counts) are cached the
same way as small JSON tables (:func:`cached_rows`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable

import torch

from ._common import DataError
from .sources import Decoded

FORMAT = 2  # bump when the decoding changes, so old files are not reused (2: 16-bit images scaled)


def default_cache_dir() -> str:
    return os.environ.get("CNNZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnnzoo")


def _short(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def cache_path(cache_dir: str, kind: str, identity: str, fingerprint: str, ext: str = ".pt") -> str:
    ident = _short(f"{FORMAT}|{identity}", 10)
    return os.path.join(cache_dir, f"{kind}-{ident}-{_short(fingerprint, 16)}{ext}")


def _remove_stale(path: str, fingerprint: str) -> None:
    """Delete the files of the same kind and identity as ``path`` but another content hash."""
    ext = os.path.splitext(path)[1]
    stem = path[: -len("-" + _short(fingerprint, 16) + ext)]
    for stale in glob.glob(glob.escape(stem) + "-*" + ext):
        if stale != path:
            try:
                os.unlink(stale)
            except OSError:
                pass


def atomic_save(obj: object, path: str) -> None:
    """``torch.save`` to ``path`` through a temp file, fsync and rename."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is as readable as its data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems do not fsync directories
        pass


def _to_dict(d: Decoded) -> dict:
    out: dict = {"format": FORMAT, "class_names": list(d.class_names), "splits": sorted(d.splits)}
    for s, (x, y) in d.splits.items():
        out[f"{s}_x"], out[f"{s}_y"] = x.contiguous(), y.contiguous()
    return out


def _from_dict(obj: dict) -> Decoded:
    if obj.get("format") != FORMAT:
        raise ValueError("old cache format")
    return Decoded({s: (obj[f"{s}_x"], obj[f"{s}_y"]) for s in obj["splits"]}, list(obj["class_names"]))


def cached(cache_dir: str, kind: str, identity: str, fingerprint: str,
           build: Callable[[], Decoded]) -> tuple[Decoded, str, bool]:
    """Load the decoded dataset from the cache, or ``build()`` and store it.

    Returns ``(decoded, cache_file, hit)``.
    """
    path = cache_path(cache_dir, kind, identity, fingerprint)
    if os.path.isfile(path):
        try:
            return _from_dict(torch.load(path, map_location="cpu", weights_only=True)), path, True
        except Exception:  # unreadable or old: rebuilt below, atomically replacing it
            pass
    decoded = build()
    try:
        atomic_save(_to_dict(decoded), path)
    except OSError as e:
        raise DataError(f"cannot write the data cache {path} ({e.strerror or e}); set --cache-dir or "
                        f"$CNNZOO_CACHE to a writable folder") from None
    _remove_stale(path, fingerprint)  # same source and options, old content
    return decoded, path, False


def cached_rows(cache_dir: str, kind: str, identity: str, fingerprint: str,
                build: Callable[[], list[list[int]]]) -> list[list[int]]:
    """A small table of integers (rows of equal length), cached as JSON like :func:`cached`.

    For facts that cost a pass over the source but are needed before the main cache file can
    be named (the image sizes of a folder). Best effort: a folder that cannot be written only
    means the table is built again next time.
    """
    path = cache_path(cache_dir, kind, identity, fingerprint, ext=".json")
    try:
        with open(path) as f:
            rows = json.load(f)
        if isinstance(rows, list) and all(isinstance(r, list) and all(type(v) is int for v in r)
                                          for r in rows):
            return rows
    except (OSError, ValueError):  # absent, unreadable or not JSON: built again
        pass
    rows = build()
    folder = os.path.dirname(path) or "."
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _remove_stale(path, fingerprint)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return rows
