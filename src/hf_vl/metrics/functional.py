"""Plain-function metrics: VQA accuracy, classification accuracy, image-text retrieval recall@K, caption metrics.

These are the implementations behind the ``evaluate`` modules of :mod:`hf_vl.metrics` and can be used
directly, e.g. as a ``Trainer`` ``compute_metrics`` (:func:`compute_vqa_metrics`,
:func:`compute_retrieval_metrics`). They accept numpy arrays, torch tensors or lists.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_vl.data.vqa import normalize_vqa_answer, process_digit_article, process_punctuation

__all__ = [
    "REFERENCE_NORMALIZATIONS",
    "accuracy_score",
    "caption_level_retrieval",
    "caption_metrics",
    "cider_d",
    "corpus_bleu",
    "compute_retrieval_metrics",
    "compute_vqa_metrics",
    "retrieval_recall_at_k",
    "vqa_accuracy",
    "vqa_question_score",
]

#: How :func:`vqa_question_score` normalises answers (see its docstring).
REFERENCE_NORMALIZATIONS = ("official", "always", "none")


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` must be array-like, got {type(value).__name__}.") from error


def vqa_question_score(prediction: str, answers: Sequence[str], normalization: str = "official") -> float:
    """VQA accuracy of one predicted answer against the annotator answers of one question.

    With 10 answers this is the official metric (GT-Vision-Lab ``vqaEval.py``): for each annotator,
    ``min(#other annotators who gave the prediction / 3, 1)``, averaged over the 10 annotators
    (leave-one-out subsets of 9). With another number ``n`` of answers the same leave-one-out
    average is used for ``n > 3``; with ``n <= 3`` (e.g. easy-VQA's single answer) a prediction earns
    ``min(#matching answers / n, 1)``, so full credit needs every annotator's agreement.

    ``normalization``:

    - ``"official"``: as the official script: strip whitespace; only when the annotators disagree,
      normalise answers and prediction (:func:`hf_vl.data.vqa.normalize_vqa_answer`); compare
      case-insensitively.
    - ``"always"``: normalise both sides always (for raw, unnormalised references).
    - ``"none"``: exact string comparison.

    Example:
        >>> vqa_question_score("2", ["2"] * 3 + ["3"] * 7)
        0.9
        >>> vqa_question_score("Two", ["two", "2", "3"] + ["4"] * 7)
        0.6
        >>> vqa_question_score("yes", ["yes"])
        1.0
    """
    if not isinstance(prediction, str):
        raise TypeError(f"`prediction` must be a str, got {type(prediction).__name__}.")
    if isinstance(answers, str) or not isinstance(answers, Sequence) and not isinstance(answers, np.ndarray):
        raise TypeError(f"`answers` must be a list of answer strings, got {type(answers).__name__}.")
    answers = [str(answer) for answer in answers]
    if not answers:
        raise ValueError("`answers` is empty; each question needs at least one reference answer.")
    if normalization not in REFERENCE_NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {REFERENCE_NORMALIZATIONS}, got {normalization!r}.")

    if normalization == "none":
        matches = [answer == prediction for answer in answers]
    else:
        clean = [answer.replace("\n", " ").replace("\t", " ").strip() for answer in answers]
        candidate = prediction.replace("\n", " ").replace("\t", " ").strip()
        if normalization == "always" or len(set(clean)) > 1:
            clean = [process_digit_article(process_punctuation(answer)) for answer in clean]
            candidate = process_digit_article(process_punctuation(candidate))
        matches = [answer.lower() == candidate.lower() for answer in clean]

    num_answers, num_matches = len(matches), sum(matches)
    if num_answers <= 3:
        return min(num_matches / num_answers, 1.0)
    # Leave-one-out: an annotator who gave the prediction leaves num_matches - 1 matches behind.
    total = sum(min((num_matches - matched) / 3.0, 1.0) for matched in matches)
    return total / num_answers


def _predictions_to_strings(predictions: Sequence[Any], id2label: Any) -> list[str]:
    if id2label is None:
        bad = [p for p in predictions if not isinstance(p, str)]
        if bad:
            raise ValueError(
                f"`predictions` holds non-string values ({bad[0]!r}); pass `id2label` to map label ids to answers."
            )
        return list(predictions)
    if isinstance(id2label, Mapping):
        lookup = {int(key): value for key, value in id2label.items()}
    elif isinstance(id2label, Sequence) and not isinstance(id2label, str):
        lookup = dict(enumerate(id2label))
    else:
        raise TypeError(
            f"`id2label` must be a dict {{id: answer}} or a list of answers, got {type(id2label).__name__}."
        )
    strings = []
    for prediction in predictions:
        if isinstance(prediction, str):
            strings.append(prediction)
            continue
        key = int(prediction)
        if key not in lookup:
            raise ValueError(f"`predictions` holds the id {key}, which `id2label` ({len(lookup)} labels) lacks.")
        strings.append(lookup[key])
    return strings


def vqa_accuracy(
    predictions: Sequence[str] | Sequence[int],
    references: Sequence[Sequence[str]],
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    answer_types: Sequence[str] | None = None,
    normalization: str = "official",
) -> dict[str, Any]:
    """Mean VQA accuracy (:func:`vqa_question_score`) over questions.

    Args:
        predictions: predicted answer strings, or label ids together with ``id2label``.
        references: per question, the list of annotator answers (10 for VQA v2).
        id2label: maps label ids to answer strings (a dict or the vocabulary list).
        answer_types: optional per-question answer type (``"yes/no"``, ``"number"``, ``"other"``)
            to also report the mean per type.
        normalization: see :func:`vqa_question_score`.

    Returns:
        ``{"vqa_score": float in [0, 1]}``, plus ``"vqa_score_per_answer_type": {type: float}``
        when ``answer_types`` is given.

    Example:
        >>> vqa_accuracy(["yes", "2"], [["yes"] * 10, ["2"] * 2 + ["3"] * 8])
        {'vqa_score': 0.8}
        >>> vqa_accuracy([12, 6], [["yes"], ["yes"]], id2label=["black"] * 6 + ["no"] + ["x"] * 5 + ["yes"])
        {'vqa_score': 0.5}
    """
    predictions = list(predictions.tolist() if isinstance(predictions, np.ndarray) else predictions)
    references = list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must have the same length, got {len(predictions)} and {len(references)}."
        )
    if not predictions:
        raise ValueError("`predictions` is empty.")
    answers = _predictions_to_strings(predictions, id2label)
    scores = [
        vqa_question_score(answer, reference, normalization=normalization)
        for answer, reference in zip(answers, references)
    ]
    result: dict[str, Any] = {"vqa_score": float(np.mean(scores))}
    if answer_types is not None:
        answer_types = list(answer_types)
        if len(answer_types) != len(scores):
            raise ValueError(f"`answer_types` has {len(answer_types)} entries, expected {len(scores)}.")
        per_type: dict[str, list[float]] = {}
        for answer_type, score in zip(answer_types, scores):
            per_type.setdefault(str(answer_type), []).append(score)
        result["vqa_score_per_answer_type"] = {key: float(np.mean(value)) for key, value in sorted(per_type.items())}
    return result


def accuracy_score(
    predictions: Sequence[Any],
    references: Sequence[Any],
    normalize: bool = True,
    sample_weight: Sequence[float] | None = None,
) -> dict[str, float]:
    """Classification accuracy: the (weighted) share, or with ``normalize=False`` the count, of exact matches.

    Example:
        >>> accuracy_score([0, 1, 1, 0], [0, 1, 0, 1])
        {'accuracy': 0.5}
        >>> accuracy_score(["a", "b"], ["a", "a"], normalize=False)
        {'accuracy': 1.0}
    """
    predictions, references = _to_numpy(predictions, "predictions"), _to_numpy(references, "references")
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(
            "`predictions` and `references` must be 1-D with the same length, got shapes "
            f"{predictions.shape} and {references.shape}."
        )
    if predictions.size == 0:
        raise ValueError("`predictions` is empty.")
    correct = (predictions == references).astype(np.float64)
    if sample_weight is None:
        weights = np.ones_like(correct)
    else:
        weights = _to_numpy(sample_weight, "sample_weight").astype(np.float64)
        if weights.shape != correct.shape:
            raise ValueError(f"`sample_weight` must have shape {correct.shape}, got {weights.shape}.")
        if (weights < 0).any():
            raise ValueError("`sample_weight` must be non-negative.")
    total = float((correct * weights).sum())
    if normalize:
        if weights.sum() <= 0:
            raise ValueError("`sample_weight` sums to 0; accuracy is undefined.")
        total /= float(weights.sum())
    return {"accuracy": total}


def _ranks_of_first_positive(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per query row, how many negatives score at least as high as its best positive (0 = top)."""
    best_positive = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)
    # Ties count against the query: a constant scorer gets no credit.
    return ((scores >= best_positive) & ~positives).sum(axis=1)


def _check_similarity(similarity: Any, shape_name: str) -> np.ndarray:
    scores = _to_numpy(similarity, "similarity").astype(np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"`similarity` must be a non-empty {shape_name} matrix, got shape {scores.shape}.")
    if np.isnan(scores).any():
        raise ValueError("`similarity` contains NaN.")
    return scores


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"`ks` must be positive ints, got {ks!r}.")
    return ks


def retrieval_recall_at_k(similarity: Any, text_to_image: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image-text retrieval recall@K from a similarity matrix.

    Image-to-text retrieval (``i2t``) ranks all texts for each image and succeeds at K when any of the
    image's texts is in the top K; text-to-image (``t2i``) ranks all images for each text and succeeds
    when its image is in the top K. Ties are counted against the query (a negative scoring exactly as
    high as the positive ranks above it). This is the protocol of Flickr30K / COCO (5 captions per
    image) in ALBEF, ViLT, METER and VLMo.

    Args:
        similarity: ``(num_images, num_texts)`` scores (numpy, torch or lists).
        text_to_image: ``(num_texts,)`` index of each text's image.
        ks: the K values.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean", "rsum"}`` (for the
        default ``ks``), recalls in [0, 1]; ``r_mean`` is their mean (RSUM / 6), ``rsum`` their sum.

    Example:
        >>> sim = [[0.9, 0.1, 0.8], [0.2, 0.7, 0.3]]
        >>> retrieval_recall_at_k(sim, [0, 1, 0], ks=(1,))
        {'i2t_r1': 1.0, 't2i_r1': 1.0, 'r_mean': 1.0, 'rsum': 2.0}
    """
    scores = _check_similarity(similarity, "(num_images, num_texts)")
    num_images, num_texts = scores.shape
    text_to_image = _to_numpy(text_to_image, "text_to_image")
    if text_to_image.shape != (num_texts,) or not np.issubdtype(text_to_image.dtype, np.integer):
        raise ValueError(
            f"`text_to_image` must hold one integer image index per text, shape ({num_texts},); got "
            f"{text_to_image.dtype} of shape {text_to_image.shape}."
        )
    if text_to_image.min() < 0 or text_to_image.max() >= num_images:
        raise ValueError(
            f"`text_to_image` must lie in [0, {num_images}), got values in "
            f"[{text_to_image.min()}, {text_to_image.max()}]."
        )
    ks = _check_ks(ks)
    # positives[i, t]: text t describes image i.
    positives = text_to_image[None, :] == np.arange(num_images)[:, None]
    images_without_text = np.flatnonzero(~positives.any(axis=1))
    if images_without_text.size:
        raise ValueError(
            f"Images {images_without_text[:10].tolist()} have no text in `text_to_image`; image-to-text "
            "recall is undefined for them. Drop them from `similarity`."
        )
    image_ranks = _ranks_of_first_positive(scores, positives)
    text_ranks = _ranks_of_first_positive(scores.T, positives.T)
    result: dict[str, float] = {}
    for direction, ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        for k in ks:
            result[f"{direction}_r{k}"] = float((ranks < k).mean())
    recalls = list(result.values())
    result["r_mean"] = float(np.mean(recalls))
    result["rsum"] = float(np.sum(recalls))
    return result


def caption_level_retrieval(similarity: Any, image_captions: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval metrics for a caption set where many images share one caption (templated captions such as
    easy-VQA's "a blue circle": 24 distinct captions over hundreds of images), so recall@K over images is not defined.

    - image -> text, ``i2t_r{K}``: the distinct captions are ranked for every image; success when the image's own
      caption is in the top K (ties count against it);
    - text -> image, ``t2i_p{K}``: the images are ranked for every caption; precision@K = the share of the top K
      images that the caption describes.

    Args:
        similarity: ``(num_images, num_captions)`` scores, one column per distinct caption.
        image_captions: ``(num_images,)`` the column index of each image's caption.
        ks: the K values (image -> text recalls only for K <= num_captions).

    Returns:
        ``{"i2t_r1", ..., "t2i_p1", ..., "i2t_chance_r1", ..., "t2i_chance_p1", ..., "num_images", "num_captions"}``:
        the chance levels are those of a random ranking (K / num_captions for i2t; for t2i the mean share of images
        a caption describes).

    Example:
        >>> caption_level_retrieval([[0.9, 0.1], [0.2, 0.7], [0.8, 0.3]], [0, 1, 0], ks=(1,))["i2t_r1"]
        1.0
    """
    scores = _check_similarity(similarity, "(num_images, num_captions)")
    num_images, num_captions = scores.shape
    truth = _to_numpy(image_captions, "image_captions")
    if truth.shape != (num_images,) or not np.issubdtype(truth.dtype, np.integer):
        raise ValueError(f"`image_captions` must hold one integer caption index per image, shape ({num_images},); "
                         f"got {truth.dtype} of shape {truth.shape}.")  # fmt: skip
    if truth.min() < 0 or truth.max() >= num_captions:
        raise ValueError(f"`image_captions` must lie in [0, {num_captions}), got [{truth.min()}, {truth.max()}].")
    ks = _check_ks(ks)
    own = scores[np.arange(num_images), truth][:, None]
    i2t_rank = ((scores >= own).sum(1) - 1)  # other captions scoring at least as high (ties count against)
    described = truth[None, :] == np.arange(num_captions)[:, None]  # (num_captions, num_images)
    order = np.argsort(-scores.T, axis=1, kind="stable")  # images by decreasing score, per caption
    result: dict[str, float] = {}
    for k in ks:
        if k <= num_captions:
            result[f"i2t_r{k}"] = float((i2t_rank < k).mean())
            result[f"i2t_chance_r{k}"] = k / num_captions
        top = order[:, : min(k, num_images)]
        result[f"t2i_p{k}"] = float(np.take_along_axis(described, top, axis=1).mean())
        result[f"t2i_chance_p{k}"] = float(described.mean())
    result["num_images"], result["num_captions"] = num_images, num_captions
    return result


def _unpack_eval_prediction(eval_pred: Any) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
    elif isinstance(eval_pred, (tuple, list)) and len(eval_pred) >= 2:
        predictions, label_ids = eval_pred[0], eval_pred[1]
    else:
        raise TypeError(
            f"`eval_pred` must be a transformers EvalPrediction or a (predictions, label_ids) pair, got "
            f"{type(eval_pred).__name__}."
        )
    # The Trainer hands over a tuple when the model returns more than the logits (or several labels).
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    if isinstance(label_ids, tuple):
        label_ids = label_ids[0]
    return predictions, label_ids


def _answer_type(answer: str) -> str:
    normalised = normalize_vqa_answer(answer)
    if normalised in ("yes", "no"):
        return "yes_no"
    if normalised.replace(".", "", 1).isdigit():
        return "number"
    return "other"


def compute_vqa_metrics(eval_pred: Any, id2label: Mapping[int, str] | Sequence[str] | None = None) -> dict[str, float]:
    """``Trainer`` ``compute_metrics`` for multi-label VQA heads (``ForQuestionAnswering``).

    The predicted answer is the argmax of the logits; its VQA score is its entry in the soft-score
    target (``labels`` of shape ``(num_questions, num_labels)``, e.g. ``min(count / 3, 1)``), which is
    the official VQA accuracy whenever the target holds the official scores. Single-label integer
    targets ``(num_questions,)`` are accepted too (the score is then the accuracy).

    With ``id2label``, the score is also broken down by answer type inferred from each question's
    best target answer (``yes_no``, ``number``, ``other``; questions whose target is all zero are
    left out of the breakdown).

    Returns:
        ``{"vqa_score": float}`` (plus ``vqa_score_yes_no`` / ``_number`` / ``_other`` with ``id2label``).

    Example:
        >>> logits = np.array([[2.0, 0.1, 0.0], [0.0, 0.2, 0.1]])
        >>> targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.6]])
        >>> compute_vqa_metrics((logits, targets))
        {'vqa_score': 0.5}
    """
    logits, label_ids = _unpack_eval_prediction(eval_pred)
    logits = _to_numpy(logits, "eval_pred.predictions").astype(np.float64)
    targets = _to_numpy(label_ids, "eval_pred.label_ids")
    if logits.ndim != 2:
        raise ValueError(f"`eval_pred.predictions` must be logits (num_questions, num_labels), got {logits.shape}.")
    num_questions, num_labels = logits.shape
    if id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"`id2label` has {len(id2label)} labels but the logits have {num_labels}.")
    predicted = logits.argmax(axis=1)
    if targets.ndim == 1:
        if targets.shape[0] != num_questions:
            raise ValueError(f"`eval_pred.label_ids` has {targets.shape[0]} rows, expected {num_questions}.")
        targets = np.eye(num_labels, dtype=np.float64)[targets.astype(np.int64)]
    elif targets.shape != logits.shape:
        raise ValueError(
            f"`eval_pred.label_ids` must be soft targets of shape {logits.shape} or label ids "
            f"({num_questions},), got {targets.shape}."
        )
    scores = targets.astype(np.float64)[np.arange(num_questions), predicted]
    result = {"vqa_score": float(scores.mean())}
    if id2label is not None:
        labels = id2label if isinstance(id2label, Mapping) else dict(enumerate(id2label))
        labels = {int(key): value for key, value in labels.items()}
        has_target = targets.max(axis=1) > 0
        best_answer_types = np.array([_answer_type(labels[int(i)]) for i in targets.argmax(axis=1)])
        for answer_type in ("yes_no", "number", "other"):
            selected = has_target & (best_answer_types == answer_type)
            if selected.any():
                result[f"vqa_score_{answer_type}"] = float(scores[selected].mean())
    return result


