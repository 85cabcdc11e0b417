"""VQA answer processing: the official answer normalisation, soft scores and answer vocabularies.

The normalisation reproduces ``vqaEval.py`` of the official VQA evaluation tools
(GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) character for character,
including its quirks, so that scores computed here match the evaluation server:

- punctuation is deleted when it touches a space (or when the text holds a ``digit,digit`` group)
  and replaced by a space otherwise;
- a period is deleted unless a digit follows it (``"3.5"`` survives, ``"dog."`` loses its period);
  the original passes ``re.UNICODE`` (32) as the ``count`` of ``re.sub``, so at most 32 periods go;
- the text is lower-cased and split on whitespace, number words ``none, zero .. ten`` become digits,
  the articles ``a, an, the`` are dropped and apostrophe-less contractions are repaired
  (``"dont"`` -> ``"don't"``). The contraction table is copied verbatim, including its entries that
  can never match (``"Im"``, ``"Ive"``: keys with capitals, looked up after lower-casing) and the
  odd ``"somebody'd" -> "somebodyd"``.

Soft scores: the official metric credits an answer given by ``k`` of the 10 annotators with the
average, over the 10 leave-one-out subsets of 9 annotators, of ``min(#matches in the subset / 3, 1)``;
that average is ``0, 0.3, 0.6, 0.9, 1.0`` for ``k = 0, 1, 2, 3, >=4``. The standard training target
(LXMERT, VLMo, Pythia) is the simpler ``min(k / 3, 1)`` (:func:`vqa_soft_score`, ``scheme="linear"``);
bottom-up attention, ViLT and METER train on the exact leave-one-out values
(``scheme="leave_one_out"``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

__all__ = [
    "VQA_ARTICLES",
    "VQA_CONTRACTIONS",
    "VQA_NUMBER_WORDS",
    "VQA_PUNCTUATION",
    "answers_to_soft_target",
    "build_answer_vocab",
    "normalize_vqa_answer",
    "process_digit_article",
    "process_punctuation",
    "soft_target_tensor",
    "vqa_soft_score",
]

# Copied verbatim from the official vqaEval.py (see module docstring).
VQA_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip

VQA_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

VQA_ARTICLES: tuple[str, ...] = ("a", "an", "the")

VQA_PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a negative *lookahead* for "<=digit"
# (a typo for a lookbehind) and therefore never fires; kept as written for exact parity.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official script calls ``periodStrip.sub("", text, re.UNICODE)``: the flag lands in ``count``.
_OFFICIAL_PERIOD_SUB_COUNT = int(re.UNICODE)

SOFT_SCORE_SCHEMES = ("linear", "leave_one_out")
_LEAVE_ONE_OUT_SCORES = (0.0, 0.3, 0.6, 0.9)


def process_punctuation(text: str) -> str:
    """Official VQA ``processPunctuation``: delete or space out punctuation, strip sentence periods.

    Example:
        >>> process_punctuation("yes, it is")
        'yes it is'
        >>> process_punctuation("t-shirt")
        't shirt'
        >>> process_punctuation("3.5")
        '3.5'
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    out_text = text
    has_digit_comma_digit = _COMMA_STRIP.search(text) is not None
    for mark in VQA_PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or has_digit_comma_digit:
            out_text = out_text.replace(mark, "")
        else:
            out_text = out_text.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out_text, count=_OFFICIAL_PERIOD_SUB_COUNT)


