"""Distillation settings and the student spec grammar."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from distill.compress.quantize import QualityGate
from distill.static_options import STATIC_PREFIX, StaticOptions
from search.assets import TEACHER_NAME
from search.devices import PRECISIONS

_GENERIC = "msmarco-queries.txt"
DEFAULT_STUDENT = "all-MiniLM-L6-v2"
"""The shipped model ``distill`` starts from when not told: it is trained against the
teacher and measured against its own untrained self (`distill.candidates`)."""
LOSSES = ("rank", "mse", "mse+structure")
EMIT = ("best", "trained")


def default_generic_texts() -> Path | None:
    """Generic query-side text: ``$DISTILSEARCH_TEXT/msmarco-queries.txt`` when present."""
    root = os.environ.get("DISTILSEARCH_TEXT")
    candidates = [Path(root) / _GENERIC] if root else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / _GENERIC)
    return next((p for p in candidates if p.is_file()), None)


_TEACHER_PREFIXES = {"teacher", "mpnet"}  # mpnet: the default teacher, all-mpnet-base-v2


@dataclass(frozen=True)
class StudentSpec:
    """A parsed ``--student``: a model name/folder, optionally cut to some of its layers.

    ``all-MiniLM-L6-v2`` or a folder names a pretrained sentence-transformers model;
    ``<model>:layers=0,1,3,5`` keeps those encoder layers of it; ``teacher:layers=...``
    (or ``mpnet:layers=...``) keeps layers of the teacher, e.g. ``mpnet:layers=0,4,8,11``.
    ``static`` or ``static:KEY=VALUE,...`` is a static student distilled from the teacher
    (`distill.static`; keys in `distill.static_options.StaticOptions`).

    Attributes:
        model: The model to start from; None for the teacher (and a static student).
        layers: Encoder layers to keep, ascending; None for all.
        static: The options of a static student; None for a transformer student.
    """

    model: str | None
    layers: tuple[int, ...] | None
    static: StaticOptions | None = None

    @classmethod
    def parse(cls, spec: str) -> StudentSpec:
        head, _, options = spec.partition(":")
        if head.lower() == STATIC_PREFIX:  # a folder named "static" is passed as ./static
            return cls(None, None, StaticOptions.parse(options))
        if ":layers=" in spec:
            prefix, raw = spec.split(":layers=", 1)
            try:
                layers = tuple(int(x) for x in raw.split(",") if x.strip())
            except ValueError as exc:
                raise ValueError(
                    f"--student {spec!r}: layers must be comma-separated integers, "
                    "e.g. mpnet:layers=0,4,8,11"
                ) from exc
            if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
                raise ValueError(f"--student {spec!r}: give distinct non-negative layer numbers")
            model = None if prefix.lower() in _TEACHER_PREFIXES else prefix
            return cls(model, tuple(sorted(layers)))
        return cls(spec, None)


@dataclass
class DistillConfig:
    """Everything a distill run needs; the ``distill`` command's options, each
    description its ``--help``.

    Attributes:
        data: BEIR folder or JSONL file of the corpus the student should adapt to.
        out: Folder to write the student into (replaced whole when done).
        teacher: Teacher model name or folder.
        student: all-MiniLM-L6-v2, a model folder, MODEL:layers=0,1,3,5 (some of its
            layers; trained layer by layer against the uncut model, then against the
            teacher), mpnet:layers=0,4,8,11 (of the teacher) or static[:KEY=VALUE,...]
            (see `StudentSpec`).
        max_minutes: Wall-clock budget of training in minutes (labelling is not
            counted).
        max_texts: Cap on training texts (teacher labelling is slow).
        extra_texts: Extra text files, one text a line.
        generic_texts: Generic queries file (None: none).
        epochs: Passes over the training examples of end-to-end training.
        batch_size: Training batch size (queries a step of the teacher stage).
        lr: Peak learning rate of the teacher stage and of end-to-end training.
        seed: Random seed.
        holdout: Fraction of texts held out to measure fidelity.
        eval_steps: Steps between validation passes.
        max_seq_length: Student's token window (default: the teacher's; see
            `distill.transformer.student.match_window`).
        loss: rank (teacher's rankings of mined query-document examples, KL; needs no
            shared space), mse (embedding matching against PCA-reduced teacher
            targets) or mse+structure (plus the in-batch similarity-matrix term of
            `distill.transformer.losses`).
        temperature: Softmax temperature of the rank loss.
        val_queries: Validation queries that judge the finished candidates (never seen
            by training: `distill.gate.validation_set`).
        tune_queries: Validation queries that pick checkpoints and stages during
            training (kept apart from those that judge the candidates).
        compress: Export ONNX and int8 (behind the quality gate) afterwards.
        int8_min_cosine: Least int8-to-fp32 cosine; MatMuls with outlying inputs stay
            fp32 until it is reached (lower: faster int8 where some must; the
            retrieval gate still applies).
        val_docs: Documents the validation queries are searched over (judged ones
            included).
        layerwise_epochs: Passes over the texts for each replaced block of a cut
            (`distill.transformer.layerwise`), within its share of the budget.
        layerwise_lr: Learning rate of layer-local training.
        layerwise_share: Share of --max-minutes for layer-local training of a cut (the
            filling pass of the uncut model's states included); the teacher stage gets
            the rest.
        top_layers: Top layers an uncut student trains against the teacher (the rest
            are frozen and their output cached); a cut student trains its replaced
            layers and those above them.
        end_to_end: Train the whole student, embeddings included, against the
            teacher's rankings (sentence-transformers' trainer; every step runs the
            whole model) instead of its top layers over cached states.
        device: Torch device of teacher, student and training (cuda, cpu; default:
            cuda when present).
        precision: auto (bf16 where the CPU has bf16 units and the models pass the
            check against fp32, `search.precision`), fp32 or bf16: of the teacher's
            labels, the cached states and training.
        min_speedup: Least speed of the emitted student's served form, in multiples of
            the fp32 teacher's docs/s on the same documents (`distill.candidates`).
        static_candidate: Also distil a static student and measure it among the
            candidates.
        emit: best (the candidate `distill.candidates.choose` picks) or trained (the
            trained student whatever the candidates measured; for experiments).
    """

    data: Path
    out: Path
    teacher: str = TEACHER_NAME
    student: str = DEFAULT_STUDENT
    max_minutes: float = 25.0
    max_texts: int = 8000
    extra_texts: list[Path] = field(default_factory=list)
    generic_texts: Path | None = field(default_factory=default_generic_texts)
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 2e-5
    seed: int = 42
    holdout: float = 0.05
    eval_steps: int = 50
    max_seq_length: int | None = None
    loss: str = "rank"
    temperature: float = 0.05
    val_queries: int = 300
    tune_queries: int = 200
    compress: bool = True
    int8_min_cosine: float = QualityGate.min_cosine
    val_docs: int = 1000
    layerwise_epochs: float = 3.0
    layerwise_lr: float = 1e-4
    layerwise_share: float = 0.7
    top_layers: int = 2
    end_to_end: bool = False
    device: str | None = None
    precision: str = "auto"
    min_speedup: float = 15.0
    static_candidate: bool = True
    emit: str = "best"

    def validate(self) -> StudentSpec:
        """Check values; return the parsed student spec.

        Raises:
            ValueError: a value is out of range or a path is missing; the message says
                which and what is allowed.
        """
        if not self.data.exists():
            raise ValueError(
                f"--data {self.data}: no such file or folder; pass a BEIR folder or a JSONL file"
            )
        if self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if self.max_texts < 20:
            raise ValueError(f"--max-texts must be at least 20, got {self.max_texts}")
        if not 0 < self.holdout < 0.5:
            raise ValueError(f"holdout must be in (0, 0.5), got {self.holdout}")
        if self.batch_size < 2 or self.lr <= 0 or self.epochs <= 0:
            raise ValueError("--batch-size must be >= 2, --lr and --epochs > 0")
        if not 0 < self.temperature <= 10:
            raise ValueError(f"--temperature must be in (0, 10], got {self.temperature}")
        if not 0 < self.int8_min_cosine <= 1:
            raise ValueError(
                f"--int8-min-cosine must be in (0, 1], got {self.int8_min_cosine} "
                "(0.996 keeps int8 within ~0.2 % of fp32 nDCG@10; 0.99 is faster)"
            )
        if self.layerwise_epochs <= 0 or self.layerwise_lr <= 0:
            raise ValueError("--layerwise-epochs and --layerwise-lr must be > 0")
        if not 0 <= self.layerwise_share < 1:
            raise ValueError(f"--layerwise-share must be in [0, 1), got {self.layerwise_share}")
        if self.emit not in EMIT:
            raise ValueError(f"--emit {self.emit!r}: choose one of {', '.join(EMIT)}")
        if self.min_speedup <= 0:
            raise ValueError(f"--min-speedup must be > 0, got {self.min_speedup}")
        if self.val_queries < 5 or self.tune_queries < 0:
            raise ValueError("val_queries must be >= 5 and tune_queries >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}"
            )
        if self.top_layers < 1:
            raise ValueError(f"--top-layers must be >= 1, got {self.top_layers}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        for path in self.extra_texts:
            if not path.is_file():
                raise ValueError(f"--texts {path}: no such file")
        return StudentSpec.parse(self.student)