def compute_retrieval_metrics(eval_pred: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``compute_metrics`` for retrieval: ``eval_pred.predictions`` is the ``(num_images, num_texts)``
    similarity matrix and ``eval_pred.label_ids`` the ``(num_texts,)`` image index of each text.

    Example:
        >>> compute_retrieval_metrics(([[1.0, 0.0], [0.0, 1.0]], [0, 1]), ks=(1,))["r_mean"]
        1.0
    """
    similarity, text_to_image = _unpack_eval_prediction(eval_pred)
    return retrieval_recall_at_k(similarity, _to_numpy(text_to_image, "eval_pred.label_ids").astype(np.int64), ks=ks)


# ----------------------------------------------------------------------------------------------------------------------
# Caption metrics (offline): exact match, corpus BLEU-1..4, CIDEr-D
# ----------------------------------------------------------------------------------------------------------------------


def _caption_tokens(text: str) -> list[str]:
    """Lower-cased words with punctuation split off (the COCO caption evaluation's PTB-style tokenisation, simplified)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", str(text).lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[index : index + n]) for index in range(len(tokens) - n + 1))


def _check_caption_inputs(predictions, references) -> tuple[list[str], list[list[str]]]:
    predictions = [str(prediction) for prediction in predictions]
    references = [[reference] if isinstance(reference, str) else [str(r) for r in reference] for reference in references]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets.")
    if not predictions:
        raise ValueError("`predictions` is empty.")
    if any(len(reference) == 0 for reference in references):
        raise ValueError("Every prediction needs at least one reference caption.")
    return predictions, references


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str] | str], max_n: int = 4) -> dict[str, float]:
    """Corpus-level BLEU-1..`max_n` (Papineni et al. 2002): clipped n-gram precisions summed over the corpus,
    geometric mean of orders 1..n, brevity penalty against the reference length closest to each prediction.
    Returns `{"bleu_1": ..., ..., "bleu_4": ...}` in [0, 1]."""
    predictions, references = _check_caption_inputs(predictions, references)
    matches, totals = [0] * max_n, [0] * max_n
    prediction_length = reference_length = 0
    for prediction, refs in zip(predictions, references):
        tokens = _caption_tokens(prediction)
        ref_tokens = [_caption_tokens(ref) for ref in refs]
        prediction_length += len(tokens)
        reference_length += min((abs(len(ref) - len(tokens)), len(ref)) for ref in ref_tokens)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(tokens, n)
            max_ref = Counter()
            for ref in ref_tokens:
                max_ref |= _ngrams(ref, n)
            matches[n - 1] += sum(min(count, max_ref[gram]) for gram, count in counts.items())
            totals[n - 1] += max(len(tokens) - n + 1, 0)
    if prediction_length == 0:
        return {f"bleu_{n}": 0.0 for n in range(1, max_n + 1)}
    brevity = 1.0 if prediction_length > reference_length else math.exp(1 - reference_length / prediction_length)
    scores, log_sum = {}, 0.0
    for n in range(1, max_n + 1):
        precision = matches[n - 1] / totals[n - 1] if totals[n - 1] else 0.0
        log_sum += math.log(precision) if precision > 0 else float("-inf")
        scores[f"bleu_{n}"] = brevity * math.exp(log_sum / n) if log_sum > float("-inf") else 0.0
    return scores


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str] | str], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015, as in the COCO caption evaluation): tf-idf weighted n-gram (1..4) cosine
    similarity between a prediction and each of its references, document frequencies over the reference sets of the
    corpus, a Gaussian length penalty (`sigma`), clipped prediction counts, averaged over references and n, times 10."""
    predictions, references = _check_caption_inputs(predictions, references)
    ref_tokens = [[_caption_tokens(ref) for ref in refs] for refs in references]
    document_frequency: list[Counter] = []
    for n in range(1, 5):
        frequency = Counter()
        for refs in ref_tokens:
            frequency.update(set().union(*(_ngrams(ref, n).keys() for ref in refs)))
        document_frequency.append(frequency)
    log_documents = math.log(float(len(references)))

    def vector(tokens, n):
        counts = _ngrams(tokens, n)
        weights = {gram: count * (log_documents - math.log(max(1.0, document_frequency[n - 1][gram])))
                   for gram, count in counts.items()}  # fmt: skip
        return weights, math.sqrt(sum(value * value for value in weights.values()))

    total = 0.0
    for prediction, refs in zip(predictions, ref_tokens):
        tokens = _caption_tokens(prediction)
        score = 0.0
        for n in range(1, 5):
            prediction_vector, prediction_norm = vector(tokens, n)
            for ref in refs:
                ref_vector, ref_norm = vector(ref, n)
                dot = sum(min(prediction_vector[gram], ref_vector[gram]) * ref_vector[gram]
                          for gram in prediction_vector if gram in ref_vector)  # fmt: skip
                similarity = dot / (prediction_norm * ref_norm) if prediction_norm and ref_norm else 0.0
                score += similarity * math.exp(-((len(tokens) - len(ref)) ** 2) / (2 * sigma**2)) / len(refs)
        total += score / 4 * 10.0
    return total / len(predictions)


def caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str] | str]) -> dict[str, float]:
    """Offline caption metrics: `exact_match` (normalised words equal one reference), corpus `bleu_1`..`bleu_4` and
    `cider` (CIDEr-D). `references[i]` is one caption or a list of captions of image i.

    Example:
        >>> caption_metrics(["a blue circle", "a red square"], [["a blue circle"], ["a green square"]])["exact_match"]
        0.5
    """
    predictions, references = _check_caption_inputs(predictions, references)
    exact = [any(_caption_tokens(prediction) == _caption_tokens(ref) for ref in refs)
             for prediction, refs in zip(predictions, references)]  # fmt: skip
    return {"exact_match": sum(exact) / len(exact), **corpus_bleu(predictions, references),
            "cider": cider_d(predictions, references)}  # fmt: skip
