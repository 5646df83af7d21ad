"""Result files that a kill, a full disk or a bad path cannot empty or falsify.

Every file is written to a temporary name in its own folder, flushed and fsynced, then
``os.replace``d over the old one (an atomic rename on POSIX and Windows), so a reader
sees either the complete previous version or the complete new one, never a fragment.
An ``OSError`` (disk full, permission, read-only file system) becomes one ``OutputError``
line naming the file; the previous version is kept. Data-only archives (``save_archive``,
``load_archive``): arrays in an ``.npz`` (loaded with ``allow_pickle=False``) and metadata in
a JSON file that records the sha256 of the ``.npz``; loading never runs code from a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from byzjax._validation import ConfigError


class OutputError(ConfigError):
    """A result file or folder cannot be written (or read back); one line: the path and why."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a grid, after the finished runs were saved; ``str()`` says where they are."""


def warn(message: str) -> None:
    """One ``byzjax: warning: ...`` line on stderr."""
    print(f"byzjax: warning: {message}", file=sys.stderr)


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """``open(path, mode)`` on a temporary sibling that replaces ``path`` only once fully written.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and ``path``
    is untouched; an ``OSError`` is re-raised as a one-line ``OutputError``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_reason(err)} (the previous version is kept)") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def check_out_dir(out, option: str = "--out") -> Path:
    """Check that ``out`` is (or can be made) a writable folder, before anything is computed.

    Refuses ``''``, an existing file, a path under a file and a folder that cannot be written
    (probed by creating and removing a file in it, so a read-only file system is caught even
    for root). Creates the folder. Returns it as a ``Path``.
    """
    if out is None or not str(out).strip():
        raise OutputError(f"{option} is empty: give the output folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file, not a folder")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{option} {out} is under {parent}, which is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".byzjax-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{option} {out} cannot be written: {_reason(err)}") from None
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ARCHIVE_FORMAT = "byzjax-archive-1"


def save_archive(stem: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Store ``arrays`` in ``stem.npz`` and ``meta`` in ``stem.json`` (written last: the record
    of completion), with the sha256 of the ``.npz`` bytes in the JSON."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    write_bytes(stem.with_suffix(".npz"), data)
    write_json(stem.with_suffix(".json"), {"format": ARCHIVE_FORMAT, "sha256": sha256(data), "meta": meta})


class DamagedArchive(Exception):
    """An archive is missing, truncated, altered or not in the data-only format (the reason)."""


def load_archive(stem: Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of ``save_archive(stem, ...)``; ``DamagedArchive`` if anything is off
    (checksum, JSON, zip structure). Object arrays are refused (``allow_pickle=False``)."""
    stem = Path(stem)
    try:
        record = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        data = stem.with_suffix(".npz").read_bytes()
    except (OSError, ValueError) as err:
        raise DamagedArchive(f"unreadable ({err.__class__.__name__}: {err})") from None
    if not isinstance(record, dict) or record.get("format") != ARCHIVE_FORMAT or "meta" not in record:
        raise DamagedArchive("not a byzjax archive record")
    if record.get("sha256") != sha256(data):
        raise DamagedArchive("checksum mismatch (truncated or altered)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # noqa: BLE001 (any failure to parse is damage, reported as such)
        raise DamagedArchive(f"unreadable arrays ({err.__class__.__name__}: {err})") from None
    return arrays, record["meta"]
