"""Training a student's top layers against the teacher over cached frozen-prefix states.

The embeddings and lower layers of the student stay frozen, so their output for every
training and validation text is computed once (`distill.transformer.states`) and a step runs only
the layers being trained, forward and backward. The objective is the teacher's
in-batch rankings of mined query-document examples (`distill.transformer.losses.rank_distill_loss`):
the student's pooled embeddings are scored, never the teacher's labels.

Validation reuses the cached prefix states of the validation texts, so a pass costs
the trained layers only; the weights with the best validation nDCG@10 are kept.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.transformer.layerwise import run_layers
from distill.transformer.losses import rank_distill_loss
from distill.transformer.mining import RankExamples
from distill.transformer.schedule import Schedule, mixed_precision
from distill.transformer.states import StateStore
from search.atomic import atomic_path
from search.batching import token_batches
from search.evaluate import exact_search, score_results
from search.types import Qrels

logger = logging.getLogger(__name__)


@dataclass
class Top:
    """The trainable part of a student: layers ``first..`` of its backbone and the
    modules after the backbone (pooling, normalisation).

    Attributes:
        student: The SentenceTransformer.
        first: Index of the first trained layer in the student's backbone.
    """

    student: Any
    first: int

    @property
    def backbone(self) -> Any:
        return self.student[0].auto_model

    @property
    def layers(self) -> list[torch.nn.Module]:
        return list(self.backbone.encoder.layer)[self.first :]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def embed(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(batch, dim)`` from prefix states ``(batch, tokens,
        hidden)``."""
        hidden = run_layers(self.layers, self.backbone, states, mask)
        mask = mask.to(hidden.device)
        features: dict[str, Any] = {"token_embeddings": hidden, "attention_mask": mask}
        for module in list(self.student)[1:]:
            features = module(features)
        return torch.nn.functional.normalize(features["sentence_embedding"].float(), dim=-1)

    def encode(self, store: StateStore, boundary: int, rows: Sequence[int]) -> np.ndarray:
        """Embeddings of texts `rows` of `store`, float32 ``(len(rows), dim)``."""
        out: list[np.ndarray] = []
        index: list[int] = []
        with torch.inference_mode():
            for batch in token_batches([int(store.lengths[r]) for r in rows], 64, 8192):
                picked = [rows[i] for i in batch]
                x, mask = store.batch(boundary, picked)
                out.append(self.embed(x, mask).cpu().numpy())
                index.extend(int(i) for i in batch)
        vecs = np.concatenate(out)
        ordered = np.empty_like(vecs)
        ordered[np.asarray(index)] = vecs
        return ordered


@dataclass
class ValidationStates:
    """A validation set whose texts' prefix states sit in `store` at `boundary`.

    Attributes:
        doc_rows, query_rows: Rows of `store` of the documents and queries, in the
            order of `doc_ids` and `query_ids`.
    """

    store: StateStore
    boundary: int
    doc_ids: list[str]
    doc_rows: list[int]
    query_ids: list[str]
    query_rows: list[int]
    qrels: Qrels

    def score(self, top: Top) -> float:
        """nDCG@10 of the student (through its cached prefix) on this set."""
        docs = top.encode(self.store, self.boundary, self.doc_rows)
        queries = top.encode(self.store, self.boundary, self.query_rows)
        results = exact_search(queries, docs, self.query_ids, self.doc_ids, 100)
        return float(score_results(self.qrels, results)["ndcg@10"])


@dataclass
class TopResult:
    """What the teacher stage did: validation nDCG@10 before and of the weights kept,
    steps, seconds, why it stopped, and the score after each evaluation."""

    before: float
    best: float
    steps: int
    seconds: float
    stopped_by: str
    history: list[tuple[int, float]]
    resumed_from: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "val_ndcg@10_before": round(self.before, 4),
            "val_ndcg@10_best": round(self.best, 4),
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "stopped_by": self.stopped_by,
            "history": [[s, round(v, 4)] for s, v in self.history],
            "resumed_from_step": self.resumed_from,
        }


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _snapshot(layers: Sequence[torch.nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in la.state_dict().items()} for la in layers]


@dataclass
class _State:
    """Where training stands: what a checkpoint holds besides the optimizer's state."""

    step: int
    before: float
    best: float
    best_state: list[dict[str, torch.Tensor]]
    history: list[tuple[int, float]]
    resumed: int = 0


