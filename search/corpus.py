"""Reading corpora: BEIR folders, JSONL (plain or gzipped) and Parquet files of documents.

Every reader streams: JSONL line by line, Parquet by record batches, so memory stays
constant whatever the corpus size. Bad records (invalid UTF-8 or JSON, missing id or
text) either stop the read (``on_error="fail"``, the default) or are skipped and
counted, with the line numbers of the first ones, in a `ReadReport`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

from search.types import Corpus, DataError, Qrels, Queries

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

OnError = Literal["fail", "skip"]
ON_ERROR: tuple[str, ...] = ("fail", "skip")
_CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz", "corpus.parquet")
_FIRST_LINES_KEPT = 10


class Record(NamedTuple):
    """One document as read, with where it came from.

    Attributes:
        id: Document id (a string; numeric ids are converted).
        title: Title, "" when absent.
        text: Body text.
        line: 1-based line of a JSONL file, or 1-based row of a Parquet file (counted
            across the files, in name order, for a folder of Parquet files).
        source: The file (or folder of Parquet files) `line` refers to.
    """

    id: str
    title: str
    text: str
    line: int
    source: str = ""


@dataclass(frozen=True)
class Fields:
    """Names of the id, title and text fields of a corpus's records.

    Attributes:
        id: The id field; None means ``_id``, else ``id`` (BEIR's convention).
        title: The title field (optional in each record).
        text: The text field.
    """

    id: str | None = None
    title: str = "title"
    text: str = "text"


@dataclass
class ReadReport:
    """Counts of what a read kept and skipped.

    Attributes:
        source: The corpus path read (set by `iter_records`), for messages.
        read: Records seen (bad ones included, blank lines not).
        skipped: Bad records by reason (``invalid JSON``, ``duplicate id``…).
        first_lines: Per reason, the line numbers of the first bad records.
    """

    source: str = ""
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def add(self, reason: str, line: int) -> None:
        """Count one skipped record."""
        self.skipped[reason] += 1
        lines = self.first_lines.setdefault(reason, [])
        if len(lines) < _FIRST_LINES_KEPT:
            lines.append(line)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for manifests)."""
        return {
            "source": self.source,
            "read": self.read,
            "skipped": dict(self.skipped),
            "first_lines": {k: list(v) for k, v in self.first_lines.items()},
        }

    def summary(self) -> str:
        """One line, e.g. ``skipped 3 of 1000 records: missing text 2 (lines 4, 9), …``."""
        if not self.skipped:
            return f"read {self.read} records, none skipped"
        parts = [
            f"{reason} {n} (lines {', '.join(map(str, self.first_lines[reason]))}"
            f"{', …' if n > len(self.first_lines[reason]) else ''})"
            for reason, n in sorted(self.skipped.items())
        ]
        return f"skipped {self.total_skipped} of {self.read} records: " + "; ".join(parts)


def bad_record(
    file: Path | str, line: int, reason: str, detail: str, on_error: str, report: ReadReport | None
) -> None:
    """Handle one bad record: raise in ``fail`` mode, count it in ``skip`` mode.

    Raises:
        DataError: ``on_error == "fail"``.
    """
    if on_error == "fail":
        raise DataError(
            f"{file}:{line}: not a document: {reason} ({detail}); fix the record, or pass "
            "--on-error skip to skip bad records (they are counted and reported)"
        )
    if report is not None:
        report.add(reason, line)


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


def corpus_files(path: Path) -> list[Path]:
    """The files a corpus path stands for, in reading order.

    A BEIR folder stands for its ``corpus.jsonl`` (or ``.jsonl.gz`` / ``.parquet``); a
    folder of Parquet files for those files, sorted; a file for itself.

    Raises:
        DataError: the path does not exist or holds no corpus.
    """
    if path.is_dir():
        for name in _CORPUS_NAMES:
            if (path / name).is_file():
                return [path / name]
        parquet = sorted(path.glob("*.parquet"))
        if parquet:
            return parquet
        _check_beir(path, None)  # raises with the BEIR hint
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; pass --data with a BEIR folder, a JSONL (.jsonl, "
            ".jsonl.gz) or Parquet file, or a folder of Parquet files"
        )
    return [path]


def fingerprint(path: Path) -> str:
    """A cheap identity of a corpus path: its files' paths, sizes and modification times.

    Used to tell whether an interrupted indexing job may resume on the same input.
    """
    parts = []
    for f in corpus_files(path):
        st = f.stat()
        parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _is_parquet(file: Path) -> bool:
    return file.suffix == ".parquet"


def _open_binary(file: Path) -> IO[bytes]:
    if file.suffix == ".gz":
        return cast(IO[bytes], gzip.open(file, "rb"))
    return open(file, "rb")


def _parquet_rows(file: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(file).metadata.num_rows)


def count_documents(path: Path) -> int:
    """Number of records in a corpus, cheaply (for progress bars; blank lines excluded).

    Parquet row counts come from the file footers; JSONL lines are counted without
    being parsed.
    """
    total = 0
    for file in corpus_files(path):
        if _is_parquet(file):
            total += _parquet_rows(file)
            continue
        with _open_binary(file) as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def _id_of(row: dict[str, Any], fields: Fields) -> Any:
    if fields.id is not None:
        return row.get(fields.id)
    got = row.get("_id")
    return row.get("id") if got is None else got


def _to_record(
    row: Any, line: int, fields: Fields, file: Path, on_error: str, report: ReadReport | None
) -> Record | None:
    """Validate one parsed row; None when it is bad and skipped."""
    if not isinstance(row, dict):
        bad_record(file, line, "not an object", type(row).__name__, on_error, report)
        return None
    doc_id = _id_of(row, fields)
    if doc_id is None or doc_id == "" or isinstance(doc_id, (dict, list)):
        want = fields.id or '"_id" (or "id")'
        bad_record(file, line, "missing id", f"no {want} field", on_error, report)
        return None
    text = row.get(fields.text)
    if not isinstance(text, str):
        got = "absent" if text is None else f"a {type(text).__name__}"
        bad_record(
            file, line, "missing text", f'"{fields.text}" is {got}, not a string', on_error, report
        )
        return None
    title = row.get(fields.title)
    return Record(str(doc_id), title if isinstance(title, str) else "", text, line, str(file))


def _iter_jsonl(
    file: Path, fields: Fields, on_error: str, report: ReadReport | None
) -> Iterator[Record]:
    with _open_binary(file) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if report is not None:
                report.read += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_record(file, lineno, "invalid UTF-8", str(exc), on_error, report)
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                bad_record(file, lineno, "invalid JSON", str(exc), on_error, report)
                continue
            record = _to_record(row, lineno, fields, file, on_error, report)
            if record is not None:
                yield record


def _iter_parquet(
    file: Path,
    label: Path,
    first_row: int,
    fields: Fields,
    on_error: str,
    report: ReadReport | None,
    batch_rows: int,
) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(file)
    names = set(pf.schema_arrow.names)
    id_col = fields.id or ("_id" if "_id" in names else "id")
    missing = [c for c in (id_col, fields.text) if c not in names]
    if missing:
        raise DataError(
            f"{file} has no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(sorted(names))}); pass --id-field / --text-field with the right names"
        )
    columns = [id_col, fields.text] + ([fields.title] if fields.title in names else [])
    named = Fields(id=id_col, title=fields.title, text=fields.text)
    row_no = first_row
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        cols = {name: batch.column(name).to_pylist() for name in columns}
        for i in range(batch.num_rows):
            row_no += 1
            if report is not None:
                report.read += 1
            row = {name: values[i] for name, values in cols.items()}
            try:
                row = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in row.items()}
            except UnicodeDecodeError as exc:
                bad_record(label, row_no, "invalid UTF-8", str(exc), on_error, report)
                continue
            record = _to_record(row, row_no, named, label, on_error, report)
            if record is not None:
                yield record


