"""Layer-local distillation of a cut student from its uncut model.

A cut student (``MODEL:layers=0,1,3,5``) keeps some encoder layers of a pretrained
model. Each kept layer stands for a *block* of the uncut model's layers: the layers
after the previous kept one, up to and including itself (the last block runs to the
end). A block of one layer is the uncut layer itself; a longer block is replaced by
its kept layer, which is trained alone to map the block's input to the uncut model's
hidden state at the block's end.

The uncut model is the teacher's assistant (Mirzadeh et al., 2020): it runs once over
the training texts (`distill.transformer.states`), and its states at the block boundaries are the
targets. Blocks are trained in order, each on the output of the blocks already
trained (recomputed once per block), so errors do not compound unseen. A training
step runs one layer, forward and backward, on cached inputs: no other layer and no
teacher is in the graph.

The loss (`layer_local_loss`) is the squared error over real tokens divided by the
target's energy over the same tokens, so blocks whose states differ in scale weigh
alike and the value reads as a relative error.
"""

from __future__ import annotations

import dataclasses
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

from distill.transformer.schedule import Schedule, mixed_precision
from distill.transformer.states import StateStore, gather, scatter
from search.batching import token_batches

logger = logging.getLogger(__name__)

TRAIN_BATCH_TOKENS = 8192
"""Padded tokens per training batch of one layer."""


@dataclass(frozen=True)
class Block:
    """Uncut layers ``[start, end)`` replaced by the uncut model's layer `source`.

    Attributes:
        index: Position of the replacing layer in the cut model.
    """

    start: int
    end: int
    source: int
    index: int

    @property
    def trivial(self) -> bool:
        """True when the block is its own layer (nothing was dropped)."""
        return self.end - self.start == 1


def plan_blocks(kept: Sequence[int], total: int) -> list[Block]:
    """The blocks of a cut keeping layers `kept` of a `total`-layer model.

    Raises:
        ValueError: `kept` is empty, unsorted, repeats a layer or is out of range.
    """
    kept = list(kept)
    if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= total:
        raise ValueError(f"layers {kept}: give distinct ascending layers in 0..{total - 1}")
    blocks, start = [], 0
    for i, layer in enumerate(kept):
        end = total if i == len(kept) - 1 else layer + 1
        blocks.append(Block(start, end, layer, i))
        start = end
    return blocks


def layers_to_train(blocks: Sequence[Block]) -> list[Block]:
    """Blocks from the first non-trivial one on: before it, the cut model computes
    exactly what the uncut one does; after it, every layer sees drifted inputs."""
    first = next((i for i, b in enumerate(blocks) if not b.trivial), len(blocks))
    return list(blocks[first:])


def boundaries(blocks: Sequence[Block]) -> list[int]:
    """Uncut-model boundaries layer-local training needs: the input of the first block
    trained and the end of every block trained."""
    trained = layers_to_train(blocks)
    if not trained:
        return []
    return [trained[0].start, *(b.end for b in trained)]


def layer_local_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error over real tokens, relative to the target's energy there.

    Args:
        pred: float ``(batch, tokens, hidden)``.
        target: float ``(batch, tokens, hidden)``.
        mask: ``(batch, tokens)``, 1 for real tokens, 0 for padding.

    Returns:
        Scalar ``sum(mask * |pred - target|²) / sum(mask * |target|²)``.
    """
    m = mask.to(pred.device).unsqueeze(-1).to(pred.dtype)
    target = target.to(pred.device)
    return ((pred - target) ** 2 * m).sum() / ((target**2) * m).sum().clamp_min(1e-12)


def attention_mask(backbone: Any, states: torch.Tensor, mask: torch.Tensor) -> Any:
    """The mask a layer of `backbone` expects, built by transformers as the model does."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(
        config=backbone.config, inputs_embeds=states, attention_mask=mask
    )


