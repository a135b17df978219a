"""The Dask engine on a real loopback cluster equals a single-machine build."""

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from distributed import Client

from indexer.build import build_index
from indexer.dask_engine import DaskEngine, loaded_encoders
from search.encoder import load_encoder
from search.index_folder import load_index_folder

LOOPBACK = "127.0.0.1"
WORDS = (  # noqa: SIM905
    "amber basalt cobalt dune estuary fjord geyser heath isthmus jungle karst lagoon mesa "
    "oasis prairie ravine savanna tundra valley wadi"
).split()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _stop(address: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Shut the cluster down through the scheduler, then make sure every process is gone."""
    if procs and procs[0].poll() is None:
        try:
            with Client(address, timeout=10) as client:
                client.shutdown()
        except (OSError, TimeoutError):
            pass  # the processes are killed below
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-thread workers, separate processes, on 127.0.0.1 only."""
    tmp = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    address = f"tcp://{LOOPBACK}:{_free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "cluster.log", "wb")  # noqa: SIM115 (closed in finally)
    try:
        port = address.rsplit(":", 1)[1]
        scheduler = [dask, "scheduler", "--host", LOOPBACK, "--port", port, "--no-dashboard"]
        scheduler += ["--scheduler-file", str(tmp / "scheduler.json")]
        procs.append(subprocess.Popen(scheduler, env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + 60
        while not (tmp / "scheduler.json").is_file():
            assert procs[0].poll() is None, (tmp / "cluster.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start within 60 s"
            time.sleep(0.1)
        repo = Path(__file__).parents[1]
        for i in range(2):
            worker = [dask, "worker", address, "--nthreads", "1", "--host", LOOPBACK]
            worker += ["--no-dashboard", "--no-nanny", "--name", f"w{i}", "--death-timeout", "60"]
            worker += ["--local-directory", str(tmp / f"w{i}")]
            procs.append(subprocess.Popen(worker, env=env, stdout=log, stderr=log, cwd=repo))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
            hosts = {
                w.split("://")[1].rsplit(":", 1)[0] for w in client.scheduler_info()["workers"]
            }
            assert hosts == {LOOPBACK}
        yield address
    finally:
        _stop(address, procs)
        log.close()


def _docs(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(3)
    return [
        (f"g{i}", f"place {i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))))
        for i in range(n)
    ]


def test_a_dask_build_equals_a_local_build(cluster: str, tiny_model: Path, tmp_path: Path) -> None:
    docs = _docs(600)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the workers, so both sides compute the same floats
    try:
        enc = load_encoder(tiny_model)
        settings = {"factory": "IVF8,Flat", "shard_size": 60, "search_params": {"nprobe": 3}}
        local = build_index(enc, docs, tmp_path / "local", progress=False, **settings)
        with Client(cluster, timeout=60) as client:
            engine = DaskEngine(client, model=str(tiny_model), backend="torch", batch_size=16)
            remote = build_index(
                enc,
                docs,
                tmp_path / "dask",
                engine=engine,
                work_dir=tmp_path / "shared-work",
                progress=False,
                **settings,
            )
            loaded = client.run(loaded_encoders)
        query_vecs = enc.encode([f"{t} {x}" for _, t, x in docs[::37]])
    finally:
        torch.set_num_threads(threads)

    assert remote["build"]["engine"] == "dask" and local["build"]["engine"] == "local"
    # Each worker loaded the model once and kept it.
    assert list(loaded.values()) == [[(str(tiny_model), "torch")]] * 2
    assert remote["count"] == local["count"] == 600
    assert not (tmp_path / "shared-work").exists()
    a, b = load_index_folder(tmp_path / "local"), load_index_folder(tmp_path / "dask")
    assert a.store.ids() == b.store.ids() == [d for d, _, _ in docs]
    ivf_a, ivf_b = faiss.extract_index_ivf(a.index), faiss.extract_index_ivf(b.index)
    for lst in range(ivf_a.nlist):  # same vectors in the same lists, in the same order
        ids_a = faiss.rev_swig_ptr(ivf_a.invlists.get_ids(lst), ivf_a.invlists.list_size(lst))
        ids_b = faiss.rev_swig_ptr(ivf_b.invlists.get_ids(lst), ivf_b.invlists.list_size(lst))
        assert np.array_equal(ids_a, ids_b)
    for ivf in (ivf_a, ivf_b):
        ivf.make_direct_map()
    rows = np.arange(600)
    assert np.allclose(ivf_a.reconstruct_batch(rows), ivf_b.reconstruct_batch(rows), atol=1e-6)
    sa, ia = a.index.search(query_vecs, 10)
    sb, ib = b.index.search(query_vecs, 10)
    assert np.array_equal(ia, ib) and np.allclose(sa, sb, atol=1e-6)
    assert json.loads(json.dumps(remote["search_params"])) == local["search_params"]
