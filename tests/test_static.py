"""The static student: model2vec distillation -> adaptation -> save -> load -> index -> search.

Real model2vec calls throughout, on the tiny random teacher of conftest (a whole
`distill --student static` run takes seconds) and on hand-made word-level models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from api.cli import app
from distill.config import DistillConfig, StudentSpec
from distill.report import REPORT
from distill.run import distill
from distill.static.job import FUSION_WEIGHTS
from distill.static.model import adapt, plain_model, reweight, token_frequencies
from distill.static_options import StaticOptions


def report_of(config: DistillConfig, *, progress: bool = False) -> dict[str, Any]:
    """`distill`'s report as the JSON it writes."""
    return distill(config, progress=progress).model_dump(mode="json", by_alias=True)


runner = CliRunner()
WORDS = ["[UNK]", "cat", "dog", "fish", "bird", "runs", "swims", "flies", "the", "a"]


def _word_model(dim: int = 8, seed: int = 0) -> Any:
    """A static model over `WORDS` (word-level tokenizer), random float32 vectors."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # type: ignore[assignment]
    vectors = np.random.default_rng(seed).normal(size=(len(WORDS), dim)).astype(np.float32)
    return StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True)


@pytest.fixture(scope="module")
def static_run(
    tiny_model: Path, scifact_slice: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """A whole `distill --student static` run with the tiny teacher: (folder, report)."""
    root = tmp_path_factory.mktemp("static")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILSEARCH_CACHE", str(root / "cache"))
        mp.setenv("DISTILSEARCH_EMBED_CACHE", str(root / "emb"))
        config = DistillConfig(
            teacher=str(tiny_model),
            student="static:dims=16,epochs=3,batch=8",
            data=scifact_slice,
            out=root / "student",
            max_texts=60,
            generic_texts=None,
        )
        report = report_of(config, progress=False)  # the dispatch in distill.run
        # the plain distillation depends on the teacher and options only: cached
        from search.encoder import TorchEncoder

        _, cached = plain_model(TorchEncoder(tiny_model), StaticOptions(dims=16), "cpu")
        report["_second_plain_cached"] = cached
    return root / "student", report


def test_options_parse_and_refuse_with_the_keys() -> None:
    spec = StudentSpec.parse("static:dims=128,loss=mse,adapt=false,reweight=0")
    assert spec.model is None and spec.layers is None
    assert spec.static == StaticOptions(dims=128, loss="mse", adapt=False, reweight=0.0)
    assert StudentSpec.parse("static").static == StaticOptions()
    assert StudentSpec.parse("all-MiniLM-L6-v2").static is None
    for bad, says in [
        ("static:dimz=3", "keys: dims, sif"),
        ("static:dims=abc", "dims='abc' must be an integer"),
        ("static:loss=kl", "loss must be one of cosine, mse"),
        ("static:sif=2", "sif must be in [0, 1)"),
    ]:
        with pytest.raises(ValueError, match="--student static") as err:
            StudentSpec.parse(bad)
        assert says in str(err.value)


def test_a_bad_static_spec_is_one_line_exit_2(scifact_slice: Path, tmp_path: Path) -> None:
    args = ["distill", "--data", str(scifact_slice), "--out", str(tmp_path / "s")]
    r = runner.invoke(app, [*args, "--student", "static:dims=abc"])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: --student static") and "integer" in lines[0]


def test_the_run_distils_adapts_gates_and_reports(static_run: tuple[Path, dict]) -> None:
    folder, report = static_run
    assert report["kind"] == "static" and report["dim"] == 16  # tiny teacher is 32 wide
    gate = report["gate"]
    assert set(gate["candidates"]) == {"plain", "adapted", "adapted+reweight"}
    assert gate["emitted"] == max(gate["candidates"], key=gate["candidates"].get)
    assert gate["after"] >= gate["before"] == gate["candidates"]["plain"]
    # judged by the teacher's own top 10: the teacher scores 1.0 by construction, and a
    # static student, judged by the same lists, below it
    assert gate["source"] == "teacher top-10" and gate["after"] < gate["teacher"] == 1.0
    assert [s["name"] for s in report["stages"]] == ["adapt", "reweight"]
    assert report["hybrid"]["weight"] in FUSION_WEIGHTS
    assert report["speed"]["docs_per_s"] > 0 and report["speed"]["query_ms"] > 0
    assert not report["plain_cached"] and report["_second_plain_cached"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", REPORT):
        assert (folder / name).is_file(), name
    saved = json.loads((folder / REPORT).read_text())
    assert saved["student_hash"] and saved["gate"] == gate
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: model2vec") and "Static student" in card


def test_the_folder_loads_through_load_encoder(static_run: tuple[Path, dict]) -> None:
    from model2vec import StaticModel

    from search.embed_cache import cache_key
    from search.encoder import available_backends, load_encoder
    from search.static_encoder import StaticEncoder

    folder, report = static_run
    assert available_backends(folder) == ["static", "torch"]
    encoder = load_encoder(folder)
    assert isinstance(encoder, StaticEncoder) and encoder.dim == 16
    assert encoder.model_hash == report["student_hash"]
    assert cache_key(encoder).endswith("-static")  # never mixed with a torch model's vectors
    texts = ["cancer risk in smokers", "", "vitamin D and bone density"]
    vecs = encoder.encode(texts)
    assert vecs.dtype == np.float32 and vecs.shape == (3, 16)
    assert np.allclose(np.linalg.norm(vecs[[0, 2]], axis=1), 1, atol=1e-5)
    assert not vecs[1].any()  # no known token: a zero row
    raw = StaticModel.from_pretrained(folder, force_download=False).encode(texts[:1])
    assert np.allclose(vecs[0], raw[0] / np.linalg.norm(raw[0]), atol=1e-3)
    # sentence-transformers' StaticEmbedding reads the same folder
    torch_vecs = load_encoder(folder, backend="torch").encode(texts[:1])
    assert float(torch_vecs[0] @ vecs[0]) > 0.999


def test_index_and_search_with_the_static_student(
    static_run: tuple[Path, dict], scifact_slice: Path, tmp_path: Path
) -> None:
    from search.retriever import Retriever

    folder, _ = static_run
    idx = tmp_path / "idx"
    r = runner.invoke(
        app, ["index", "--model", str(folder), "--data", str(scifact_slice), "--out", str(idx)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["search", "--index", str(idx), "cancer risk", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["hits"]) == 3
    retriever = Retriever.open(idx)
    assert retriever.encoder.backend == "static"
    doc = json.loads((scifact_slice / "corpus.jsonl").read_text().splitlines()[0])
    hits = retriever.search(f"{doc['title']} {doc['text']}", k=1)  # a document finds itself
    assert hits[0].id == doc["_id"]
    retriever.close()


def test_adapt_pulls_texts_to_their_targets() -> None:
    from search.static_encoder import StaticEncoder

    plain = _word_model()
    texts = [f"the {a} {b}" for a in WORDS[1:5] for b in WORDS[5:8]] * 4
    rng = np.random.default_rng(1)
    targets = rng.normal(size=(len(texts), plain.dim)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    before = plain.embedding.copy()
    options = StaticOptions(dims=8, epochs=40, patience=40, batch=8, lr=0.05)
    trained = adapt(plain, texts, targets, texts[:8], targets[:8], options)

    def cosine(model: Any) -> float:
        vecs = StaticEncoder.from_model(model, "m").encode(texts)
        return float(np.mean(np.sum(vecs * targets, axis=1)))

    assert cosine(trained) > cosine(plain) + 0.1
    assert np.array_equal(plain.embedding, before)  # the start is not modified
    assert trained.embedding.dtype == np.float32 and trained.normalize


def test_reweight_scales_each_token_by_its_corpus_frequency() -> None:
    model = _word_model()
    before = model.embedding.copy()
    texts = ["the cat", "the dog", "the bird runs"]
    out = reweight(model, texts, alpha=0.1)
    p = token_frequencies(model, texts)
    counts = np.zeros(len(WORDS))
    for w in ["the", "cat", "the", "dog", "the", "bird", "runs"]:
        counts[WORDS.index(w)] += 1
    assert np.allclose(p, (counts + 1) / (counts.sum() + len(WORDS)))
    expected = before * (0.1 / (0.1 + p))[:, None]
    assert np.allclose(out.embedding, expected, atol=1e-6)
    assert np.array_equal(model.embedding, before)
    # "the" (3 of 7 tokens) shrinks more than "fish" (never seen)
    shrink = np.linalg.norm(out.embedding, axis=1) / np.linalg.norm(before, axis=1)
    assert shrink[WORDS.index("the")] < shrink[WORDS.index("fish")]
