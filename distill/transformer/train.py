"""Training a student by embedding matching with sentence-transformers' trainer."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from sentence_transformers.sentence_transformer.losses import MSELoss
from transformers import EarlyStoppingCallback, TrainerCallback

from distill.targets import fidelity
from distill.transformer.losses import RankDistillLoss, SimilarityStructureLoss
from distill.transformer.mining import RankExamples
from distill.transformer.schedule import Schedule
from search.encoder import TorchEncoder

logger = logging.getLogger(__name__)


class _StudentEvaluator(SentenceEvaluator):
    """A trainer evaluator that scores the model in training through `TorchEncoder`.

    Subclasses pass their primary metric (greater is better) and implement `measure`.
    """

    def __init__(self, primary_metric: str) -> None:
        super().__init__()  # sets primary_metric to None, greater_is_better to True
        self.primary_metric = primary_metric

    def __call__(
        self,
        model: Any,
        output_path: str | None = None,
        epoch: int = -1,
        steps: int = -1,
    ) -> dict[str, float]:
        return self.measure(TorchEncoder.from_model(model, "student"))

    def measure(self, encoder: TorchEncoder) -> dict[str, float]:
        raise NotImplementedError


class FidelityEvaluator(_StudentEvaluator):
    """Mean cosine (primary) and MSE of the student's embeddings to fixed targets."""

    def __init__(self, texts: list[str], targets: np.ndarray, batch_size: int = 32) -> None:
        super().__init__("fidelity_cosine")
        self.texts, self.targets, self.batch_size = texts, targets, batch_size

    def measure(self, encoder: TorchEncoder) -> dict[str, float]:
        fid = fidelity(encoder.encode(self.texts, batch_size=self.batch_size), self.targets)
        return {"fidelity_cosine": fid["cosine"], "fidelity_mse": fid["mse"]}


class RetrievalEvaluator(_StudentEvaluator):
    """nDCG@10 of the student on a validation set (train queries, never test ones)."""

    def __init__(self, val: Any) -> None:
        super().__init__("val_ndcg@10")
        self.val = val

    def measure(self, encoder: TorchEncoder) -> dict[str, float]:
        from distill.gate import score

        return {"val_ndcg@10": score(encoder, self.val)}


class TimeBudget(TrainerCallback):
    """Stop training (after saving a checkpoint) once `seconds` of wall time are spent."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.hit = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if time.monotonic() > self.deadline:
            self.hit = True
            control.should_training_stop = True
            control.should_save = True
            control.should_evaluate = True
        return control


def _last_checkpoint(folder: Path) -> str | None:
    ckpts = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def training_objective(
    student: SentenceTransformer,
    loss: str,
    *,
    texts: list[str],
    targets: np.ndarray,
    teacher: np.ndarray,
    rank: RankExamples | None = None,
    temperature: float = 0.05,
) -> tuple[Any, Any]:
    """The training dataset and loss module of a loss name (see `distill.config.LOSSES`).

    ``mse`` matches `targets`; ``mse+structure`` also the in-batch similarity matrix of
    the `teacher` embeddings; ``rank`` distils the teacher's in-batch rankings of the
    mined `rank` examples.
    """
    from datasets import Dataset

    if loss == "rank":
        if rank is None or len(rank) < 2:
            raise ValueError("the rank loss needs at least 2 mined query-document examples")
        data = {
            "query": rank.queries,
            "positive": rank.positives,
            "negative": rank.negatives,
            "label": rank.labels.tolist(),
        }
        return Dataset.from_dict(data), RankDistillLoss(student, temperature)
    if loss == "mse+structure":
        labels = np.concatenate([targets, teacher], axis=1).astype(np.float32)
        module: Any = SimilarityStructureLoss(student, student_dim=targets.shape[1])
    else:
        labels, module = targets.astype(np.float32), MSELoss(student)
    return Dataset.from_dict({"text": texts, "label": labels.tolist()}), module


def _arguments(
    work: Path, schedule: Schedule, examples: int, metric: str
) -> SentenceTransformerTrainingArguments:
    """The trainer's arguments for `schedule`: checkpoints and evaluations every
    ``eval_steps`` (at most once an epoch), the best checkpoint by `metric` kept."""
    steps_per_epoch = max(1, examples // schedule.batch_size)
    eval_steps = max(1, min(schedule.eval_steps, steps_per_epoch))
    return SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=schedule.epochs,
        per_device_train_batch_size=schedule.batch_size,
        learning_rate=schedule.lr,
        lr_scheduler_type="cosine",
        warmup_steps=schedule.warmup_steps(schedule.planned(steps_per_epoch)),
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        logging_steps=eval_steps,
        report_to="none",
        use_cpu=True,
        bf16=schedule.bf16,
        seed=schedule.seed,
        dataloader_drop_last=True,
        disable_tqdm=False,
    )


def train_student(
    student: SentenceTransformer,
    train: Any,
    loss: Any,
    evaluator: SentenceEvaluator,
    work: Path,
    schedule: Schedule,
) -> dict[str, Any]:
    """Train `student` on the dataset `train` with the loss module `loss`.

    Checkpoints go to ``work/``; a run interrupted at any point resumes from the last
    one. Training follows `schedule` (its warm-up, then a cosine decay) and stops early
    when the evaluator's primary metric stops improving (3 evaluations) or when the
    schedule's seconds are spent; the best checkpoint is loaded at the end.

    Returns:
        Facts of the run: steps, seconds, whether it resumed, why it stopped, the
        evaluator's primary metric of the checkpoint kept (``best_score``) and the mean
        training loss of each logging interval (``train_loss``).
    """
    args = _arguments(work, schedule, len(train), f"eval_{evaluator.primary_metric}")
    budget = TimeBudget(schedule.seconds)
    trainer = SentenceTransformerTrainer(
        model=student,
        args=args,
        train_dataset=train,
        loss=loss,
        evaluator=evaluator,
        callbacks=[budget, EarlyStoppingCallback(early_stopping_patience=3)],
    )
    resume = _last_checkpoint(work)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    stopped = (
        "time budget"
        if budget.hit
        else ("early stopping" if state.global_step < state.max_steps else "epochs done")
    )
    return {
        "steps": int(state.global_step),
        "max_steps": int(state.max_steps),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "resumed_from": resume,
        "stopped_by": stopped,
        "best_checkpoint": state.best_model_checkpoint,
        "best_score": state.best_metric,
        "train_loss": [round(float(h["loss"]), 5) for h in state.log_history if "loss" in h],
    }
