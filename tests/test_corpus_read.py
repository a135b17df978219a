"""Corpus readers: JSONL, JSONL.gz, Parquet, BEIR folders; bad records; field names."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from search.corpus import (
    Fields,
    ReadReport,
    count_documents,
    fingerprint,
    iter_documents,
    iter_records,
    load_corpus,
)
from search.types import DataError

GOOD = [("a", "Title A", "text a"), ("b", "", "text b"), ("c", "Title C", "text c")]


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _rows() -> list[dict]:
    return [{"_id": i, "title": t, "text": x} for i, t, x in GOOD]


def test_jsonl_gz_and_parquet_read_the_same_documents(tmp_path: Path) -> None:
    plain = tmp_path / "c.jsonl"
    plain.write_bytes(_jsonl(_rows()))
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(_jsonl(_rows())))
    parquet = tmp_path / "c.parquet"
    table = pa.table({k: [r[k] for r in _rows()] for k in ("_id", "title", "text")})
    pq.write_table(table, parquet, row_group_size=2)
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 2), folder / "p0.parquet")
    pq.write_table(table.slice(2), folder / "p1.parquet")
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_bytes(plain.read_bytes())
    for path in (plain, gz, parquet, folder, beir):
        assert list(iter_documents(path)) == GOOD, path
        assert count_documents(path) == 3, path
    assert [r.line for r in iter_records(parquet)] == [1, 2, 3]


def test_custom_field_names_and_numeric_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl([{"doc": 7, "heading": "H", "body": "B"}, {"doc": 8, "body": "C"}]))
    fields = Fields(id="doc", title="heading", text="body")
    assert list(iter_documents(path, fields=fields)) == [("7", "H", "B"), ("8", "", "C")]
    table = pa.table({"doc": ["x"], "body": ["y"]})
    pq.write_table(table, tmp_path / "c.parquet")
    assert list(iter_documents(tmp_path / "c.parquet", fields=fields)) == [("x", "", "y")]
    with pytest.raises(
        DataError, match=r"no column 'id', 'text' \(columns: body, doc\); pass --id-field"
    ):
        list(iter_documents(tmp_path / "c.parquet"))


def _broken_file(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"_id": "ok1", "text": "fine"}).encode(),  # 1
        b"",  # 2: blank, ignored
        b'{"_id": "u", "text": "caf\xe9"}',  # 3: latin-1 byte, invalid UTF-8
        b'{"_id": "j", "text": ',  # 4: invalid JSON
        json.dumps({"title": "no id", "text": "x"}).encode(),  # 5
        json.dumps({"_id": "nt", "title": "no text"}).encode(),  # 6
        json.dumps({"_id": "nt2", "text": 12}).encode(),  # 7
        json.dumps(["not", "an", "object"]).encode(),  # 8
        json.dumps({"id": "ok2", "text": "also fine"}).encode(),  # 9
    ]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_records_fail_with_the_line_number_by_default(tmp_path: Path) -> None:
    path = _broken_file(tmp_path)
    with pytest.raises(DataError, match=r"broken.jsonl:3: not a document: invalid UTF-8"):
        list(iter_documents(path))
    # Streaming: the good record before the bad one was already yielded.
    it = iter_documents(path)
    assert next(it) == ("ok1", "", "fine")


def test_skip_mode_counts_every_bad_record_with_lines(tmp_path: Path) -> None:
    report = ReadReport()
    docs = list(iter_documents(_broken_file(tmp_path), on_error="skip", report=report))
    assert docs == [("ok1", "", "fine"), ("ok2", "", "also fine")]
    assert report.read == 8
    assert dict(report.skipped) == {
        "invalid UTF-8": 1,
        "invalid JSON": 1,
        "missing id": 1,
        "missing text": 2,
        "not an object": 1,
    }
    assert report.first_lines["missing text"] == [6, 7]
    assert report.first_lines["invalid UTF-8"] == [3]
    summary = report.summary()
    assert summary.startswith("skipped 6 of 8 records") and "missing text 2 (lines 6, 7)" in summary
    assert report.as_dict()["first_lines"]["invalid JSON"] == [4]


def test_parquet_nulls_are_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"_id": ["a", None, "c"], "text": ["x", "y", None]}), path)
    report = ReadReport()
    assert list(iter_documents(path, on_error="skip", report=report)) == [("a", "", "x")]
    assert report.first_lines == {"missing id": [2], "missing text": [3]}
    with pytest.raises(DataError, match=r"n.parquet:2: not a document: missing id"):
        list(iter_documents(path))


def test_missing_paths_and_options_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list(iter_documents(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="not a BEIR folder"):
        list(iter_documents(tmp_path))
    (tmp_path / "c.jsonl").write_bytes(_jsonl(_rows()))
    with pytest.raises(ValueError, match="on_error must be one of fail, skip"):
        list(iter_documents(tmp_path / "c.jsonl", on_error="ignore"))  # type: ignore[arg-type]


def test_load_corpus_refuses_duplicates_and_fingerprint_tracks_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl([*_rows(), {"_id": "a", "text": "again"}]))
    with pytest.raises(DataError, match="duplicate document id 'a'"):
        load_corpus(path)
    before = fingerprint(path)
    path.write_bytes(_jsonl(_rows()))
    assert fingerprint(path) != before


def test_a_folder_of_parquet_files_numbers_rows_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"_id": ["a", "b"], "text": ["x", "y"]}), folder / "p0.parquet")
    pq.write_table(pa.table({"_id": ["c", None], "text": ["z", "w"]}), folder / "p1.parquet")
    report = ReadReport()
    records = list(iter_records(folder, on_error="skip", report=report))
    assert [(r.id, r.line, r.source) for r in records] == [
        ("a", 1, str(folder)),
        ("b", 2, str(folder)),
        ("c", 3, str(folder)),
    ]
    assert report.first_lines == {"missing id": [4]}
    with pytest.raises(DataError, match=r"parts:4: not a document: missing id"):
        list(iter_records(folder))