@dataclass
class _Trainer:
    """The pieces one teacher-stage step and evaluation use."""

    top: Top
    store: StateStore
    boundary: int
    val: ValidationStates
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ckpt: Path
    bf16: bool = False

    def start(self) -> _State:
        """Resume from the checkpoint when there is one, else score the start."""
        layers = self.top.layers
        if not self.ckpt.is_file():
            with mixed_precision(self.bf16):
                before = self.val.score(self.top)
            return _State(0, before, before, _snapshot(layers), [(0, before)])
        saved = torch.load(self.ckpt, weights_only=False)
        for layer, state in zip(layers, saved["layers"], strict=True):
            layer.load_state_dict(state)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        return _State(
            saved["step"],
            saved["before"],
            saved["best"],
            saved["best_state"],
            saved["history"],
            resumed=saved["step"],
        )

    def step(
        self, q_rows: list[int], d_rows: list[int], labels: torch.Tensor, temperature: float
    ) -> float:
        """One optimizer step on queries `q_rows` against documents `d_rows`;
        `labels` holds the teacher's embeddings of the queries, then the documents."""
        for layer in self.top.layers:
            layer.train()
        with mixed_precision(self.bf16):
            q = self.top.embed(*self.store.batch(self.boundary, q_rows))
            d = self.top.embed(*self.store.batch(self.boundary, d_rows))
        labels = labels.to(q.device)
        loss = rank_distill_loss(q, d, labels[: len(q_rows)], labels[len(q_rows) :], temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.top.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.item())

    def finish(self, state: _State, stopped: str, seconds: float, work: Path) -> TopResult:
        """Load the best weights into the layers and say what training did."""
        for layer, weights in zip(self.top.layers, state.best_state, strict=True):
            layer.load_state_dict(weights)
            layer.eval()
        (work / "top.json").write_text(json.dumps({"best": state.best}))
        return TopResult(
            state.before,
            state.best,
            state.step,
            seconds,
            stopped,
            state.history,
            state.resumed,
        )

    def evaluate(self, state: _State) -> bool:
        """Score the weights now, keep them if best, checkpoint; True when they were
        the best so far."""
        layers = self.top.layers
        for layer in layers:
            layer.eval()
        with mixed_precision(self.bf16):
            current = self.val.score(self.top)
        state.history.append((state.step, current))
        logger.info("step %d: validation nDCG@10 %.4f (best %.4f)", state.step, current, state.best)
        improved = current > state.best
        if improved:
            state.best, state.best_state = current, _snapshot(layers)
        _save(
            self.ckpt,
            {
                "layers": [la.state_dict() for la in layers],
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": state.step,
                "before": state.before,
                "best": state.best,
                "best_state": state.best_state,
                "history": state.history,
            },
        )
        return improved


@dataclass
class PrefixStates:
    """The training texts' prefix states: `store` at `boundary`; `rows` maps each
    text to its row."""

    store: StateStore
    boundary: int
    rows: dict[str, int]


@dataclass
class _Batches:
    """Mined examples as rows of the prefix store, and their teacher labels."""

    queries: list[int]
    positives: list[int]
    negatives: list[int]
    labels: torch.Tensor  # (n, 3, dim): query, positive, negative; normalised

    @classmethod
    def of(cls, examples: RankExamples, rows: dict[str, int]) -> _Batches:
        labels = torch.from_numpy(examples.labels).reshape(len(examples), 3, -1)
        return cls(
            [rows[t] for t in examples.queries],
            [rows[t] for t in examples.positives],
            [rows[t] for t in examples.negatives],
            torch.nn.functional.normalize(labels, dim=-1),
        )

    def pick(self, step: int, size: int, seed: int) -> list[int]:
        """The examples of step `step`: its epoch's order is drawn from ``seed +
        epoch``, so a resumed run takes the same ones."""
        n = len(self.queries)
        per_epoch = max(1, n // size)
        order = list(range(n))
        random.Random(seed + step // per_epoch).shuffle(order)
        start = (step % per_epoch) * size
        return order[start : start + size]

    def step_inputs(self, picked: list[int]) -> tuple[list[int], list[int], torch.Tensor]:
        """Query rows, document rows (positives then negatives) and their labels."""
        docs = [self.positives[i] for i in picked] + [self.negatives[i] for i in picked]
        labels = torch.cat([self.labels[picked, 0], self.labels[picked, 1], self.labels[picked, 2]])
        return [self.queries[i] for i in picked], docs, labels


def train_top(
    top: Top,
    states: PrefixStates,
    examples: RankExamples,
    val: ValidationStates,
    work: Path,
    schedule: Schedule,
    *,
    temperature: float,
    patience: int = 4,
    progress: bool = True,
) -> TopResult:
    """Train `top`'s layers on the teacher's rankings of `examples`, in place.

    Args:
        top: The trainable part of the student.
        states: Prefix states of every text of `examples`.
        examples: Mined (query, positive, negative) texts with teacher embeddings.
        val: Validation texts with their prefix states.
        work: Checkpoint folder: a killed run resumes from its last evaluation.
        schedule: Learning rate, warm-up, seconds (validation passes included),
            epochs over the examples at most, batch size (examples a step, each adds a
            query and two documents), steps between validation passes, seed.
        patience: Validation passes without a better score that stop training.

    Returns:
        The result; the student holds the weights with the best validation score
        (the initial ones if nothing beat them).
    """
    planned = schedule.planned(max(1, len(examples) // schedule.batch_size))
    optimizer = torch.optim.AdamW(top.parameters(), lr=schedule.lr, weight_decay=0.01)
    scheduler = schedule.scheduler(optimizer, planned)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "top.pt"
    trainer = _Trainer(
        top, states.store, states.boundary, val, optimizer, scheduler, ckpt, schedule.bf16
    )
    state = trainer.start()
    batches = _Batches.of(examples, states.rows)
    deadline = schedule.deadline()
    t0, stopped, stale = time.perf_counter(), "epochs done", 0
    bar = tqdm(
        total=planned, initial=state.step, desc="top layers vs teacher", disable=not progress
    )
    while state.step < planned:
        picked = batches.pick(state.step, schedule.batch_size, schedule.seed)
        if len(picked) >= 2:
            loss = trainer.step(*batches.step_inputs(picked), temperature)
            bar.set_postfix(loss=f"{loss:.4f}")
        state.step += 1
        bar.update(1)
        out_of_time = time.monotonic() > deadline
        if state.step % schedule.eval_steps == 0 or out_of_time or state.step >= planned:
            stale = 0 if trainer.evaluate(state) else stale + 1
            if out_of_time or stale >= patience:
                stopped = "time budget" if out_of_time else "early stopping"
                break
    bar.close()
    return trainer.finish(state, stopped, time.perf_counter() - t0, work)
