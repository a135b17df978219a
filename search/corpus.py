"""Reading user data: corpora, queries and relevance judgements (qrels), one set of rules.

Corpora are BEIR folders, JSONL files (plain or gzipped), Parquet files or folders of
Parquet files; queries are BEIR ``queries.jsonl``; judgements are BEIR
``qrels/<split>.tsv``. `iter_records` streams a corpus in constant memory (JSONL line by
line, Parquet by record batches); `load_corpus`, `read_queries`, `read_qrels`,
`load_split` and `load_beir` build BEIR's dicts with the same rules. Every command that
reads these files (``index``, ``eval``, ``demo``, ``distill``) reads them here.

The rules, the same in every file:

- **Errors name the place.** A bad record raises `DataError` as ``file:line: what is
  wrong; how to fix it`` (a Parquet row number stands for the line). Corpus readers
  also take ``on_error="skip"``: bad records are then skipped and counted, with the
  line numbers of the first ones, in a `ReadReport`. Queries and judgements are
  always read strictly: skipping one would change scores without a word.
- **Blank lines are skipped silently** (empty or whitespace only), in JSONL and TSV
  alike; line numbers still count them, so they match an editor's.
- **Ids are strings, kept as written.** A JSON number used as an id is read as its JSON
  text, exactly as written (``7`` is ``"7"``, ``1.50`` is ``"1.50"``); a Parquet
  integer id as its decimal text; TSV fields are text already. So ``7`` and ``"7"`` are
  the same id (a duplicate when both occur). Null, ``""``, booleans, objects and lists
  are not ids.
- **Duplicate ids are errors** naming both lines: documents (`load_corpus`,
  `load_beir`; the streaming reader leaves the check to its consumer, the indexer,
  which counts or refuses them) and queries. A judgement repeated with the same score
  is harmless; with another score it is an error naming both lines.
- **Titles are optional**: a missing or null title is ``""``; a title that is not a
  string is a bad record. A text must be a string.
- **Judgements** (qrels) start with a header line, then one ``query-id<TAB>corpus-id<TAB>
  score`` a line, the score an integer. A judged query must be in ``queries.jsonl``; a
  judged document missing from the corpus is only logged (it counts as never retrieved).
- **Empty input is an error**: a corpus with no documents, a queries file with no
  queries, a qrels file with no judgements (only its header), and, in ``skip`` mode, a
  corpus whose every record was bad.
- **Encodings**: files are UTF-8 (a byte-order mark on line 1 is allowed); a JSONL line
  holds one JSON object. A ``.gz`` file cut off or corrupt mid-stream raises
  `DataError` naming the file and the lines read before the break.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, NoReturn, cast

from search.types import Corpus, DataError, Qrels, Queries

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

OnError = Literal["fail", "skip"]
ON_ERROR: tuple[str, ...] = ("fail", "skip")
_CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz", "corpus.parquet")
_FIRST_LINES_KEPT = 10
_QRELS_HEADER = "query-id<TAB>corpus-id<TAB>score"
_SKIP_HINT = ", or pass --on-error skip to skip bad records (they are counted and reported)"
# How to fix each kind of bad record; reasons not listed get "fix the record".
_FIXES = {
    "invalid UTF-8": "save the file as UTF-8",
    "invalid JSON": "write one JSON object per line",
    "not an object": 'write one JSON object per line, like {"_id": "d1", "text": "..."}',
    "bad title": "make the title a string, or null or absent for no title",
    "duplicate id": "give each one its own id, or remove one of them",
}


class _JsonNumber(str):
    """A JSON number kept as the text it was written as (so an id ``7`` reads ``"7"``)."""


# Numbers stay text: only ids use them, and an id must read exactly as written.
_decode_json = json.JSONDecoder(parse_int=_JsonNumber, parse_float=_JsonNumber).decode


class Record(NamedTuple):
    """One document as read, with where it came from.

    Attributes:
        id: Document id, a string as written (a JSON number id is its JSON text).
        title: Title, "" when absent or null.
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


