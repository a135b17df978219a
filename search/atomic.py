"""Atomic file writes and folder swaps: readers see the old version or the new one.

A file is written to a temp file in its own folder, flushed to disk and
``os.replace``d onto its name; a folder is built as a temp folder beside its
destination and swapped in with one ``renameat2(RENAME_EXCHANGE)`` where Linux
offers it. Temp names start with a dot, so globs such as ``shard-*.npy`` never
see them, and keep the destination's suffix, so writers that add a suffix to a
name without one (``np.save``) or pick a format by suffix accept them.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "staged_folder",
    "swap_in_folder",
]

_RENAME_EXCHANGE = 2  # from <linux/fs.h>
_AT_FDCWD = -100


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically; the parent folder is created if missing."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; the parent folder is created if missing."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON (indent 2, trailing newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp file path to write; on normal exit it replaces `path` atomically.

    The temp file is created empty in `path`'s folder (created if missing), with
    `path`'s suffix and the modes a plain ``open`` would give. On normal exit it
    is fsynced and ``os.replace``d onto `path`, and the folder is fsynced; if the
    block raises, the temp file is removed and the exception propagates, leaving
    `path` as it was.

    Yields:
        The temp file's path (the writer may overwrite or truncate it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve(path.parent, f".{path.name}.tmp-{os.getpid()}-", path.suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def swap_in_folder(tmp: Path, dest: Path) -> None:
    """Replace folder `dest` by folder `tmp` atomically; `tmp` is consumed.

    Everything under `tmp` is fsynced and given the modes of files the user writes
    (temp folders are created private). Readers that resolve `dest` see the old
    folder or the new one, never half of one; without ``RENAME_EXCHANGE`` (not
    Linux, or a file system without it) there is a brief window where `dest` is
    missing. Readers holding files of the old folder open keep them. A missing
    `dest` is created.
    """
    _fsync_tree(tmp)
    if not dest.exists():
        os.replace(tmp, dest)
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old version
    else:
        old = dest.with_name(f".{dest.name}.tmp-old-{os.getpid()}-{time.time_ns()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync(dest.parent)


@contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """Yield a fresh empty folder to fill; on normal exit it replaces `dest` atomically.

    The folder is ``.{dest.name}.tmp-{pid}-...`` beside `dest` (the parent is
    created if missing) and is swapped in with `swap_in_folder`; if the block
    raises, it is deleted and the exception propagates, leaving `dest` as it was.
    Concurrent writers of the same `dest` must take turns (a lock of their own):
    each swap is atomic, but the last one wins.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    try:
        yield tmp
        swap_in_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _reserve(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty file with a fresh name (mode 0666 less the umask)."""
    while True:
        path = folder / f"{prefix}{os.urandom(4).hex()}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


def _fsync(path: Path) -> None:
    """Flush one file or folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` to disk, and give them normal modes.

    Temp folders are created private (0700); a published folder is readable like
    any the user writes (0644/0755 less the umask).
    """
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        _fsync(path)
    _fsync(folder)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets
    it, and a file another thread creates meanwhile would get the temporary one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))
