"""Tests of hf_vl.data.vqa: official VQA answer normalisation, soft scores, vocabularies, targets."""

import itertools

import pytest
import torch

from hf_vl.data import (
    answers_to_soft_target,
    build_answer_vocab,
    normalize_vqa_answer,
    process_digit_article,
    process_punctuation,
    soft_target_tensor,
    vqa_soft_score,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes, it is", "yes it is"),  # ", " touches a space: deleted
        ("hello,world", "hello world"),  # touches no space: becomes a space
        ("t-shirt", "t shirt"),
        ("1,000", "1000"),  # a digit,digit group deletes every punctuation mark
        ("left/right", "left right"),
        ("what?", "what "),
        ("(yes)", " yes "),
        ("dog.", "dog"),  # a period not followed by a digit goes
        ("3.5", "3.5"),  # a decimal point stays
        ("mr. smith", "mr smith"),
        ("a.b", "ab"),
        ("don't", "don't"),  # apostrophes are not punctuation
        ("@home", " home"),
        ("." * 40, "." * 8),  # the official call passes re.UNICODE (32) as the count
    ],
)
def test_process_punctuation_matches_the_official_script(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("two dogs", "2 dogs"),
        ("none", "0"),
        ("zero", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only none/zero..ten are mapped
        ("a dog", "dog"),
        ("The Cat", "cat"),
        ("the an a", ""),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("whats up", "what's up"),
        ("Im", "im"),  # the table's "Im" key has a capital and never matches after lower-casing
        ("somebody'd", "somebodyd"),  # verbatim entry of the official table
        ("  many   spaces ", "many spaces"),
    ],
)
def test_process_digit_article_matches_the_official_script(text, expected):
    assert process_digit_article(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  Two.\n", "2"),
        ("\tno", "no"),
        ("A Dog!", "dog"),
        ("the t-shirt", "t shirt"),
        ("dont know", "don't know"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("", ""),
    ],
)
def test_normalize_vqa_answer(answer, expected):
    assert normalize_vqa_answer(answer) == expected


def test_normalisation_rejects_non_strings():
    for function, argument in ((normalize_vqa_answer, "answer"), (process_punctuation, "text")):
        with pytest.raises(TypeError, match=argument):
            function(3)


def _official_leave_one_out(count: int, num_answers: int = 10) -> float:
    """The official metric, by enumeration: average over the 10 subsets of 9 annotators."""
    annotators = [True] * count + [False] * (num_answers - count)
    subsets = list(itertools.combinations(range(num_answers), num_answers - 1))
    return sum(min(sum(annotators[i] for i in subset) / 3, 1) for subset in subsets) / len(subsets)


def test_vqa_soft_score_linear_target():
    assert [vqa_soft_score(count) for count in range(6)] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]


def test_vqa_soft_score_leave_one_out_equals_the_official_average():
    for count in range(11):
        assert vqa_soft_score(count, scheme="leave_one_out") == pytest.approx(_official_leave_one_out(count))
    assert [vqa_soft_score(c, scheme="leave_one_out") for c in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]


def test_vqa_soft_score_with_few_annotators_needs_all_of_them():
    assert vqa_soft_score(1, num_answers=1) == 1.0
    assert vqa_soft_score(1, num_answers=2) == 0.5
    assert vqa_soft_score(2, num_answers=2) == 1.0
    assert vqa_soft_score(1, num_answers=10) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"count": -1}, "count"),
        ({"count": 1.5}, "count"),
        ({"count": 3, "num_answers": 2}, "count"),
        ({"count": 1, "num_answers": 0}, "num_answers"),
        ({"count": 1, "scheme": "official"}, "scheme"),
    ],
)
def test_vqa_soft_score_errors(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        vqa_soft_score(**kwargs)


def test_build_answer_vocab_counts_normalised_answers():
    answer_lists = [
        ["yes", "yes", "Yes", "no"],
        ["two", "2", "2", "3"],
        ["a dog", "dog", "cat"],
        ["blue"],
    ]
    # yes 3, 2 3, dog 2; no, 3, cat, blue 1 each: by count, then alphabetically.
    assert build_answer_vocab(answer_lists) == ["2", "yes", "dog", "3", "blue", "cat", "no"]
    assert build_answer_vocab(answer_lists, min_count=2) == ["2", "yes", "dog"]
    assert build_answer_vocab(answer_lists, top_k=2) == ["2", "yes"]
    assert "two" in build_answer_vocab(answer_lists, normalize=False)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "argument"),
    [
        ((["yes"],), {}, TypeError, "list_of_answer_lists"),
        (("yes",), {}, TypeError, "list_of_answer_lists"),
        (([[1]],), {}, TypeError, "list_of_answer_lists"),
        (([["yes"]],), {"min_count": 0}, ValueError, "min_count"),
        (([["yes"]],), {"top_k": 0}, ValueError, "top_k"),
    ],
)
def test_build_answer_vocab_errors(args, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        build_answer_vocab(*args, **kwargs)


def test_answers_to_soft_target_vqa_v2_question():
    label2id = {"2": 0, "3": 1, "4": 2, "yes": 3}
    answers = ["2"] * 6 + ["two"] + ["3"] * 2 + ["several"]
    ids, scores = answers_to_soft_target(answers, label2id)
    assert ids == [0, 1]  # "several" is outside the vocabulary
    assert scores == pytest.approx([1.0, 2 / 3])
    _, stepped = answers_to_soft_target(answers, label2id, scheme="leave_one_out")
    assert stepped == pytest.approx([1.0, 0.6])
    assert answers_to_soft_target(["unknown"] * 10, label2id) == ([], [])
    assert answers_to_soft_target(["yes"], label2id) == ([3], [1.0])  # one annotator: full credit


def test_answers_to_soft_target_errors():
    with pytest.raises(TypeError, match="answers"):
        answers_to_soft_target("yes", {"yes": 0})
    with pytest.raises(TypeError, match="label2id"):
        answers_to_soft_target(["yes"], ["yes"])


def test_soft_target_tensor_single_and_batched():
    single = soft_target_tensor([0, 2], [1.0, 0.5], num_labels=4)
    assert torch.equal(single, torch.tensor([1.0, 0.0, 0.5, 0.0]))
    batched = soft_target_tensor([[1], [], [0, 3]], [[0.3], [], [0.6, 1.0]], num_labels=4)
    expected = torch.tensor([[0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.6, 0.0, 0.0, 1.0]])
    assert batched.dtype == torch.float32 and torch.allclose(batched, expected)
    assert soft_target_tensor([], [], num_labels=3).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("ids", "scores", "num_labels", "argument"),
    [
        ([3], [1.0], 3, "ids"),
        ([-1], [1.0], 3, "ids"),
        ([0, 1], [1.0], 3, "scores"),
        ([[0], [1]], [[1.0]], 3, "scores"),
        ([0], [1.0], 0, "num_labels"),
    ],
)
def test_soft_target_tensor_errors(ids, scores, num_labels, argument):
    with pytest.raises(ValueError, match=argument):
        soft_target_tensor(ids, scores, num_labels)