def run_layers(
    layers: Sequence[torch.nn.Module], backbone: Any, states: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Hidden states after `layers`, applied in order to ``(batch, tokens, hidden)``,
    on the layers' device."""
    device = next(iter(layers[0].parameters())).device
    states, mask = states.to(device), mask.to(device)
    full = attention_mask(backbone, states, mask)
    for layer in layers:
        out = layer(states, full)
        states = out[0] if isinstance(out, tuple) else out
    return states


def check_supported(backbone: Any) -> None:
    """Raise ValueError unless `backbone`'s layers take ``(hidden_states, mask)``.

    BERT-style encoders (BERT, MiniLM, RoBERTa, ...) do; MPNet's layers also need a
    relative position bias the model computes outside them.
    """
    if getattr(backbone.config, "model_type", "") == "mpnet":
        raise ValueError(
            "layer-local distillation needs a BERT-style encoder; MPNet layers take a "
            "position bias computed outside them (cut a BERT-style student such as "
            "all-MiniLM-L6-v2:layers=0,1,3,5)"
        )
    if not hasattr(getattr(backbone, "encoder", None), "layer"):
        raise ValueError(f"{type(backbone).__name__}: no encoder.layer list to cut")


def _batches(lengths: np.ndarray, rows: Sequence[int], rng: random.Random) -> list[list[int]]:
    """Token-bounded batches of `rows`, near-equal lengths together, in random order."""
    noisy = [float(lengths[r]) + rng.random() * 8 for r in rows]
    order = token_batches([int(x) for x in noisy], 64, TRAIN_BATCH_TOKENS)
    batches = [[rows[i] for i in b] for b in order]
    rng.shuffle(batches)
    return batches


@dataclass
class BlockResult:
    """What training one block did.

    Attributes:
        held_loss_before, held_loss_after: `layer_local_loss` on held-out texts.
        steps, seconds, epochs: Work done; `stopped_by` says why it ended.
    """

    block: Block
    held_loss_before: float
    held_loss_after: float
    steps: int
    epochs: float
    seconds: float
    stopped_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": [self.block.start, self.block.end],
            "source_layer": self.block.source,
            "held_loss_before": round(self.held_loss_before, 5),
            "held_loss_after": round(self.held_loss_after, 5),
            "steps": self.steps,
            "epochs": round(self.epochs, 2),
            "seconds": round(self.seconds, 1),
            "stopped_by": self.stopped_by,
        }


@dataclass
class BlockData:
    """What one block trains on: `inputs` to `targets`, token rows of `store`'s texts.

    Attributes:
        inputs, targets: float16 ``(total_tokens, hidden)`` token rows.
        train_rows, held_rows: Texts of `store` to train on and to measure on.
    """

    inputs: np.ndarray
    targets: np.ndarray
    store: StateStore
    train_rows: Sequence[int]
    held_rows: Sequence[int]

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, mask) of texts `rows`, padded."""
        store = self.store
        x, mask = gather(self.inputs, store.offsets, store.lengths, rows)
        t, _ = gather(self.targets, store.offsets, store.lengths, rows)
        return x, t, mask

    def held_loss(self, layer: torch.nn.Module, backbone: Any) -> float:
        """`layer_local_loss` of `layer` over the held-out texts, pooled over all their
        tokens."""
        rows = self.held_rows
        err = energy = 0.0
        layer.eval()
        with torch.inference_mode():
            for batch in token_batches([int(self.store.lengths[r]) for r in rows], 64, 8192):
                x, t, mask = self.batch([rows[i] for i in batch])
                y = run_layers([layer], backbone, x, mask).cpu()
                m = mask.unsqueeze(-1).float()
                err += float((((y - t) ** 2) * m).sum())
                energy += float(((t**2) * m).sum())
        return err / max(energy, 1e-12)


def _state(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


@dataclass
class _BlockTrainer:
    """One layer, its optimizer and schedule, and the steps taken."""

    layer: torch.nn.Module
    backbone: Any
    data: BlockData
    optimizer: torch.optim.Optimizer
    scheduler: Any
    planned: int
    bf16: bool = False
    step: int = 0

    def epoch(self, batches: list[list[int]], deadline: float, bar: Any) -> bool:
        """Train on `batches`; False when the time budget ran out."""
        self.layer.train()
        params = [p for p in self.layer.parameters() if p.requires_grad]
        for rows in batches:
            x, t, mask = self.data.batch(rows)
            with mixed_precision(self.bf16):
                y = run_layers([self.layer], self.backbone, x, mask)
            loss = layer_local_loss(y.float(), t, mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.step >= self.planned:
                return True
            if time.monotonic() > deadline:
                return False
        return True


def train_block(
    layer: torch.nn.Module,
    backbone: Any,
    data: BlockData,
    block: Block,
    schedule: Schedule,
    *,
    progress: bool = True,
) -> BlockResult:
    """Train `layer` alone to map `data`'s inputs to its targets, in place.

    AdamW under `schedule` (warm-up, cosine decay to zero at the end of its epochs over
    the training texts; it stops early when its seconds are spent). The weights with
    the lowest held-out loss (measured after each epoch and at the end) are kept.
    """
    rng = random.Random(schedule.seed)
    lengths = data.store.lengths
    per_epoch = len(_batches(lengths, data.train_rows, random.Random(schedule.seed)))
    planned = schedule.planned(per_epoch)
    params = [p for p in layer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.01)
    scheduler = schedule.scheduler(optimizer, planned)
    trainer = _BlockTrainer(layer, backbone, data, optimizer, scheduler, planned, schedule.bf16)
    before = data.held_loss(layer, backbone)
    best, best_state = before, _state(layer)
    deadline = schedule.deadline()
    t0, stopped = time.perf_counter(), "epochs done"
    bar = tqdm(total=planned, desc=f"layers {block.start}-{block.end - 1}", disable=not progress)
    while trainer.step < planned and stopped == "epochs done":
        if not trainer.epoch(_batches(lengths, data.train_rows, rng), deadline, bar):
            stopped = "time budget"
        current = data.held_loss(layer, backbone)
        if current < best:
            best, best_state = current, _state(layer)
    bar.close()
    layer.load_state_dict(best_state)
    layer.eval()
    seconds = time.perf_counter() - t0
    return BlockResult(
        block, before, best, trainer.step, trainer.step / per_epoch, seconds, stopped
    )


def propagate(
    layer: torch.nn.Module,
    backbone: Any,
    inputs: np.ndarray,
    out: np.ndarray,
    store: StateStore,
) -> None:
    """Write `layer`'s output for every text of `store` into `out` (token rows)."""
    rows = list(range(len(store)))
    layer.eval()
    with torch.inference_mode():
        for batch in token_batches(store.lengths.tolist(), 64, 8192):
            picked = [rows[i] for i in batch]
            x, mask = gather(inputs, store.offsets, store.lengths, picked)
            scatter(
                out, store.offsets, store.lengths, picked, run_layers([layer], backbone, x, mask)
            )


