"""Corpus readers: JSONL, JSONL.gz, Parquet, BEIR folders; bad records; field names."""

import gzip
import json
import logging
import re
import sys
from collections.abc import Callable
from functools import partial
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
    load_beir,
    load_corpus,
    load_queries,
)
from search.evaluate import corpus_texts
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


# One set of rules for corpora, queries and qrels (see search/corpus.py's docstring).

QRELS_HEADER = "query-id\tcorpus-id\tscore\n"
SKIP_HINT = "or pass --on-error skip to skip bad records"


def _beir(
    tmp_path: Path,
    corpus: bytes | None = None,
    queries: bytes | None = None,
    qrels: str | bytes | None = None,
) -> Path:
    """A small BEIR folder; each file not given is a valid one (documents a and b,
    queries q1 and q2, one judgement: q1 finds a)."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    if corpus is None:
        corpus = _jsonl([{"_id": "a", "title": "A", "text": "x"}, {"_id": "b", "text": "y"}])
    if queries is None:
        queries = _jsonl([{"_id": "q1", "text": "what"}, {"_id": "q2", "text": "why"}])
    if qrels is None:
        qrels = QRELS_HEADER + "q1\ta\t1\n"
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels.encode() if isinstance(qrels, str) else qrels)
    return folder


def _fails(call: Callable[[], object], pattern: str) -> str:
    """The message of the DataError `call` raises; it must match `pattern`."""
    with pytest.raises(DataError, match=pattern) as info:
        call()
    return str(info.value)


def test_load_beir_reads_the_real_scifact_test_split(scifact: Path) -> None:
    corpus, queries, qrels = load_beir(scifact, "test")
    assert len(corpus) == 5183
    assert len(queries) == 300 and list(queries) == list(qrels)
    assert sum(len(judged) for judged in qrels.values()) == 339
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert corpus == {r["_id"]: {"title": r["title"], "text": r["text"]} for r in rows}
    ids, texts = corpus_texts(corpus)  # what the encoders embed
    assert ids[0] == rows[0]["_id"] and texts[0] == f"{rows[0]['title']} {rows[0]['text']}"
    assert not any(t.startswith("None") for t in texts)
    assert all(type(i) is str for i in [*corpus, *queries])


def test_load_beir_never_touches_beirs_data_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "beir.datasets.data_loader", None)  # importing it fails
    corpus, queries, qrels = load_beir(_beir(tmp_path), "test")
    assert corpus == {"a": {"title": "A", "text": "x"}, "b": {"title": "", "text": "y"}}
    assert queries == {"q1": "what"} and qrels == {"q1": {"a": 1}}


def test_blank_lines_are_skipped_everywhere_and_still_counted(tmp_path: Path) -> None:
    blank = b"\n  \t \n"
    doc = _jsonl([{"_id": "a", "text": "x"}])
    folder = _beir(
        tmp_path,
        corpus=blank + doc + blank + b'{"_id": "b"}\n',
        queries=blank + _jsonl([{"_id": "q1", "text": "what"}]) + blank,
        qrels="\n" + QRELS_HEADER + "\n \nq1\ta\t1\n\n",
    )
    _fails(lambda: load_beir(folder), r"corpus.jsonl:6: not a document: missing text")
    (folder / "corpus.jsonl").write_bytes(blank + doc + blank)
    corpus, queries, qrels = load_beir(folder)
    assert list(corpus) == ["a"] and queries == {"q1": "what"} and qrels == {"q1": {"a": 1}}
    assert [r.line for r in iter_records(folder)] == [3]
    assert count_documents(folder) == 1


def test_a_utf8_byte_order_mark_on_line_1_is_allowed(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    folder = _beir(
        tmp_path,
        corpus=bom + _jsonl([{"_id": "a", "text": "x"}]),
        queries=bom + _jsonl([{"_id": "q1", "text": "what"}]),
        qrels=bom + QRELS_HEADER.encode() + b"q1\ta\t1\n",
    )
    assert load_beir(folder) == (
        {"a": {"title": "", "text": "x"}},
        {"q1": "what"},
        {"q1": {"a": 1}},
    )


def test_invalid_utf8_names_file_line_and_fix(tmp_path: Path) -> None:
    bad = b'{"_id": "u", "text": "caf\xe9"}\n'
    folder = _beir(tmp_path / "c", corpus=_jsonl([{"_id": "a", "text": "x"}]) + bad)
    fix = r"; save the file as UTF-8"
    detail = r"\(byte 0xe9 at byte 26 of the line\)"
    _fails(
        lambda: load_beir(folder), rf"corpus.jsonl:2: not a document: invalid UTF-8 {detail}{fix}$"
    )
    _fails(lambda: list(iter_records(folder)), rf"corpus.jsonl:2: .*{fix}, {SKIP_HINT}")
    folder = _beir(tmp_path / "q", queries=bad)
    _fails(lambda: load_beir(folder), rf"queries.jsonl:1: not a query: invalid UTF-8 .*{fix}$")
    folder = _beir(tmp_path / "r", qrels=QRELS_HEADER.encode() + b"q1\t\xe9\t1\n")
    _fails(lambda: load_beir(folder), rf"test.tsv:2: not a judgement: invalid UTF-8 .*{fix}$")


def test_invalid_json_names_file_line_and_fix(tmp_path: Path) -> None:
    bad = b'{"_id": "j", "text": \n'
    folder = _beir(tmp_path / "c", corpus=_jsonl([{"_id": "a", "text": "x"}]) + bad)
    _fails(
        lambda: load_beir(folder),
        r"corpus.jsonl:2: not a document: invalid JSON \(Expecting value at column 22\); "
        r"write one JSON object per line$",
    )
    folder = _beir(tmp_path / "q", queries=b'"just a string"\n')
    _fails(
        lambda: load_beir(folder),
        r"queries.jsonl:1: not a query: not an object \(a JSON string\); write one JSON "
        r'object per line, like \{"_id"',
    )


def test_numeric_ids_are_read_as_their_json_text(tmp_path: Path) -> None:
    folder = _beir(
        tmp_path,
        corpus=b'{"_id": 7, "text": "x"}\n{"_id": 1.50, "text": "y"}\n{"_id": -0, "text": "z"}\n',
        queries=b'{"_id": 12, "text": "what"}\n',
        qrels=QRELS_HEADER + "12\t7\t1\n12\t1.50\t2\n",
    )
    corpus, queries, qrels = load_beir(folder)
    assert list(corpus) == ["7", "1.50", "-0"] and queries == {"12": "what"}
    assert qrels == {"12": {"7": 1, "1.50": 2}}
    assert all(type(i) is str for i in [*corpus, *queries])
    assert [r.id for r in iter_records(folder)] == ["7", "1.50", "-0"]
    pq.write_table(pa.table({"_id": [3, 4], "text": ["x", "y"]}), tmp_path / "ints.parquet")
    assert [r.id for r in iter_records(tmp_path / "ints.parquet")] == ["3", "4"]


def test_ids_that_are_not_strings_or_numbers_are_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"_id": True, "text": "x"}, {"_id": {"a": 1}, "text": "x"}, {"_id": "", "text": "x"}]
    path.write_bytes(_jsonl([*rows, {"_id": None, "text": "x"}, {"text": "x"}]))
    report = ReadReport()
    with pytest.raises(DataError, match="no document could be read"):
        list(iter_records(path, on_error="skip", report=report))
    assert report.first_lines == {"missing id": [1, 2, 3, 4, 5]}
    _fails(
        lambda: load_corpus(path),
        r'c.jsonl:1: not a document: missing id \("_id" is a boolean\); give every record '
        r'a string "_id" \(or "id"\)$',
    )
    folder = _beir(tmp_path, queries=b'{"_id": null, "text": "what"}\n')
    _fails(lambda: load_beir(folder), r'queries.jsonl:1: not a query: missing id \("_id" is null\)')


def test_a_numeric_id_and_the_same_string_id_are_duplicates(tmp_path: Path) -> None:
    folder = _beir(tmp_path, corpus=b'{"_id": 1, "text": "x"}\n{"_id": "1", "text": "y"}\n')
    _fails(
        lambda: load_beir(folder),
        r"corpus.jsonl:2: not a document: duplicate id \(duplicate document id '1', first at "
        r"line 1\); give each one its own id, or remove one of them$",
    )


def test_null_or_missing_titles_are_empty_and_other_titles_are_errors(tmp_path: Path) -> None:
    rows = [{"_id": "a", "title": None, "text": "x"}, {"_id": "b", "text": "y"}]
    folder = _beir(tmp_path, corpus=_jsonl(rows))
    corpus, _, _ = load_beir(folder)
    assert corpus == {"a": {"title": "", "text": "x"}, "b": {"title": "", "text": "y"}}
    assert [r.title for r in iter_records(folder)] == ["", ""]
    (folder / "corpus.jsonl").write_bytes(_jsonl([*rows, {"_id": "c", "title": 3, "text": "z"}]))
    fix = "make the title a string, or null or absent for no title"
    _fails(
        lambda: load_beir(folder),
        rf'corpus.jsonl:3: not a document: bad title \("title" is a number, not a string\); {fix}$',
    )
    _fails(lambda: list(iter_documents(folder)), rf"corpus.jsonl:3: .*{fix}, {SKIP_HINT}")
    report = ReadReport()
    assert len(list(iter_documents(folder, on_error="skip", report=report))) == 2
    assert report.first_lines == {"bad title": [3]}
    pq.write_table(
        pa.table({"_id": ["a", "b"], "title": [None, "T"], "text": ["x", "y"]}),
        tmp_path / "t.parquet",
    )
    assert [r.title for r in iter_records(tmp_path / "t.parquet")] == ["", "T"]


def test_duplicate_document_ids_name_both_lines(tmp_path: Path) -> None:
    rows = [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a", "text": "z"}]
    folder = _beir(tmp_path, corpus=_jsonl(rows))
    pattern = (
        r"corpus.jsonl:3: not a document: duplicate id \(duplicate document id 'a', first at "
        r"line 1\); give each one its own id"
    )
    _fails(lambda: load_beir(folder), pattern)
    _fails(lambda: load_corpus(folder), pattern)
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"_id": ["a", "b", "a"], "text": ["x", "y", "z"]}), parquet)
    _fails(lambda: load_corpus(parquet), r"d.parquet:3: .*first at row 1\)")


def test_duplicate_query_ids_name_both_lines(tmp_path: Path) -> None:
    queries = _jsonl(
        [{"_id": "q1", "text": "what"}, {"_id": "q2", "text": "b"}, {"_id": "q1", "text": "c"}]
    )
    folder = _beir(tmp_path, queries=queries)
    _fails(
        lambda: load_beir(folder),
        r"queries.jsonl:3: not a query: duplicate id \(duplicate query id 'q1', first at line "
        r"1\); give each one its own id, or remove one of them$",
    )


def test_an_empty_corpus_is_an_error(tmp_path: Path) -> None:
    for content in (b"", b"\n \n"):
        folder = _beir(tmp_path / str(len(content)), corpus=content)
        fix = r'add documents, one JSON object per line like \{"_id": "d1", "text": "..."\}'
        empty = rf"corpus.jsonl: no documents \(the file is empty or all blank\); {fix}"
        _fails(partial(load_beir, folder), empty)
        _fails(partial(load_corpus, folder), empty)
        _fails(lambda f=folder: list(iter_documents(f)), empty)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{oops\n" + _jsonl([{"_id": "a"}]))
    _fails(
        lambda: list(iter_documents(path, on_error="skip")),
        r"bad.jsonl: no document could be read \(skipped 2 of 2 records: invalid JSON 1 "
        r"\(lines 1\); missing text 1 \(lines 2\)\); fix them",
    )
    pq.write_table(
        pa.table({"_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
        tmp_path / "e.parquet",
    )
    _fails(lambda: list(iter_documents(tmp_path / "e.parquet")), "e.parquet: no documents")


def test_a_queries_file_without_queries_is_an_error(tmp_path: Path) -> None:
    folder = _beir(tmp_path, queries=b"\n\n")
    _fails(
        lambda: load_beir(folder),
        r"queries.jsonl: no queries \(the file is empty or all blank\); add queries, one JSON "
        r'object per line like \{"_id": "q1", "text": "..."\}$',
    )


def test_qrels_with_only_a_header_or_nothing_are_errors(tmp_path: Path) -> None:
    fix = "add one judgement per line as query-id<TAB>corpus-id<TAB>score after the header"
    folder = _beir(tmp_path / "h", qrels=QRELS_HEADER + "\n")
    _fails(lambda: load_beir(folder), rf"test.tsv:1: only a header, no judgements; {fix}")
    folder = _beir(tmp_path / "e", qrels="")
    _fails(
        lambda: load_beir(folder),
        rf"test.tsv: the file is empty or all blank, no judgements; {fix}",
    )
    _fails(lambda: load_queries(folder, "test"), "test.tsv: the file is empty")


def test_qrels_scores_must_be_integers(tmp_path: Path) -> None:
    folder = _beir(tmp_path, qrels=QRELS_HEADER + "q1\ta\t1\nq1\tb\t0.5\n")
    _fails(
        lambda: load_beir(folder),
        r"test.tsv:3: not a judgement: bad score \(score '0.5' is not an integer\); give a "
        r"whole-number relevance grade \(0 not relevant, 1, 2… relevant\)$",
    )


def test_qrels_rows_need_three_columns(tmp_path: Path) -> None:
    fix = "write one judgement per line as query-id<TAB>corpus-id<TAB>score$"
    for row, got in (("q1 a 1", 1), ("q1\t0\ta\t1", 4), ("q1\ta", 2)):
        folder = _beir(tmp_path / str(got), qrels=QRELS_HEADER + f"q1\tb\t1\n{row}\n")
        _fails(
            partial(load_beir, folder),
            rf"test.tsv:3: not a judgement: wrong number of columns \({got} tab-separated "
            rf"columns, expected 3\); {fix}",
        )
    folder = _beir(tmp_path / "e", qrels=QRELS_HEADER + "q1\t\t1\n")
    _fails(
        lambda: load_beir(folder),
        rf"test.tsv:2: not a judgement: missing id \(empty corpus-id\); {fix}",
    )


def test_qrels_need_their_header(tmp_path: Path) -> None:
    folder = _beir(tmp_path, qrels="q1\ta\t1\nq1\tb\t1\n")
    _fails(
        lambda: load_beir(folder),
        r"test.tsv:1: a judgement where the header belongs; add the header line "
        r"query-id<TAB>corpus-id<TAB>score first",
    )


def test_judged_queries_must_be_in_the_queries_file(tmp_path: Path) -> None:
    folder = _beir(tmp_path, qrels=QRELS_HEADER + "q1\ta\t1\nq9\tb\t1\nq8\ta\t1\n")
    _fails(
        lambda: load_beir(folder),
        r"test.tsv:3: query id 'q9' is not in .*queries.jsonl \(2 judged queries are not\); "
        "add them there, or remove their judgements",
    )


def test_a_pair_judged_twice_needs_one_score(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _beir(tmp_path, qrels=QRELS_HEADER + "q1\ta\t1\nq1\tz\t1\nq1\ta\t1\n")
    with caplog.at_level(logging.WARNING, logger="search.corpus"):
        assert load_beir(folder)[2] == {"q1": {"a": 1, "z": 1}}
    assert "1 judged documents are not in the corpus (e.g. 'z')" in caplog.text
    (folder / "qrels" / "test.tsv").write_text(QRELS_HEADER + "q1\ta\t1\nq1\ta\t2\n")
    _fails(
        lambda: load_beir(folder),
        r"test.tsv:3: not a judgement: duplicate judgement \(query 'q1' and document 'a' "
        r"judged 1 at line 2, 2 here\); keep one line$",
    )


def test_a_truncated_gz_names_the_file_and_the_lines_read(tmp_path: Path) -> None:
    rows = [{"_id": f"d{i}", "text": "some text " * 20} for i in range(200)]
    whole = gzip.compress(_jsonl(rows))
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    pattern = (
        r"c.jsonl.gz: gzip data cut off or corrupt: (\d+) lines read, then EOFError: .*; "
        "download or compress the file again"
    )
    message = _fails(lambda: list(iter_records(path)), pattern)
    lines = int(re.search(pattern, message).group(1))  # type: ignore[union-attr]
    assert 0 < lines < 200
    _fails(lambda: count_documents(path), pattern)
    path.write_bytes(b"not gzip at all\n")
    _fails(
        lambda: list(iter_records(path)),
        r"c.jsonl.gz: gzip data cut off or corrupt: 0 lines read, then BadGzipFile",
    )


def test_load_queries_reads_by_the_same_rules(tmp_path: Path) -> None:
    folder = _beir(
        tmp_path, queries=b'{"_id": 5, "text": "five"}\n', qrels=QRELS_HEADER + "5\ta\t1\n"
    )
    assert load_queries(folder, "test") == {"5": "five"}
    assert load_queries(folder, "train") == {}
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q", "text": 5}\n')
    _fails(
        lambda: load_queries(folder, "test"),
        r'queries.jsonl:1: not a query: missing text \("text" is a number, not a string\); '
        r'give every record a string "text"$',
    )


def test_commands_turn_bad_data_into_exit_2_with_one_line(tiny_model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    folder = _beir(tmp_path, qrels=QRELS_HEADER)
    r = CliRunner().invoke(app, ["eval", "--model", "bm25", "--data", str(folder)])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "test.tsv:1: only a header" in lines[0], (
        r.stderr
    )
    whole = gzip.compress(_jsonl([{"_id": f"d{i}", "text": "t " * 50} for i in range(100)]))
    (tmp_path / "c.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    args = ["index", "--model", str(tiny_model), "--data", str(tmp_path / "c.jsonl.gz")]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "idx")])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "lines read" in lines[0], r.stderr
