"""Accuracy, as an offline ``evaluate`` module (``evaluate.load("accuracy")`` needs the Hub; this does not).

Load it with ``evaluate.load("/path/to/hf_vl/metrics/accuracy")`` or ``hf_vl.metrics.load("accuracy")``.
The computation lives in :func:`hf_vl.metrics.functional.accuracy_score`.
"""

import datasets
import evaluate

from hf_vl.metrics.functional import accuracy_score

_DESCRIPTION = """\
Accuracy: the share of predictions equal to their reference, (num correct) / (num examples), optionally
weighted per example. Works on label ids or on strings.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int` or `str`): predicted labels.
    references (`list` of `int` or `str`): ground-truth labels.
    normalize (`bool`, defaults to `True`): return the share; `False` returns the (weighted) count.
    sample_weight (`list` of `float`, *optional*): per-example weights.
Returns:
    accuracy (`float`): in [0, 1] when `normalize=True`.
Examples:
    >>> accuracy = evaluate.load("hf_vl/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'accuracy': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Classification accuracy; see the module docstring."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return accuracy_score(predictions, references, normalize=normalize, sample_weight=sample_weight)
