"""Layer-local distillation: block plans, the loss, the state store, and a trained block."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from distill.transformer.layerwise import (
    Block,
    boundaries,
    distill_layers,
    layer_local_loss,
    layers_to_train,
    plan_blocks,
)
from distill.transformer.schedule import Schedule
from distill.transformer.states import fill_store
from distill.transformer.student import layer_subset


@pytest.fixture(scope="module")
def tiny3(tiny_model_3l: Path) -> Path:
    return tiny_model_3l


@pytest.fixture(scope="module")
def texts(scifact_slice: Path) -> list[str]:
    docs = [json.loads(line) for line in (scifact_slice / "corpus.jsonl").read_text().splitlines()]
    out = [f"{d['title']} {d['text']}" for d in docs]
    out += [s for d in docs for s in d["text"].split(". ")[:3] if len(s) > 30]
    return out[:240]


def test_blocks_of_a_cut() -> None:
    blocks = plan_blocks((0, 1, 3, 5), 6)
    assert blocks == [Block(0, 1, 0, 0), Block(1, 2, 1, 1), Block(2, 4, 3, 2), Block(4, 6, 5, 3)]
    assert [b.index for b in layers_to_train(blocks)] == [2, 3]
    assert boundaries(blocks) == [2, 4, 6]
    # leading layers dropped: the first kept layer stands for them all
    assert plan_blocks((2, 5), 6) == [Block(0, 3, 2, 0), Block(3, 6, 5, 1)]
    # an uncut model has nothing to train
    assert layers_to_train(plan_blocks((0, 1, 2), 3)) == []
    for bad in ((), (1, 1), (3, 1), (0, 6)):
        with pytest.raises(ValueError, match="distinct ascending layers"):
            plan_blocks(bad, 6)


def test_layer_local_loss_by_hand() -> None:
    target = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding: ignored on both sides
    # error (0 + 1) + (0 + 4) = 5 over energy 1 + 4 = 5
    assert float(layer_local_loss(pred, target, mask)) == pytest.approx(1.0)
    assert float(layer_local_loss(target, target, mask)) == 0.0


def test_store_resumes_to_the_same_states(
    tiny3: Path, texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distill.transformer.states as states

    model = SentenceTransformer(str(tiny3), device="cpu")
    monkeypatch.setattr(states, "FILL_BATCH_TOKENS", 256)  # many small batches
    whole = fill_store(tmp_path / "a", model, texts, [1, 3], model_hash="m", progress=False)
    calls = {"n": 0}
    real_scatter = states.scatter

    def dying_scatter(*args: object, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 70:  # after 17 batches of two boundaries (progress every 16)
            raise KeyboardInterrupt
        real_scatter(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(states, "scatter", dying_scatter)
    with pytest.raises(KeyboardInterrupt):
        fill_store(tmp_path / "b", model, texts, [1, 3], model_hash="m", progress=False)
    assert json.loads((tmp_path / "b" / "progress.json").read_text())["batches"] == 32
    monkeypatch.setattr(states, "scatter", real_scatter)
    resumed = fill_store(tmp_path / "b", model, texts, [1, 3], model_hash="m", progress=False)
    for b in (1, 3):
        assert np.array_equal(np.asarray(whole.arrays[b]), np.asarray(resumed.arrays[b]))
    # the states are what the model computes: boundary 3 is the last hidden state
    feats = model.preprocess(texts[:1])
    with torch.inference_mode():
        last = model[0].auto_model(**feats).last_hidden_state[0].numpy()
    assert np.allclose(whole.batch(3, [0])[0][0].numpy(), last, atol=2e-2)


def test_a_trained_block_lowers_its_loss_and_moves_the_cut_towards_the_uncut(
    tiny3: Path, texts: list[str], tmp_path: Path
) -> None:
    uncut = SentenceTransformer(str(tiny3), device="cpu")
    cut = layer_subset(uncut, (0, 2), "tiny3")  # layers 1-2 replaced by layer 2
    blocks = plan_blocks((0, 2), 3)
    store = fill_store(tmp_path / "s", uncut, texts, boundaries(blocks), model_hash="u")
    held = list(range(200, len(texts)))
    initial = [e.copy() for e in (cut.encode(texts[200:]), uncut.encode(texts[200:]))]
    cos_before = float((initial[0] * initial[1]).sum(1).mean())
    (result,) = distill_layers(
        cut,
        blocks,
        store,
        tmp_path / "w",
        (list(range(200)), held),
        Schedule(lr=3e-3, seconds=120, epochs=30, seed=0),
        progress=False,
    )
    # a random 2-layer block is far from one layer; a trained layer gets well closer
    assert result.held_loss_after < 0.7 * result.held_loss_before
    after = cut.encode(texts[200:])
    cos_after = float((after * initial[1]).sum(1).mean())
    assert cos_after > cos_before + 0.5 * (1 - cos_before)


def test_the_gate_states_the_noise_of_a_gain() -> None:
    from distill.gate import Gain, judge_gain

    before = {f"q{i}": 0.5 for i in range(200)}
    # 200 queries, half of them up by 0.2: a real gain, far outside the noise
    after = {q: v + (0.2 if i % 2 else 0.0) for i, (q, v) in enumerate(before.items())}
    verdict = judge_gain(after, before)
    assert verdict.gain == pytest.approx(0.1)
    low, high = verdict.ci95
    assert 0.07 < low < 0.1 < high < 0.13 and verdict.p < 0.001
    # up and down alike: no gain, and the interval says so
    mixed = {q: v + (0.2 if i % 2 else -0.2) for i, (q, v) in enumerate(before.items())}
    verdict = judge_gain(mixed, before)
    assert verdict.ci95[0] < 0 < verdict.ci95[1] and verdict.p > 0.5
    assert judge_gain(before, before) == Gain(gain=0.0, ci95=(0.0, 0.0), p=1.0)


def test_the_teacher_stage_resumes_from_its_checkpoint(
    tiny3: Path, texts: list[str], tmp_path: Path
) -> None:
    from distill.transformer.frozen import PrefixStates, Top, ValidationStates, train_top
    from distill.transformer.mining import mine_rank_examples

    model = SentenceTransformer(str(tiny3), device="cpu")
    store = fill_store(tmp_path / "s", model, texts, [1], model_hash="u", progress=False)
    vecs = model.encode(texts, normalize_embeddings=True)  # stands in for the teacher's
    n_docs = 80
    examples = mine_rank_examples(texts[n_docs:], vecs[n_docs:], texts[:n_docs], vecs[:n_docs])
    rows = {t: i for i, t in enumerate(texts)}
    q_rows = list(range(200, len(texts)))
    best = (vecs[q_rows] @ vecs[:n_docs].T).argmax(1)
    val = ValidationStates(
        store,
        1,
        [f"d{i}" for i in range(n_docs)],
        list(range(n_docs)),
        [f"q{r}" for r in q_rows],
        q_rows,
        {f"q{r}": {f"d{b}": 1} for r, b in zip(q_rows, best, strict=True)},
    )
    schedule = Schedule(lr=1e-3, seconds=0, epochs=1.0, batch_size=8, eval_steps=100)
    states, work = PrefixStates(store, 1, rows), tmp_path / "w"
    # no time left: one step, one evaluation and a checkpoint, as a killed run leaves
    first = train_top(
        Top(model, 1), states, examples, val, work, schedule, temperature=0.05, progress=False
    )
    assert (first.steps, first.stopped_by) == (1, "time budget")
    again = train_top(
        Top(model, 1),
        states,
        examples,
        val,
        work,
        dataclasses.replace(schedule, seconds=600, eval_steps=5),
        temperature=0.05,
        patience=100,
        progress=False,
    )
    planned = len(examples) // 8
    assert (again.resumed_from, again.steps, again.stopped_by) == (1, planned, "epochs done")
    assert again.history[:2] == first.history  # the start is not scored again
    assert again.before == first.before
    assert [s for s, _ in again.history[2:]] == [*range(5, planned + 1, 5)] + (
        [planned] if planned % 5 else []
    )
