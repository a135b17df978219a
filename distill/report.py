"""The distillation report: one typed schema for both jobs, written once as JSON.

A student folder holds ``distill_report.json``: what made the student (teacher,
texts, stages), how it was judged (the validation gate), how fast it is, and, for a
transformer student, what compression did. `TransformerReport` and `StaticReport`
share `ReportBase`; ``kind`` tells them apart (reports of transformer students written
before ``kind`` existed read as transformer reports). Model cards
(`distill.transformer.card`, `distill.static.card`) and `bench/` read it back with
`read_report`.

Optional fields that are None are left out of the JSON, so a report holds only what
its run measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    model_serializer,
)

from search.atomic import atomic_write_text

REPORT = "distill_report.json"
"""The report's file name in a student folder."""


def folder_size_mb(folder: Path) -> float:
    """Size of a model folder's weights and config on disk (exports excluded), MiB."""
    total = sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and "onnx" not in p.relative_to(folder).parts
    )
    return total / 2**20


class Record(BaseModel):
    """A part of the report. Fields that are None are left out of the JSON unless
    named in `keep_null` (a value the run looked for and did not have)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    keep_null: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_none(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in self.keep_null}


class TextCounts(Record):
    """The training texts: counts by source, total, held out, labelled by this run."""

    by_source: dict[str, int]
    total: int
    heldout: int
    teacher_labelled_now: int


class Gate(Record):
    """The retrieval gate: validation nDCG@10 before and after training, which
    weights were emitted and why.

    Attributes:
        teacher: The teacher's score on the same set (None when not measured).
        candidates: Score of each candidate model (static students).
        gain, gain_ci95, gain_p: The emitted weights' gain over the untrained ones,
            its 95 % bootstrap interval and paired permutation p-value.
    """

    keep_null: ClassVar[frozenset[str]] = frozenset({"teacher"})
    metric: str = "ndcg@10"
    source: str
    queries: int
    docs: int
    teacher: float | None
    before: float
    after: float | None = None
    candidates: dict[str, float] | None = None
    emitted: str | None = None
    why: str | None = None
    gain: float | None = None
    gain_ci95: tuple[float, float] | None = None
    gain_p: float | None = None


class Stage(Record):
    """One training stage: validation nDCG@10 before and after, whether it was kept,
    its seconds; the stage's own facts (steps, losses, history) ride along as extra
    JSON fields."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)  # type: ignore[assignment]

    name: str
    seconds: float
    before: float | None = None
    after: float | None = None
    kept: bool | None = None


class Sizes(Record):
    """MiB on disk of the teacher's and the student's folders (exports excluded)."""

    teacher: float | None = None
    student: float | None = None


class ReportBase(Record):
    """What every distillation report holds."""

    kind: str
    out: str
    teacher: str
    teacher_hash: str
    student: str
    data: str
    device: str
    texts: TextCounts
    stages: list[Stage]
    train_seconds: float
    gate: Gate
    size_mb: Sizes
    wall_seconds: float | None = None
    student_hash: str | None = None

    def write(self, folder: Path) -> None:
        """Write the report as ``folder/distill_report.json`` (atomically)."""
        atomic_write_text(folder / REPORT, self.model_dump_json(by_alias=True, indent=2))


class Fidelity(Record):
    """Cosine (and MSE) of the student's embeddings to their targets on held-out texts."""

    cosine: float
    mse: float | None = None


class TransformerFidelity(Record):
    """Held-out fidelity before and after training; `cosine` is the final one."""

    before: Fidelity
    after: Fidelity
    cosine: float


class Params(Record):
    teacher: int
    student: int


class ServedSpeed(Record):
    """Speed of the artifact ``auto`` serves against the teacher on the same texts."""

    backend: str
    ratio: float
    docs_per_s: float
    teacher_docs_per_s: float


class PairedGain(Record):
    """A paired comparison of per-query nDCG@10: mean difference, its 95 % bootstrap
    interval and the permutation p-value (`search.significance`)."""

    gain: float
    ci95: tuple[float, float]
    p: float