def _message(
    file: Path | str, line: int, what: str, reason: str, detail: str, fix: str | None
) -> str:
    """``file:line: not a <what>: <reason> (<detail>); <how to fix it>``."""
    how = fix or _FIXES.get(reason, "fix the record")
    return f"{file}:{line}: not a {what}: {reason} ({detail}); {how}"


def bad_record(
    file: Path | str,
    line: int,
    reason: str,
    detail: str,
    on_error: str,
    report: ReadReport | None,
    *,
    fix: str | None = None,
    what: str = "document",
    skippable: bool = True,
) -> None:
    """Handle one bad record: raise in ``fail`` mode, count it in ``skip`` mode.

    Args:
        file: The file the record is in.
        line: Its line (or Parquet row).
        reason: Its kind, the key it is counted under (``invalid JSON``…).
        detail: What exactly is wrong with it.
        on_error: ``fail`` or ``skip``.
        report: Where ``skip`` mode counts it.
        fix: How to fix it (default: the fix for `reason`, else "fix the record").
        what: What the record should have been (``document``, ``query``…).
        skippable: Whether the message offers ``--on-error skip``.

    Raises:
        DataError: ``on_error == "fail"``, as ``file:line: not a <what>: <reason>
            (<detail>); <fix>``.
    """
    if on_error == "fail":
        hint = _SKIP_HINT if skippable else ""
        raise DataError(_message(file, line, what, reason, detail, fix) + hint)
    if report is not None:
        report.add(reason, line)


def _strict(
    file: Path | str, line: int, what: str, reason: str, detail: str, fix: str | None = None
) -> NoReturn:
    """Raise for a bad record that cannot be skipped (queries, judgements, loaded corpora)."""
    raise DataError(_message(file, line, what, reason, detail, fix))


def _check_beir(folder: Path, split: str | None) -> None:
    if not any((folder / name).is_file() for name in _CORPUS_NAMES):
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


def _lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each non-blank line of a text file, plain or gzipped.

    Raises:
        DataError: a ``.gz`` file is cut off or corrupt; the message says after how
            many lines.
    """
    lineno = 0
    with _open_binary(file) as fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if raw.strip():
                    yield lineno, raw
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataError(
                f"{file}: gzip data cut off or corrupt: {lineno} lines read, then "
                f"{type(exc).__name__}: {exc}; download or compress the file again"
            ) from exc


def _decode(raw: bytes, lineno: int) -> str:
    """The text of one line without its line ending (UTF-8; a byte-order mark is
    allowed on line 1)."""
    return raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")


def _utf8_detail(exc: UnicodeDecodeError) -> str:
    return f"byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1} of the line"


def count_documents(path: Path) -> int:
    """Number of records in a corpus, cheaply (for progress bars; blank lines excluded).

    Parquet row counts come from the file footers; JSONL lines are counted without
    being parsed.

    Raises:
        DataError: the path holds no corpus, or a ``.gz`` file is cut off.
    """
    total = 0
    for file in corpus_files(path):
        total += _parquet_rows(file) if _is_parquet(file) else sum(1 for _ in _lines(file))
    return total


def _kind(value: Any) -> str:
    """What a JSON (or Parquet) value is, for messages: ``a number``, ``null``…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (_JsonNumber, int)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"  # float…


def _id_text(value: Any) -> str | None:
    """The id `value` stands for (see the module docstring), or None when it is none."""
    if isinstance(value, str):  # a string, or a JSON number kept as written
        return str(value) or None
    if isinstance(value, int) and not isinstance(value, bool):  # a Parquet integer column
        return str(value)
    return None


def _id_of(row: dict[str, Any], fields: Fields) -> tuple[str, Any]:
    """(field name, value) of the id of `row`."""
    if fields.id is not None:
        return fields.id, row.get(fields.id)
    got = row.get("_id")
    return ("id", row.get("id")) if got is None and "id" in row else ("_id", got)


