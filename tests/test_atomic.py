"""Atomic file writes and folder swaps (`search.atomic`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from search import atomic
from search.assets import atomic_write_text as reexported
from search.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    staged_folder,
    swap_in_folder,
)


class Boom(Exception):
    pass


def test_writes_replace_content_and_leave_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_bytes(path, b"old")
    atomic_write_text(path, "néw")
    assert path.read_text(encoding="utf-8") == "néw"
    atomic_write_json(path, {"b": [1, 2]})
    assert path.read_text() == '{\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert os.listdir(path.parent) == ["a.json"]
    assert reexported is atomic_write_text


def test_written_file_has_plain_modes(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_keeps_the_suffix_for_writers_that_add_one(tmp_path: Path) -> None:
    path = tmp_path / "vecs.npy"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.name.startswith(".")
        np.save(tmp, np.arange(3))  # would write tmp + ".npy" if the suffix differed
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert os.listdir(tmp_path) == ["vecs.npy"]


def test_a_writer_that_raises_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(Boom), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise Boom
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom), atomic_path(tmp_path / "new.txt"):
        raise Boom
    assert os.listdir(tmp_path) == []


def test_staged_folder_replaces_the_folder(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with staged_folder(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".idx.tmp-{os.getpid()}-")
        (tmp / "new.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.txt").write_text("deep")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "new.txt",
        "sub",
        "sub/deep.txt",
    ]
    assert os.listdir(tmp_path) == ["idx"]
    assert dest.stat().st_mode & 0o077 != 0  # no longer private like a temp folder


def test_staged_folder_creates_a_missing_destination(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "idx"
    with staged_folder(dest) as tmp:
        (tmp / "x").write_text("x")
    assert (dest / "x").read_text() == "x"


def test_a_staged_folder_that_raises_leaves_the_old_folder_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(Boom), staged_folder(dest) as tmp:
        (tmp / "half.txt").write_text("half")
        raise Boom
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    assert os.listdir(tmp_path) == ["idx"]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_folder_with_and_without_rename_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest, tmp = tmp_path / "idx", tmp_path / ".idx.tmp"
    dest.mkdir()
    (dest / "f").write_text("old")
    tmp.mkdir()
    (tmp / "f").write_text("new")
    with open(dest / "f") as held:  # a reader holding a file of the old folder keeps it
        swap_in_folder(tmp, dest)
        assert held.read() == "old"
    assert (dest / "f").read_text() == "new"
    assert os.listdir(tmp_path) == ["idx"]


def test_rename_exchange_swaps_in_one_step(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").touch()
    if not atomic._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    assert (b / "x").exists() and not (a / "x").exists()
