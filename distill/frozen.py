"""Training a student's top layers against the teacher over cached frozen-prefix states.

The embeddings and lower layers of the student stay frozen, so their output for every
training and validation text is computed once (`distill.states`) and a step runs only
the layers being trained, forward and backward. The objective is the teacher's
in-batch rankings of mined query-document examples (`distill.losses.rank_distill_loss`):
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

from distill.layerwise import run_layers, warmup_cosine
from distill.losses import rank_distill_loss
from distill.mining import RankExamples
from distill.states import StateStore
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
        return torch.nn.functional.normalize(features["sentence_embedding"], dim=-1)

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

    def start(self) -> _State:
        """Resume from the checkpoint when there is one, else score the start."""
        layers = self.top.layers
        if not self.ckpt.is_file():
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

    def evaluate(self, state: _State) -> bool:
        """Score the weights now, keep them if best, checkpoint; True when they were
        the best so far."""
        layers = self.top.layers
        for layer in layers:
            layer.eval()
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


def train_top(
    top: Top,
    store: StateStore,
    boundary: int,
    rows: dict[str, int],
    examples: RankExamples,
    val: ValidationStates,
    work: Path,
    *,
    batch_size: int,
    lr: float,
    temperature: float,
    seconds: float,
    eval_steps: int,
    patience: int = 4,
    max_epochs: float = 4.0,
    seed: int = 42,
    progress: bool = True,
) -> TopResult:
    """Train `top`'s layers on the teacher's rankings of `examples`, in place.

    Args:
        top: The trainable part of the student.
        store: Prefix states of the training texts at `boundary`; `rows` maps each
            text of `examples` to its row.
        examples: Mined (query, positive, negative) texts with teacher embeddings.
        val: Validation texts with their prefix states.
        work: Checkpoint folder: a killed run resumes from its last evaluation.
        batch_size: Examples per step (each adds a query and two documents).
        seconds: Time budget of training (validation passes included).
        eval_steps: Steps between validation passes; `patience` passes without a
            better score stop training.
        max_epochs: Passes over the examples at most.

    Returns:
        The result; the student holds the weights with the best validation score
        (the initial ones if nothing beat them).
    """
    n = len(examples)
    per_epoch = max(1, n // batch_size)
    planned = max(1, int(per_epoch * max_epochs))
    optimizer = torch.optim.AdamW(top.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(planned))
    work.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(top, store, boundary, val, optimizer, scheduler, work / "top.pt")
    state = trainer.start()
    labels = torch.nn.functional.normalize(
        torch.from_numpy(examples.labels).reshape(n, 3, -1), dim=-1
    )
    q_rows = [rows[t] for t in examples.queries]
    p_rows = [rows[t] for t in examples.positives]
    n_rows = [rows[t] for t in examples.negatives]
    deadline = time.monotonic() + seconds
    t0, stopped, stale = time.perf_counter(), "epochs done", 0
    bar = tqdm(
        total=planned, initial=state.step, desc="top layers vs teacher", disable=not progress
    )
    while state.step < planned:
        order = list(range(n))  # this epoch's order: the same after a resume
        random.Random(seed + state.step // per_epoch).shuffle(order)
        start = (state.step % per_epoch) * batch_size
        picked = order[start : start + batch_size]
        if len(picked) >= 2:
            loss = trainer.step(
                [q_rows[i] for i in picked],
                [p_rows[i] for i in picked] + [n_rows[i] for i in picked],
                torch.cat([labels[picked, 0], labels[picked, 1], labels[picked, 2]]),
                temperature,
            )
            bar.set_postfix(loss=f"{loss:.4f}")
        state.step += 1
        bar.update(1)
        out_of_time = time.monotonic() > deadline
        if state.step % eval_steps == 0 or out_of_time or state.step >= planned:
            stale = 0 if trainer.evaluate(state) else stale + 1
            if out_of_time or stale >= patience:
                stopped = "time budget" if out_of_time else "early stopping"
                break
    bar.close()
    for layer, weights in zip(top.layers, state.best_state, strict=True):
        layer.load_state_dict(weights)
        layer.eval()
    (work / "top.json").write_text(json.dumps({"best": state.best}))
    return TopResult(
        state.before,
        state.best,
        state.step,
        time.perf_counter() - t0,
        stopped,
        state.history,
        state.resumed,
    )
