"""Image-text retrieval recall@K, as an offline ``evaluate`` module.

Load it with ``evaluate.load("/path/to/hf_vl/metrics/retrieval_recall")`` or
``hf_vl.metrics.load("retrieval_recall")``. ``evaluate`` streams one example at a time, so an example
is a *text*: its prediction is the row of its scores against every image (a row of the
``(num_texts, num_images)`` matrix, i.e. a column of the ``(num_images, num_texts)`` similarity),
its reference the index of its image. The computation lives in
:func:`hf_vl.metrics.functional.retrieval_recall_at_k`, which takes the full matrix directly.
"""

import datasets
import evaluate
import numpy as np

from hf_vl.metrics.functional import retrieval_recall_at_k

_DESCRIPTION = """\
Recall@K for image-to-text (i2t) and text-to-image (t2i) retrieval, the Flickr30K / COCO protocol
(several captions per image): i2t succeeds at K when any caption of the image ranks in the top K
texts, t2i when the caption's image ranks in the top K images. Ties count against the query.
r_mean is the mean of the six recalls (RSUM / 6), rsum their sum.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per text, its score against each image
        (shape (num_texts, num_images), the transpose of the image-text similarity matrix).
    references (`list` of `int`): per text, the index of its image.
    ks (`tuple` of `int`, defaults to `(1, 5, 10)`): the K values.
Returns:
    i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10, r_mean, rsum (`float`): recalls in [0, 1].
Examples:
    >>> recall = evaluate.load("hf_vl/metrics/retrieval_recall")
    >>> recall.compute(predictions=[[0.9, 0.2], [0.1, 0.7], [0.8, 0.3]], references=[0, 1, 0], ks=(1,))
    {'i2t_r1': 1.0, 't2i_r1': 1.0, 'r_mean': 1.0, 'rsum': 2.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    """Image-text retrieval recall@K; see the module docstring."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        text_scores = np.asarray(predictions, dtype=np.float64)  # (num_texts, num_images)
        if text_scores.ndim != 2:
            raise ValueError(
                "`predictions` must give every text a score for each image (the same number of images per text)."
            )
        return retrieval_recall_at_k(text_scores.T, np.asarray(references, dtype=np.int64), ks=ks)
