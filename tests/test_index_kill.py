"""Crash safety: a real `distilsearch index` killed with SIGKILL midway, then resumed."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from indexer.shards import complete_shards
from search.encoder import load_encoder
from search.index_folder import load_index_folder, verify_folder
from search.types import document_text

N_DOCS = 2000
SHARD = 100
WORDS = (  # noqa: SIM905
    "harbor lantern meadow violet quartz ember falcon glacier saffron timber whisper canyon "
    "orchid prism thunder velvet nectar summit marble breeze"
).split()


def _corpus(path: Path) -> list[tuple[str, str]]:
    rng = random.Random(7)
    docs = [
        (f"k{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))))
        for i in range(N_DOCS)
    ]
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs))
    return docs


def _index_cmd(model: Path, data: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("distilsearch")
    return [
        str(exe), "index", "--model", str(model), "--data", str(data), "--out", str(out),
        "--factory", "Flat", "--shard-size", str(SHARD), "--batch-size", "16", "--no-bm25",
    ]  # fmt: skip


def test_sigkill_midway_then_rerun_continues_and_indexes_each_document_once(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "corpus.jsonl"
    docs = _corpus(data)
    out = tmp_path / "idx"
    shards = tmp_path / ".idx.work" / "shards"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    job = subprocess.Popen(
        _index_cmd(tiny_model, data, out),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(complete_shards(shards)) < 3 and job.poll() is None:
            assert time.monotonic() < deadline, "the job wrote no shards within 120 s"
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        assert job.wait(timeout=30) == -signal.SIGKILL, "the job ended before it was killed"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=30)
    done = complete_shards(shards)
    assert 3 <= len(done) < N_DOCS // SHARD and not out.exists()

    rerun = subprocess.run(
        _index_cmd(tiny_model, data, out), env=env, capture_output=True, text=True, timeout=240
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"indexed into {out}" in rerun.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    # The shards finished before the kill were reused, not re-encoded.
    assert manifest["build"]["resumed_docs"] == SHARD * len(done)
    assert manifest["build"]["encoded_docs"] == N_DOCS - SHARD * len(done)
    assert not (tmp_path / ".idx.work").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "idx"]

    verify_folder(out)
    folder = load_index_folder(out)
    assert manifest["count"] == folder.index.ntotal == len(folder.store) == N_DOCS
    assert folder.store.ids() == [d for d, _ in docs]  # each document exactly once, in order
    # The vectors are right, on both sides of the kill.
    enc = load_encoder(tiny_model)
    sample = [0, 150, 299, 1234, N_DOCS - 1]
    want = enc.encode([document_text("", docs[i][1]) for i in sample])
    got = np.stack([folder.index.reconstruct(i) for i in sample])
    assert np.allclose(got, want, atol=1e-5)