@dataclass(frozen=True)
class _Policy:
    """What a read does with a bad record: raise (offering ``skip`` or not) or count it."""

    on_error: str = "fail"
    report: ReadReport | None = None
    skippable: bool = False

    def bad(
        self,
        file: Path | str,
        line: int,
        reason: str,
        detail: str,
        *,
        fix: str | None = None,
        what: str = "document",
    ) -> None:
        bad_record(
            file,
            line,
            reason,
            detail,
            self.on_error,
            self.report,
            fix=fix,
            what=what,
            skippable=self.skippable,
        )

    def seen(self) -> None:
        if self.report is not None:
            self.report.read += 1


_STRICT = _Policy()


def _to_record(
    row: Any, line: int, fields: Fields, file: Path, policy: _Policy, what: str = "document"
) -> Record | None:
    """Check one parsed row against the rules; None when it is bad and skipped."""
    if not isinstance(row, dict):
        policy.bad(file, line, "not an object", f"a JSON {_kind(row).split()[-1]}", what=what)
        return None
    name, value = _id_of(row, fields)
    row_id = _id_text(value)
    if row_id is None:
        got = "absent" if name not in row else "empty" if value == "" else _kind(value)
        want = f'"{fields.id}"' if fields.id else '"_id" (or "id")'
        fix = f"give every record a string {want}"
        policy.bad(file, line, "missing id", f'"{name}" is {got}', fix=fix, what=what)
        return None
    text = row.get(fields.text)
    if type(text) is not str:
        got = "absent" if fields.text not in row else _kind(text)
        detail = f'"{fields.text}" is {got}, not a string'
        fix = f'give every record a string "{fields.text}"'
        policy.bad(file, line, "missing text", detail, fix=fix, what=what)
        return None
    title = row.get(fields.title)
    if title is not None and type(title) is not str:
        detail = f'"{fields.title}" is {_kind(title)}, not a string'
        policy.bad(file, line, "bad title", detail, what=what)
        return None
    return Record(row_id, title or "", text, line, str(file))