def process_digit_article(text: str) -> str:
    """Official VQA ``processDigitArticle``: lower-case, number words to digits, drop articles, fix contractions.

    Example:
        >>> process_digit_article("Two Dogs")
        '2 dogs'
        >>> process_digit_article("the dont")
        "don't"
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    words = []
    for word in text.lower().split():
        word = VQA_NUMBER_WORDS.get(word, word)
        if word not in VQA_ARTICLES:
            words.append(word)
    return " ".join(VQA_CONTRACTIONS.get(word, word) for word in words)


def _strip_whitespace(text: str) -> str:
    # The official script replaces newlines and tabs by spaces, then strips.
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(answer: str) -> str:
    """Normalise an answer string the way the official VQA evaluation does before comparing answers.

    Newlines and tabs become spaces, the text is stripped, then :func:`process_punctuation` and
    :func:`process_digit_article` run in that order.

    Example:
        >>> normalize_vqa_answer("  Two.\\n")
        '2'
        >>> normalize_vqa_answer("A Dog")
        'dog'
        >>> normalize_vqa_answer("dont know")
        "don't know"
    """
    if not isinstance(answer, str):
        raise TypeError(f"`answer` must be a str, got {type(answer).__name__}.")
    return process_digit_article(process_punctuation(_strip_whitespace(answer)))


def vqa_soft_score(count: int, num_answers: int | None = None, scheme: str = "linear") -> float:
    """Soft VQA training target of an answer given by ``count`` annotators.

    ``scheme="linear"`` (default) returns ``min(count / 3, 1)``, the standard training target
    (LXMERT, VLMo, Pythia). The official metric instead averages ``min(#matches / 3, 1)`` over the
    10 leave-one-out subsets of 9 of the 10 annotators, which for 10 annotators equals
    ``0, 0.3, 0.6, 0.9, 1.0`` for ``count = 0, 1, 2, 3, >=4``; ``scheme="leave_one_out"`` returns these
    values, the target of bottom-up attention, ViLT and METER.

    When fewer than 3 annotators answered (``num_answers < 3``, e.g. easy-VQA or GQA with a single
    answer), full credit needs the agreement of all of them, so a single reference answer scores 1.

    Args:
        count: number of annotators who gave the answer (``>= 0``).
        num_answers: number of annotators for the question, if known.
        scheme: ``"linear"`` or ``"leave_one_out"``.

    Example:
        >>> vqa_soft_score(1), vqa_soft_score(3), vqa_soft_score(1, num_answers=1)
        (0.3333333333333333, 1.0, 1.0)
        >>> vqa_soft_score(2, scheme="leave_one_out")
        0.6
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"`count` must be a non-negative int, got {count!r}.")
    if scheme not in SOFT_SCORE_SCHEMES:
        raise ValueError(f"`scheme` must be one of {SOFT_SCORE_SCHEMES}, got {scheme!r}.")
    if num_answers is not None:
        if isinstance(num_answers, bool) or not isinstance(num_answers, int) or num_answers < 1:
            raise ValueError(f"`num_answers` must be a positive int or None, got {num_answers!r}.")
        if count > num_answers:
            raise ValueError(f"`count` ({count}) cannot exceed `num_answers` ({num_answers}).")
        if num_answers < 3:
            return min(count / num_answers, 1.0)
    if scheme == "leave_one_out":
        return _LEAVE_ONE_OUT_SCORES[count] if count < len(_LEAVE_ONE_OUT_SCORES) else 1.0
    return min(count / 3.0, 1.0)


def _check_answer_lists(list_of_answer_lists: Iterable[Sequence[str]], argument: str) -> list[list[str]]:
    if isinstance(list_of_answer_lists, (str, bytes)):
        raise TypeError(f"`{argument}` must be an iterable of answer lists, got a single string.")
    checked = []
    for index, answers in enumerate(list_of_answer_lists):
        if isinstance(answers, str) or not isinstance(answers, Sequence):
            raise TypeError(f"`{argument}[{index}]` must be a list of answer strings, got {type(answers).__name__}.")
        for answer in answers:
            if not isinstance(answer, str):
                raise TypeError(f"`{argument}[{index}]` holds a {type(answer).__name__}; answers must be str.")
        checked.append(list(answers))
    return checked


