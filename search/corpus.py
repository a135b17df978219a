"""Reading corpora: BEIR folders (via beir's loader) and JSONL files of documents."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from search.types import Corpus, DataError, Qrels, Queries

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def _check_beir(folder: Path, split: str | None) -> None:
    if not (folder / "corpus.jsonl").is_file():
        raise DataError(
            f"{folder} is not a BEIR folder (no corpus.jsonl); pass --data with a folder "
            "holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
        )
    if split is not None:
        if not (folder / "queries.jsonl").is_file():
            raise DataError(f"{folder} has no queries.jsonl; evaluation needs BEIR queries")
        if not (folder / "qrels" / f"{split}.tsv").is_file():
            have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
            raise DataError(
                f"{folder} has no qrels/{split}.tsv; pass --split with one of: "
                f"{', '.join(have) or '(none)'}"
            )


def load_beir(folder: Path, split: str = "test") -> tuple[Corpus, Queries, Qrels]:
    """Load a BEIR dataset with beir's `GenericDataLoader`.

    Returns:
        (corpus, queries restricted to those judged in `split`, qrels of `split`).
    """
    from beir.datasets.data_loader import GenericDataLoader

    _check_beir(folder, split)
    corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split=split)
    return corpus, queries, qrels


def load_queries(folder: Path, split: str) -> Queries:
    """Queries judged in `split` (e.g. ``train``), or {} when the split has no qrels."""
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        return {}
    _, queries, _ = load_beir(folder, split)
    return queries


def iter_documents(path: Path) -> Iterator[tuple[str, str, str]]:
    """Stream ``(id, title, text)`` from a BEIR folder or a JSONL file.

    Each JSON line needs an ``_id`` (or ``id``) and a ``text``; ``title`` is optional.

    Raises:
        DataError: the file is missing, or a line is not a valid document.
    """
    file = path / "corpus.jsonl" if path.is_dir() else path
    if path.is_dir():
        _check_beir(path, None)
    if not file.is_file():
        raise DataError(f"{path} does not exist; pass --data with a BEIR folder or a JSONL file")
    with open(file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row.get("_id", row.get("id")))
                text = row["text"]
            except (ValueError, KeyError, AttributeError) as exc:
                raise DataError(
                    f"{file}:{lineno}: not a document ({type(exc).__name__}: {exc}); each line "
                    'must be a JSON object with "_id" (or "id") and "text"'
                ) from exc
            if doc_id == "None" or not isinstance(text, str):
                raise DataError(f"{file}:{lineno}: missing id or text is not a string")
            yield doc_id, str(row.get("title") or ""), text


def load_corpus(path: Path) -> Corpus:
    """Load a whole corpus into BEIR's dict shape (ids must be unique)."""
    corpus: Corpus = {}
    for doc_id, title, text in iter_documents(path):
        if doc_id in corpus:
            raise DataError(f"{path}: duplicate document id {doc_id!r}")
        corpus[doc_id] = {"title": title, "text": text}
    return corpus


def find_dataset(name: str, data_root: str | None = None) -> Path:
    """Locate a BEIR dataset by name: ``$DISTILSEARCH_DATA/<name>``, else download it.

    Raises:
        DataError: not found locally and the download failed.
    """
    root = data_root or os.environ.get("DISTILSEARCH_DATA")
    if root and (Path(root) / name / "corpus.jsonl").is_file():
        return Path(root) / name
    from search.assets import cache_dir

    target = cache_dir() / "datasets"
    if (target / name / "corpus.jsonl").is_file():
        return target / name
    try:
        from beir import util

        logger.info("downloading BEIR dataset %s into %s", name, target)
        return Path(util.download_and_unzip(BEIR_URL.format(name=name), str(target)))
    except Exception as exc:  # any network or archive failure means "not available"
        raise DataError(
            f"BEIR dataset {name!r} not found in $DISTILSEARCH_DATA ({root or 'unset'}) and "
            f"could not be downloaded ({type(exc).__name__}); pass --data /path/to/{name} "
            "or set DISTILSEARCH_DATA to a folder that holds it"
        ) from exc
