"""`distill`: the job both kinds of student follow.

1. **Set up** (`distill.setup.set_up`): check the settings, load the teacher and
   choose the precision it labels in, collect the training texts and label them
   (`distill.texts.label`, cached), and carve the two validation sets
   (`distill.gate.validation_set`).
2. **Train**, 3. **gate** and 4. **report**: the student's own job —
   `distill.transformer.job.TransformerJob` (which compresses and measures every
   candidate in its served form before the gate chooses, `distill.candidates`) or
   `distill.static.job.StaticJob`.
5. **Publish** (`publish`): the model, its report and model card, swapped in whole.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol, TypeVar

from distill.config import DistillConfig
from distill.report import DistillReport, ReportBase, folder_size_mb
from distill.setup import Setup, set_up
from distill.static.job import StaticJob, static_candidate
from distill.transformer.job import TransformerJob
from search.assets import model_hash
from search.atomic import atomic_write_text, staged_folder

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound=ReportBase)


class Job(Protocol[T, R]):
    """Steps 2–4 of a distillation, and how its model is saved and described."""

    def train(self, setup: Setup) -> T: ...

    def gate(self, setup: Setup, trained: T) -> None: ...

    def report(self, setup: Setup, trained: T) -> R: ...

    def save(self, trained: T, folder: Path) -> None: ...

    def card(self, report: R) -> str: ...


def publish(job: Job[T, R], trained: T, report: R, out: Path) -> None:
    """Save the model with its report and model card into `out`, swapped in whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(out) as tmp:
        job.save(trained, tmp)
        report.student_hash = model_hash(tmp)
        report.size_mb.student = round(folder_size_mb(tmp), 1)
        report.write(tmp)
        atomic_write_text(tmp / "README.md", job.card(report))


def run_job(job: Job[T, R], setup: Setup, t_start: float) -> R:
    """Train, gate, report and publish; each step says when it starts (logger INFO)."""
    logger.info("[2/4] training (budget %g min)", setup.config.max_minutes)
    trained = job.train(setup)
    logger.info("[3/4] choosing what to emit on the validation queries")
    job.gate(setup, trained)
    report = job.report(setup, trained)
    report.wall_seconds = round(time.perf_counter() - t_start, 1)
    logger.info("[4/4] publishing to %s", setup.config.out)
    publish(job, trained, report, setup.config.out)
    return report


def distill(config: DistillConfig, *, progress: bool = True) -> DistillReport:
    """Run a whole distillation; return its report (also written to ``config.out``).

    Raises:
        ValueError, DistilsearchError: bad settings or inputs (before teacher work
            where they can be seen then).
    """
    t_start = time.perf_counter()
    setup = set_up(config, progress=progress)
    if setup.spec.static is not None:
        return run_job(StaticJob(), setup, t_start)
    extra = [("static", static_candidate)] if config.static_candidate else []
    return run_job(TransformerJob(extra), setup, t_start)