def _json_rows(file: Path, policy: _Policy, what: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of each non-blank line of a JSONL file."""
    for lineno, raw in _lines(file):
        policy.seen()
        try:
            row = _decode_json(_decode(raw, lineno))
        except UnicodeDecodeError as exc:
            policy.bad(file, lineno, "invalid UTF-8", _utf8_detail(exc), what=what)
            continue
        except json.JSONDecodeError as exc:
            detail = f"{exc.msg} at column {exc.pos + 1}"
            policy.bad(file, lineno, "invalid JSON", detail, what=what)
            continue
        yield lineno, row


def _iter_jsonl(file: Path, fields: Fields, policy: _Policy) -> Iterator[Record]:
    for lineno, row in _json_rows(file, policy, "document"):
        record = _to_record(row, lineno, fields, file, policy)
        if record is not None:
            yield record


def _iter_parquet(
    file: Path, label: Path, first_row: int, fields: Fields, policy: _Policy, batch_rows: int
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
            policy.seen()
            row = {name: values[i] for name, values in cols.items()}
            try:
                row = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in row.items()}
            except UnicodeDecodeError as exc:
                policy.bad(label, row_no, "invalid UTF-8", _utf8_detail(exc))
                continue
            record = _to_record(row, row_no, named, label, policy)
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

    The rules of the module docstring apply, except that duplicate ids are left to the
    consumer (keeping every id would cost memory in proportion to the corpus).

    Args:
        path: A BEIR folder, a ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` file, or a folder
            of Parquet files.
        fields: Field names of id, title and text (default ``_id``/``id``, ``title``,
            ``text``).
        on_error: ``fail`` raises on the first bad record; ``skip`` counts it in `report`.
        report: Filled with records read and skipped, when given.
        batch_rows: Parquet rows decoded at a time.

    Raises:
        DataError: the path holds no corpus, a ``.gz`` file is cut off, no record could
            be read, or (in ``fail`` mode) a record is bad.
        ValueError: `on_error` is not ``fail`` or ``skip``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    policy = _Policy(on_error, report, skippable=True)
    yield from _records(path, fields or Fields(), policy, batch_rows)


def _records(
    path: Path, fields: Fields, policy: _Policy, batch_rows: int = 4096
) -> Iterator[Record]:
    """`iter_records`'s body, under `policy`.

    Raises:
        DataError: also when no record was read (the message says whether the corpus
            is empty or every record was bad).
    """
    report = policy.report if policy.report is not None else ReadReport()
    policy = replace(policy, report=report)  # counts records, to tell empty from all bad
    report.source = report.source or str(path)
    seen_before, kept = report.read, 0
    files = corpus_files(path)
    label = files[0] if len(files) == 1 else path  # a folder of Parquet files counts as one
    first_row = 0
    for file in files:
        if _is_parquet(file):
            records = _iter_parquet(file, label, first_row, fields, policy, batch_rows)
            first_row += _parquet_rows(file)
        else:
            records = _iter_jsonl(file, fields, policy)
        for record in records:
            kept += 1
            yield record
    if kept:
        return
    if report.read == seen_before:
        raise DataError(
            f"{label}: no documents (the file is empty or all blank); add documents, one "
            'JSON object per line like {"_id": "d1", "text": "..."}, or pass --data with '
            "another corpus"
        )
    raise DataError(f"{label}: no document could be read ({report.summary()}); fix them")


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


def _line_word(file: Path | str) -> str:
    return "row" if str(file).endswith(".parquet") or Path(file).is_dir() else "line"


def load_corpus(path: Path) -> Corpus:
    """Load a whole corpus into BEIR's dict shape, strictly (see the module docstring).

    Raises:
        DataError: the path holds no corpus or no documents, a record is bad, or two
            records share an id (the message names both lines).
    """
    corpus: Corpus = {}
    lines: dict[str, int] = {}
    for rec in _records(path, Fields(), _STRICT):
        if rec.id in lines:
            where = f"first at {_line_word(rec.source)} {lines[rec.id]}"
            detail = f"duplicate document id {rec.id!r}, {where}"
            _strict(rec.source, rec.line, "document", "duplicate id", detail)
        lines[rec.id] = rec.line
        corpus[rec.id] = {"title": rec.title, "text": rec.text}
    return corpus


def read_queries(file: Path) -> Queries:
    """All queries of a BEIR ``queries.jsonl`` (``{"_id": ..., "text": ...}`` a line).

    Raises:
        DataError: a bad record, a duplicate id (naming both lines), or no queries.
    """
    queries: Queries = {}
    lines: dict[str, int] = {}
    for lineno, row in _json_rows(file, _STRICT, "query"):
        rec = _to_record(row, lineno, Fields(), file, _STRICT, "query")
        if rec is None:  # not reached: "fail" raises on a bad record
            continue
        if rec.id in lines:
            detail = f"duplicate query id {rec.id!r}, first at line {lines[rec.id]}"
            _strict(file, lineno, "query", "duplicate id", detail)
        lines[rec.id] = lineno
        queries[rec.id] = rec.text
    if not queries:
        raise DataError(
            f"{file}: no queries (the file is empty or all blank); add queries, one JSON "
            'object per line like {"_id": "q1", "text": "..."}'
        )
    return queries


def _judgement(parts: list[str], file: Path, lineno: int) -> tuple[str, str, int]:
    """``(query id, document id, score)`` of one qrels row, checked."""

    def bad(reason: str, detail: str, fix: str) -> NoReturn:
        _strict(file, lineno, "judgement", reason, detail, fix)

    if len(parts) != 3:
        bad(
            "wrong number of columns",
            f"{len(parts)} tab-separated columns, expected 3",
            f"write one judgement per line as {_QRELS_HEADER}",
        )
    query_id, doc_id, score = parts
    if not query_id or not doc_id:
        empty = "query-id" if not query_id else "corpus-id"
        bad("missing id", f"empty {empty}", f"write one judgement per line as {_QRELS_HEADER}")
    try:
        return query_id, doc_id, int(score)
    except ValueError:
        bad(
            "bad score",
            f"score {score!r} is not an integer",
            "give a whole-number relevance grade (0 not relevant, 1, 2… relevant)",
        )


def _read_qrels(file: Path) -> tuple[Qrels, dict[str, int]]:
    """`read_qrels`, plus the line where each query id first occurs."""
    qrels: Qrels = {}
    first: dict[str, int] = {}
    seen: dict[tuple[str, str], int] = {}
    header = 0
    for lineno, raw in _lines(file):
        try:
            parts = _decode(raw, lineno).split("\t")
        except UnicodeDecodeError as exc:
            _strict(file, lineno, "judgement", "invalid UTF-8", _utf8_detail(exc))
        if not header:
            header = lineno
            if len(parts) == 3 and parts[2].strip().lstrip("-").isdigit():
                raise DataError(
                    f"{file}:{lineno}: a judgement where the header belongs; add the header "
                    f"line {_QRELS_HEADER} first (BEIR qrels start with one)"
                )
            continue
        query_id, doc_id, score = _judgement(parts, file, lineno)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            detail = (
                f"query {query_id!r} and document {doc_id!r} judged {judged[doc_id]} at line "
                f"{seen[query_id, doc_id]}, {score} here"
            )
            _strict(file, lineno, "judgement", "duplicate judgement", detail, "keep one line")
        judged[doc_id] = score
        seen.setdefault((query_id, doc_id), lineno)
        first.setdefault(query_id, lineno)
    if not qrels:
        got = f"{header}: only a header" if header else " the file is empty or all blank"
        raise DataError(
            f"{file}:{got}, no judgements; add one judgement per line as {_QRELS_HEADER} "
            "after the header, or pass --split with a split that has judgements"
        )
    return qrels, first


def read_qrels(file: Path) -> Qrels:
    """The judgements of a BEIR qrels TSV: a header line, then one
    ``query-id<TAB>corpus-id<TAB>score`` a line (score an integer grade).

    Returns:
        query id -> document id -> score, in file order.

    Raises:
        DataError: no header, a bad row (wrong number of columns, an empty id, a score
            that is not an integer), a pair judged twice with two scores, or no rows.
    """
    return _read_qrels(file)[0]


def load_split(folder: Path, split: str) -> tuple[Queries, Qrels]:
    """The queries judged in `split` of a BEIR folder and their judgements.

    Returns:
        (queries judged in ``qrels/<split>.tsv``, in the order they first occur there;
        the judgements).

    Raises:
        DataError: a file is missing or breaks a rule (module docstring), or a judged
            query is not in ``queries.jsonl`` (the message names its qrels line).
    """
    _check_beir(folder, split)
    queries_file, qrels_file = folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    queries = read_queries(queries_file)
    qrels, first = _read_qrels(qrels_file)
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise DataError(
            f"{qrels_file}:{first[unknown[0]]}: query id {unknown[0]!r} is not in "
            f"{queries_file} ({len(unknown)} judged queries are not); add them there, or "
            "remove their judgements"
        )
    return {q: queries[q] for q in qrels}, qrels


def load_beir(folder: Path, split: str = "test") -> tuple[Corpus, Queries, Qrels]:
    """Load a BEIR dataset: corpus, queries and the judgements of `split`.

    Queries and judgements are read first (they are small, so mistakes there show
    before a large corpus is read). Judged documents missing from the corpus are
    logged as a warning: they count as never retrieved.

    Returns:
        (corpus, queries judged in `split`, judgements of `split`).

    Raises:
        DataError: a file is missing or breaks a rule (see the module docstring).
    """
    queries, qrels = load_split(folder, split)
    corpus = load_corpus(folder)
    absent = {d for judged in qrels.values() for d in judged if d not in corpus}
    if absent:
        logger.warning(
            "%s: %d judged documents are not in the corpus (e.g. %r); they count as never "
            "retrieved",
            folder / "qrels" / f"{split}.tsv",
            len(absent),
            min(absent),
        )
    return corpus, queries, qrels


def load_queries(folder: Path, split: str) -> Queries:
    """Queries judged in `split` (e.g. ``train``), or {} when the split has no qrels.

    Raises:
        DataError: as `load_split`.
    """
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        return {}
    return load_split(folder, split)[0]


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
