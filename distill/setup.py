"""What every distillation stands on: the teacher, the labelled training texts and the
validation set (step 1 of `distill.run`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from distill.config import DistillConfig, StudentSpec
from distill.gate import ValidationSet, validation_set
from distill.texts import Labelled, label
from search.assets import embeddings_dir, resolve_model
from search.devices import resolve_device
from search.embed_cache import EmbeddingCache
from search.encoder import TorchEncoder


@dataclass
class Setup:
    """What every distillation stands on.

    Attributes:
        config: The run's settings; spec: its parsed ``--student``.
        device: Torch device of the teacher and of training.
        teacher: The teacher, with `cache` its embedding cache.
        labelled: The training texts with the teacher's labels.
        val: The validation set the gate scores on.
        seconds: Wall time of the set-up (teacher load, labelling, validation set).
        progress: Show progress bars.
    """

    config: DistillConfig
    spec: StudentSpec
    device: str
    teacher: TorchEncoder
    cache: EmbeddingCache
    labelled: Labelled
    val: ValidationSet
    seconds: float
    progress: bool = True


def set_up(config: DistillConfig, *, progress: bool = True) -> Setup:
    """Check `config`, load the teacher, label the training texts and build the
    validation set.

    Raises:
        ValueError, DistilsearchError: a setting is bad or a model cannot be found;
            checked before any teacher work.
    """
    t0 = time.perf_counter()
    spec = config.validate()
    device = resolve_device(config.device)
    if spec.model is not None:  # a misspelt student fails now, not after labelling
        resolve_model(spec.model)
    teacher = TorchEncoder(resolve_model(config.teacher), name=config.teacher, device=device)
    cache = EmbeddingCache(embeddings_dir(), teacher.model_hash, teacher.dim)
    labelled = label(config, teacher, cache, progress=progress)
    val = validation_set(config, labelled, teacher, cache)
    return Setup(
        config, spec, device, teacher, cache, labelled, val, time.perf_counter() - t0, progress
    )
