"""VQA score: the official VQA accuracy, as an offline ``evaluate`` module.

Load it with ``evaluate.load("/path/to/hf_vl/metrics/vqa_score")`` (or ``hf_vl.metrics.load("vqa_score")``);
no Hub access is needed. The computation lives in :func:`hf_vl.metrics.functional.vqa_accuracy`.
"""

import datasets
import evaluate

from hf_vl.metrics.functional import vqa_accuracy

_CITATION = """\
@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv
          and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={ICCV},
  year={2015}
}
"""

_DESCRIPTION = """\
VQA accuracy (Antol et al., 2015), computed exactly as the official evaluation script vqaEval.py:
a predicted answer is credited min(#annotators who gave it / 3, 1), averaged over the 10
leave-one-out subsets of 9 of the 10 annotators, after the official answer normalisation
(punctuation, number words, articles, contractions). With 3 or fewer reference answers (easy-VQA,
GQA-style single answers) full credit needs every annotator's agreement: min(#matches / n, 1).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str` or `int`): predicted answers, or label ids together with `id2label`.
    references (`list` of `list` of `str`): per question, the annotator answers (10 for VQA v2).
    id2label (`dict` or `list`, *optional*): maps label ids to answer strings.
    answer_types (`list` of `str`, *optional*): per-question answer type for a per-type breakdown.
    normalization (`str`, defaults to `"official"`): `"official"` (normalise only when annotators
        disagree, as the official script), `"always"` or `"none"`.
Returns:
    vqa_score (`float`): mean VQA accuracy in [0, 1].
    vqa_score_per_answer_type (`dict`): only with `answer_types`.
Examples:
    >>> vqa_score = evaluate.load("hf_vl/metrics/vqa_score")
    >>> vqa_score.compute(predictions=["yes", "two"], references=[["yes"] * 10, ["2"] * 2 + ["3"] * 8])
    {'vqa_score': 0.8}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaScore(evaluate.Metric):
    """Official VQA accuracy; see the module docstring."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features(
                    {"predictions": datasets.Value("int64"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
            ],
            reference_urls=["https://visualqa.org/evaluation.html", "https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references, id2label=None, answer_types=None, normalization="official"):
        return vqa_accuracy(
            predictions, references, id2label=id2label, answer_types=answer_types, normalization=normalization
        )