def build_answer_vocab(
    list_of_answer_lists: Iterable[Sequence[str]],
    min_count: int = 1,
    top_k: int | None = None,
    normalize: bool = True,
) -> list[str]:
    """Build a VQA answer vocabulary from the annotator answers of every question.

    Each annotator answer counts once (normalised with :func:`normalize_vqa_answer` when
    ``normalize``). Answers seen fewer than ``min_count`` times are dropped; the rest are ordered by
    decreasing count (ties alphabetically) and cut to the ``top_k`` most frequent. VQA v2 practice is
    ``min_count=9`` (bottom-up attention, ViLT) or ``top_k=3129``.

    Example:
        >>> build_answer_vocab([["yes", "yes", "no"], ["Two", "2", "3"]])
        ['2', 'yes', '3', 'no']
        >>> build_answer_vocab([["yes", "yes", "no"], ["2", "2", "3"]], min_count=2)
        ['2', 'yes']
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"`min_count` must be a positive int, got {min_count!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive int or None, got {top_k!r}.")
    counts: Counter[str] = Counter()
    for answers in _check_answer_lists(list_of_answer_lists, "list_of_answer_lists"):
        counts.update(normalize_vqa_answer(answer) if normalize else answer for answer in answers)
    counts.pop("", None)
    vocab = sorted((answer for answer, count in counts.items() if count >= min_count), key=lambda a: (-counts[a], a))
    return vocab if top_k is None else vocab[:top_k]


def answers_to_soft_target(
    answers: Sequence[str],
    label2id: Mapping[str, int],
    normalize: bool = True,
    scheme: str = "linear",
) -> tuple[list[int], list[float]]:
    """Sparse soft-score target of one question: the vocabulary ids of its answers and their scores.

    Every distinct (normalised) annotator answer found in ``label2id`` gets
    ``vqa_soft_score(count, num_answers=len(answers), scheme)``; answers outside the vocabulary are
    dropped (a question whose answers are all unknown gets empty lists, i.e. an all-zero target).

    Example:
        >>> answers_to_soft_target(["2", "two", "3"], {"2": 0, "3": 1, "4": 2})
        ([0, 1], [0.6666666666666666, 0.3333333333333333])
    """
    if isinstance(answers, str):
        raise TypeError("`answers` must be a list of answer strings, not a single string.")
    if not isinstance(label2id, Mapping):
        raise TypeError(f"`label2id` must be a mapping from answer to id, got {type(label2id).__name__}.")
    (answers,) = _check_answer_lists([answers], "answers")
    counts = Counter(normalize_vqa_answer(answer) if normalize else answer for answer in answers)
    scored = sorted(
        (label2id[answer], vqa_soft_score(count, num_answers=len(answers), scheme=scheme))
        for answer, count in counts.items()
        if answer in label2id
    )
    return [label_id for label_id, _ in scored], [score for _, score in scored]


def soft_target_tensor(
    ids: Sequence[int] | Sequence[Sequence[int]],
    scores: Sequence[float] | Sequence[Sequence[float]],
    num_labels: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense soft-score target from sparse ``(ids, scores)``: ``(num_labels,)`` for one question,
    ``(batch, num_labels)`` for a list of questions.

    Example:
        >>> soft_target_tensor([0, 2], [1.0, 0.5], num_labels=3)
        tensor([1.0000, 0.0000, 0.5000])
        >>> soft_target_tensor([[1], []], [[1.0], []], num_labels=2)
        tensor([[0., 1.],
                [0., 0.]])
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"`num_labels` must be a positive int, got {num_labels!r}.")
    ids_list = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    scores_list = scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
    batched = len(ids_list) > 0 and not isinstance(ids_list[0], (int,)) and hasattr(ids_list[0], "__len__")
    if not batched:
        ids_list, scores_list = [ids_list], [scores_list]
    if len(ids_list) != len(scores_list):
        raise ValueError(f"`ids` has {len(ids_list)} rows but `scores` has {len(scores_list)}.")
    target = torch.zeros(len(ids_list), num_labels, dtype=dtype)
    for row, (row_ids, row_scores) in enumerate(zip(ids_list, scores_list)):
        row_ids, row_scores = list(row_ids), list(row_scores)
        if len(row_ids) != len(row_scores):
            raise ValueError(
                f"`ids` and `scores` must have the same length per question; row {row} has "
                f"{len(row_ids)} ids and {len(row_scores)} scores."
            )
        if not row_ids:
            continue
        row_ids_tensor = torch.as_tensor(row_ids, dtype=torch.long)
        if row_ids_tensor.min() < 0 or row_ids_tensor.max() >= num_labels:
            raise ValueError(f"`ids` must lie in [0, num_labels={num_labels}), row {row} holds {row_ids}.")
        target[row, row_ids_tensor] = torch.as_tensor(row_scores, dtype=dtype)
    return target if batched else target[0]