class CandidateRow(Record):
    """One candidate of `distill.candidates`, measured in its served form.

    Attributes:
        ndcg10: nDCG@10 on the ``select`` validation queries; tune_ndcg10 on the
            ``tune`` ones, when measured.
        x_teacher: Its docs/s over the fp32 teacher's on the same documents;
            x_fastest_teacher over the teacher's fastest form measured here.
        vs_teacher, vs_baseline: Paired tests against the teacher and against the
            best untrained candidate.
        verdict: ``emitted``, or why it was not.
    """

    name: str
    trained: bool
    backend: str
    window: int | None = None
    ndcg10: float
    tune_ndcg10: float | None = None
    docs_per_s: float
    x_teacher: float
    x_fastest_teacher: float | None = None
    meets_speed: bool
    size_mb: float
    vs_teacher: PairedGain
    vs_baseline: PairedGain | None = None
    verdict: str = ""
    facts: dict[str, JsonValue] = Field(default_factory=dict)


class Choice(Record):
    """Which candidate was emitted and why, with the whole table."""

    emitted: str
    reason: str
    candidates: list[CandidateRow]


class TeacherSpeed(Record):
    """The teacher's documents a second on the run's speed sample: in fp32 (what
    ``--min-speedup`` counts in) and in its fastest form measured here."""

    fp32_docs_per_s: float
    fastest_form: str
    fastest_docs_per_s: float


class TransformerReport(ReportBase):
    """The report of a transformer student.

    Attributes:
        speed_ratio: Teacher's seconds a text over the torch student's, on the same
            held-out texts; `teacher_docs_per_s` is the teacher's rate there.
        compression: What `distill.compress.compress` did (export and int8 checks).
        served_speed_ratio: The same ratio for the artifact ``auto`` serves.
    """

    kind: Literal["transformer"] = "transformer"
    target_map_explained: float
    fidelity: TransformerFidelity
    steps: int
    train_examples: int
    params: Params
    speed_ratio: float
    teacher_docs_per_s: float | None = None
    config: dict[str, JsonValue]
    compression: dict[str, JsonValue] | None = None
    served_speed_ratio: ServedSpeed | None = None
    choice: Choice | None = None
    teacher_speed: TeacherSpeed | None = None
    precision: dict[str, JsonValue] | None = None


class StaticFidelity(Record):
    """Held-out cosine to the targets of the plain and the adapted static models."""

    target_map_explained: float | None = None
    heldout_cosine_plain: float | None = None
    heldout_cosine_adapted: float | None = None


class FusionChoice(Record):
    """The convex fusion weight of dense + BM25 with the best validation nDCG@10."""

    method: str
    weight: float
    ndcg10: float = Field(alias="ndcg@10")
    dense: float
    bm25: float
    grid: dict[str, float]
    chosen_on: str


class StaticSpeed(Record):
    """Texts/s and ms a query of a static student, against the teacher's texts/s as it
    labelled them (`teacher_form`: ``torch bf16`` or ``torch fp32``)."""

    docs_per_s: float
    query_ms: float
    teacher_docs_per_s: float | None = None
    teacher_form: str | None = None
    ratio: float | None = None


class StaticReport(ReportBase):
    """The report of a static student (`distill.static`)."""

    kind: Literal["static"] = "static"
    static: dict[str, JsonValue]
    plain_cached: bool
    fidelity: StaticFidelity
    hybrid: FusionChoice
    speed: StaticSpeed
    dim: int
    vocabulary: int
    timings: dict[str, float]


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "transformer"))
    return str(getattr(value, "kind", "transformer"))


DistillReport = Annotated[
    Annotated[TransformerReport, Tag("transformer")] | Annotated[StaticReport, Tag("static")],
    Discriminator(_kind),
]
"""A distillation report of either kind."""

_ADAPTER: TypeAdapter[DistillReport] = TypeAdapter(DistillReport)


def read_report(folder: Path) -> DistillReport:
    """The report of a student folder.

    Raises:
        FileNotFoundError: the folder has no ``distill_report.json``.
        pydantic.ValidationError: the file does not hold a report.
    """
    return _ADAPTER.validate_json((folder / REPORT).read_text())