def distill_layers(
    student: Any,
    blocks: Sequence[Block],
    store: StateStore,
    work: Path,
    rows: tuple[Sequence[int], Sequence[int]],
    schedule: Schedule,
    *,
    progress: bool = True,
) -> list[BlockResult]:
    """Train the cut `student`'s replacing layers block by block, in place.

    Args:
        student: The cut SentenceTransformer (its backbone's layers are the blocks').
        blocks: `plan_blocks` of the cut.
        store: Uncut states at `boundaries(blocks)` for every text.
        work: Scratch folder for the drifted inputs of later blocks (token rows, fp16).
        rows: Texts of `store` to train on, and to measure on.
        schedule: Each block's schedule; its seconds are shared evenly by the blocks
            still to train, and block ``n`` draws its order from ``seed + n``.
    """
    backbone = student[0].auto_model
    trained = layers_to_train(blocks)
    if not trained:
        return []
    work.mkdir(parents=True, exist_ok=True)
    inputs = store.arrays[trained[0].start]
    deadline = schedule.deadline()
    results = []
    for n, block in enumerate(trained):
        layer = backbone.encoder.layer[block.index]
        share = max(0.0, deadline - time.monotonic()) / (len(trained) - n)
        data = BlockData(inputs, store.arrays[block.end], store, *rows)
        own = dataclasses.replace(schedule, seconds=share, seed=schedule.seed + n)
        result = train_block(layer, backbone, data, block, own, progress=progress)
        logger.info(
            "layers %d-%d -> layer %d: held-out loss %.4f -> %.4f in %d steps",
            block.start,
            block.end - 1,
            block.source,
            result.held_loss_before,
            result.held_loss_after,
            result.steps,
        )
        results.append(result)
        if n + 1 < len(trained):
            inputs = _propagated(layer, backbone, inputs, store, work / f"in{n + 1}.npy")
    return results


def _propagated(
    layer: torch.nn.Module, backbone: Any, inputs: np.ndarray, store: StateStore, path: Path
) -> np.ndarray:
    """`layer`'s output for every text of `store`, as a float16 memory map at `path`."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=inputs.shape)
    propagate(layer, backbone, inputs, out, store)
    out.flush()
    return out
