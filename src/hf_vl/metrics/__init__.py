"""Offline ``evaluate`` metrics of hf_vl: VQA score, accuracy and image-text retrieval recall@K.

``evaluate.load("accuracy")`` fetches its script from the Hub; these modules ship inside the package.
Each metric is a folder holding a script of the same name, the layout ``evaluate.load`` accepts for a
local path, so all of these work without network access (``HF_HUB_OFFLINE=1``)::

    import evaluate, hf_vl.metrics
    vqa_score = hf_vl.metrics.load("vqa_score")                    # evaluate module
    vqa_score = evaluate.load(hf_vl.metrics.metric_path("vqa_score"))  # the same, by path
    from hf_vl.metrics import VqaScore; VqaScore().compute(...)   # the class directly

Plain functions for ``Trainer(compute_metrics=...)`` live in :mod:`hf_vl.metrics.functional`:
:func:`compute_vqa_metrics` (multi-label VQA logits vs soft targets) and
:func:`compute_retrieval_metrics` / :func:`retrieval_recall_at_k` (similarity matrix to recall@K).
"""

from __future__ import annotations

import os
from typing import Any

from .accuracy.accuracy import Accuracy
from .functional import (
    accuracy_score,
    caption_level_retrieval,
    caption_metrics,
    cider_d,
    corpus_bleu,
    compute_retrieval_metrics,
    compute_vqa_metrics,
    retrieval_recall_at_k,
    vqa_accuracy,
    vqa_question_score,
)
from .retrieval_recall.retrieval_recall import RetrievalRecall
from .vqa_score.vqa_score import VqaScore

__all__ = [
    "AVAILABLE_METRICS",
    "Accuracy",
    "RetrievalRecall",
    "VqaScore",
    "accuracy_score",
    "caption_level_retrieval",
    "caption_metrics",
    "cider_d",
    "corpus_bleu",
    "compute_retrieval_metrics",
    "compute_vqa_metrics",
    "load",
    "metric_path",
    "retrieval_recall_at_k",
    "vqa_accuracy",
    "vqa_question_score",
]

#: Names of the metric modules shipped with hf_vl.
AVAILABLE_METRICS: tuple[str, ...] = ("accuracy", "retrieval_recall", "vqa_score")

_METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def metric_path(name: str) -> str:
    """Absolute path of the folder of metric ``name``, to pass to ``evaluate.load``.

    Example:
        >>> metric_path("vqa_score").endswith(os.path.join("hf_vl", "metrics", "vqa_score"))
        True
    """
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"`name` must be one of {AVAILABLE_METRICS}, got {name!r}.")
    return os.path.join(_METRICS_DIR, name)


def load(name: str, **kwargs: Any):
    """Load metric ``name`` as an ``evaluate.EvaluationModule`` from its local script (no network).

    ``kwargs`` go to ``evaluate.load`` (``experiment_id``, ``keep_in_memory``, ``cache_dir``, ...).

    Example:
        >>> load("accuracy").compute(predictions=[1, 0], references=[1, 1])
        {'accuracy': 0.5}
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