def iter_records(
    path: Path,
    *,
    fields: Fields | None = None,
    on_error: OnError = "fail",
    report: ReadReport | None = None,
    batch_rows: int = 4096,
) -> Iterator[Record]:
    """Stream `Record`\\ s (id, title, text, line) from a corpus path, in constant memory.

    Args:
        path: A BEIR folder, a ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` file, or a folder
            of Parquet files.
        fields: Field names of id, title and text (default ``_id``/``id``, ``title``,
            ``text``).
        on_error: ``fail`` raises on the first bad record; ``skip`` counts it in `report`.
        report: Filled with records read and skipped, when given.
        batch_rows: Parquet rows decoded at a time.

    Raises:
        DataError: the path holds no corpus, or (in ``fail`` mode) a record is bad.
        ValueError: `on_error` is not ``fail`` or ``skip``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    fields = fields or Fields()
    if report is not None and not report.source:
        report.source = str(path)
    files = corpus_files(path)
    label = files[0] if len(files) == 1 else path  # a folder of Parquet files counts as one
    first_row = 0
    for file in files:
        if _is_parquet(file):
            yield from _iter_parquet(file, label, first_row, fields, on_error, report, batch_rows)
            first_row += _parquet_rows(file)
        else:
            yield from _iter_jsonl(file, fields, on_error, report)


def iter_documents(
    path: Path,
    *,
    fields: Fields | None = None,
    on_error: OnError = "fail",
    report: ReadReport | None = None,
) -> Iterator[tuple[str, str, str]]:
    """Stream ``(id, title, text)`` from a corpus path (see `iter_records`).

    Each record needs an id (``_id`` or ``id`` unless `fields` says otherwise) and a
    ``text``; ``title`` is optional. Duplicate ids are not checked here (the indexer
    and `load_corpus` check them).

    Raises:
        DataError: the path holds no corpus, or (in ``fail`` mode) a record is bad.
    """
    for record in iter_records(path, fields=fields, on_error=on_error, report=report):
        yield record.id, record.title, record.text


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
