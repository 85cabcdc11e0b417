"""Tests of hf_vl.metrics: VQA score, accuracy, retrieval recall@K, Trainer helpers, offline loading."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

import hf_vl.metrics as metrics
from hf_vl.metrics import (
    Accuracy,
    RetrievalRecall,
    VqaScore,
    accuracy_score,
    compute_retrieval_metrics,
    compute_vqa_metrics,
    retrieval_recall_at_k,
    vqa_accuracy,
    vqa_question_score,
)


def _official_score(prediction, answers):
    """The official metric written as the paper defines it: enumerate the 10 subsets of 9 annotators."""
    subsets = list(itertools.combinations(range(len(answers)), len(answers) - 1))
    return sum(min(sum(answers[i] == prediction for i in subset) / 3, 1) for subset in subsets) / len(subsets)


# ----------------------------------------------------------------------------------------------
# VQA score
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_matching", range(11))
def test_vqa_question_score_equals_the_leave_one_out_average(num_matching):
    answers = ["red"] * num_matching + ["blue", "green", "red car", "maroon", "pink"] * 2
    answers = answers[:10]
    expected = _official_score("red", answers)
    assert vqa_question_score("red", answers) == pytest.approx(expected)
    assert expected == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0][min(num_matching, 4)])


def test_vqa_question_score_normalisation_follows_the_official_script():
    mixed = ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"]
    assert vqa_question_score("Two", mixed) == pytest.approx(0.9)  # "two" and "Two" normalise to "2"
    assert vqa_question_score("2.", mixed) == pytest.approx(0.9)
    assert vqa_question_score("the yes!", ["yes!"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    # Annotators who all agree are not normalised by the official script: "two" != "2".
    assert vqa_question_score("two", ["2"] * 10) == 0.0
    assert vqa_question_score("two", ["2"] * 10, normalization="always") == 1.0
    assert vqa_question_score("YES", ["yes"] * 10) == 1.0  # the comparison ignores case
    assert vqa_question_score("YES", ["yes"] * 10, normalization="none") == 0.0
    assert vqa_question_score(" yes\n", ["yes"] * 10) == 1.0


def test_vqa_question_score_with_few_references():
    assert vqa_question_score("yes", ["yes"]) == 1.0
    assert vqa_question_score("no", ["yes"]) == 0.0
    assert vqa_question_score("yes", ["yes", "no"]) == 0.5
    assert vqa_question_score("yes", ["yes", "yes", "no"]) == pytest.approx(2 / 3)


def test_vqa_accuracy_strings_ids_and_answer_types():
    references = [["yes"] * 10, ["2"] * 2 + ["3"] * 8, ["cat"] * 10, ["no"] * 10]
    result = vqa_accuracy(["yes", "2", "dog", "no"], references)
    assert result == {"vqa_score": pytest.approx((1 + 0.6 + 0 + 1) / 4)}
    vocab = ["yes", "no", "2", "3", "cat"]
    by_id = vqa_accuracy([0, 2, 4, 0], references, id2label=vocab)
    assert by_id["vqa_score"] == pytest.approx((1 + 0.6 + 1 + 0) / 4)
    assert vqa_accuracy(np.array([0, 2, 4, 0]), references, id2label=dict(enumerate(vocab))) == by_id
    typed = vqa_accuracy(["yes", "2", "dog", "no"], references, answer_types=["yes/no", "number", "other", "yes/no"])
    assert typed["vqa_score_per_answer_type"] == pytest.approx({"number": 0.6, "other": 0.0, "yes/no": 1.0})


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "argument"),
    [
        ((["yes"], [["yes"], ["no"]]), {}, ValueError, "same length"),
        (([1], [["yes"]]), {}, ValueError, "id2label"),
        (([7], [["yes"]]), {"id2label": ["yes"]}, ValueError, "id2label"),
        ((["yes"], [[]]), {}, ValueError, "answers"),
        ((["yes"], ["yes"]), {}, TypeError, "answers"),
        ((["yes"], [["yes"]]), {"normalization": "lower"}, ValueError, "normalization"),
        ((["yes"], [["yes"]]), {"answer_types": ["a", "b"]}, ValueError, "answer_types"),
    ],
)
def test_vqa_accuracy_errors(args, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        vqa_accuracy(*args, **kwargs)


def test_vqa_score_module_direct_and_streaming():
    module = VqaScore()
    references = [["yes"] * 10, ["2"] * 2 + ["3"] * 8]
    assert module.compute(predictions=["yes", "two"], references=references) == {"vqa_score": pytest.approx(0.8)}
    assert module.compute(predictions=[0, 1], references=references, id2label=["yes", "2"]) == {
        "vqa_score": pytest.approx(0.8)
    }
    for prediction, reference in zip(["no", "3"], references):
        module.add_batch(predictions=[prediction], references=[reference])
    assert module.compute() == {"vqa_score": pytest.approx((0 + 1) / 2)}


# ----------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------


def test_accuracy_function_and_module():
    assert accuracy_score([0, 1, 1, 0], [0, 1, 0, 1]) == {"accuracy": 0.5}
    assert accuracy_score(torch.tensor([2, 2, 2]), np.array([2, 2, 1])) == {"accuracy": pytest.approx(2 / 3)}
    assert accuracy_score([1, 0], [1, 1], normalize=False) == {"accuracy": 1.0}
    assert accuracy_score([1, 0, 0], [1, 1, 0], sample_weight=[3, 1, 0]) == {"accuracy": 0.75}
    assert Accuracy().compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1]) == {"accuracy": 0.5}
    assert Accuracy().compute(predictions=["red", "blue"], references=["red", "red"]) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="same length"):
        accuracy_score([1, 2], [1])
    with pytest.raises(ValueError, match="sample_weight"):
        accuracy_score([1, 2], [1, 2], sample_weight=[1.0])


# ----------------------------------------------------------------------------------------------
# Retrieval recall@K
# ----------------------------------------------------------------------------------------------

# 3 images x 6 texts, two texts per image (texts 0-1 show image 0, 2-3 image 1, 4-5 image 2).
SIMILARITY = np.array(
    [
        [0.9, 0.1, 0.8, 0.0, 0.2, 0.3],  # image 0: best text 0 is its own -> rank 0
        [0.7, 0.6, 0.5, 0.4, 0.1, 0.0],  # image 1: its best (text 2, 0.5) has texts 0, 1 above -> rank 2
        [0.0, 0.3, 0.2, 0.9, 0.1, 0.4],  # image 2: its best (text 5, 0.4) has text 3 above -> rank 1
    ]
)
TEXT_TO_IMAGE = np.array([0, 0, 1, 1, 2, 2])
# Text ranks (column-wise): t0 0, t1 2, t2 1, t3 1, t4 2 (tie 0.1 with image 1 counts against), t5 0.
EXPECTED_RECALL = {
    "i2t_r1": 1 / 3, "i2t_r2": 2 / 3, "i2t_r3": 1.0,
    "t2i_r1": 2 / 6, "t2i_r2": 4 / 6, "t2i_r3": 1.0,
}  # fmt: skip


def test_retrieval_recall_hand_computed_example():
    result = retrieval_recall_at_k(SIMILARITY, TEXT_TO_IMAGE, ks=(1, 2, 3))
    for key, value in EXPECTED_RECALL.items():
        assert result[key] == pytest.approx(value), key
    assert result["r_mean"] == pytest.approx(sum(EXPECTED_RECALL.values()) / 6)
    assert result["rsum"] == pytest.approx(sum(EXPECTED_RECALL.values()))


def test_retrieval_recall_default_ks_and_torch_inputs():
    result = retrieval_recall_at_k(torch.tensor(SIMILARITY), torch.tensor(TEXT_TO_IMAGE))
    assert list(result) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean", "rsum"]
    assert result["i2t_r1"] == pytest.approx(1 / 3) and result["t2i_r1"] == pytest.approx(1 / 3)
    assert result["i2t_r5"] == result["t2i_r10"] == 1.0
    perfect = retrieval_recall_at_k(np.eye(4) + 0.01, np.arange(4))
    assert perfect["r_mean"] == 1.0
    constant = retrieval_recall_at_k(np.zeros((4, 4)), np.arange(4), ks=(1,))
    assert constant["r_mean"] == 0.0  # ties count against the query


def test_retrieval_recall_module_takes_text_rows():
    module = RetrievalRecall()
    result = module.compute(predictions=SIMILARITY.T.tolist(), references=TEXT_TO_IMAGE.tolist(), ks=(1, 2, 3))
    for key, value in EXPECTED_RECALL.items():
        assert result[key] == pytest.approx(value), key


@pytest.mark.parametrize(
    ("similarity", "text_to_image", "kwargs", "argument"),
    [
        (np.zeros((2, 3)), np.array([0, 1]), {}, "text_to_image"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), {}, "text_to_image"),
        (np.zeros((3, 2)), np.array([0, 1]), {}, "no text"),
        (np.zeros(3), np.array([0, 1, 2]), {}, "similarity"),
        (np.full((2, 2), np.nan), np.array([0, 1]), {}, "NaN"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), {}, "text_to_image"),
        (np.zeros((2, 2)), np.array([0, 1]), {"ks": (0,)}, "ks"),
    ],
)
def test_retrieval_recall_errors(similarity, text_to_image, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        retrieval_recall_at_k(similarity, text_to_image, **kwargs)


# ----------------------------------------------------------------------------------------------
# Trainer compute_metrics helpers
# ----------------------------------------------------------------------------------------------


def test_compute_vqa_metrics_reads_the_soft_score_of_the_argmax():
    logits = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 5.0], [1.0, 0.0, 0.0, 0.0]])
    targets = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.3, 1.0, 0.0], [0.0, 0.0, 0.6, 0.9], [0.0, 0.0, 0.0, 0.0]])
    expected = (1.0 + 0.3 + 0.9 + 0.0) / 4
    assert compute_vqa_metrics(EvalPrediction(predictions=logits, label_ids=targets)) == {
        "vqa_score": pytest.approx(expected)
    }
    # Extra model outputs after the logits, torch inputs, integer labels.
    assert compute_vqa_metrics(((torch.tensor(logits), np.zeros(4)), torch.tensor(targets)))["vqa_score"] == (
        pytest.approx(expected)
    )
    assert compute_vqa_metrics((logits, np.array([0, 2, 3, 1]))) == {"vqa_score": 0.5}
    by_type = compute_vqa_metrics((logits, targets), id2label=["yes", "no", "2", "red"])
    assert by_type["vqa_score_yes_no"] == pytest.approx(1.0)  # row 0: best target "yes"
    assert by_type["vqa_score_number"] == pytest.approx(0.3)  # row 1: best target "2"
    assert by_type["vqa_score_other"] == pytest.approx(0.9)  # row 2: best target "red"; row 3 has none


def test_compute_vqa_metrics_errors():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="label_ids"):
        compute_vqa_metrics((logits, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="id2label"):
        compute_vqa_metrics((logits, np.zeros((2, 3))), id2label=["a", "b"])
    with pytest.raises(TypeError, match="eval_pred"):
        compute_vqa_metrics(logits)


def test_compute_retrieval_metrics():
    result = compute_retrieval_metrics(EvalPrediction(predictions=SIMILARITY, label_ids=TEXT_TO_IMAGE), ks=(1, 2, 3))
    assert result["r_mean"] == pytest.approx(sum(EXPECTED_RECALL.values()) / 6)


# ----------------------------------------------------------------------------------------------
# Loading with evaluate, offline
# ----------------------------------------------------------------------------------------------


def test_load_helper_and_paths():
    assert set(metrics.AVAILABLE_METRICS) == {"accuracy", "retrieval_recall", "vqa_score"}
    for name in metrics.AVAILABLE_METRICS:
        assert os.path.isfile(os.path.join(metrics.metric_path(name), f"{name}.py"))
    module = metrics.load("vqa_score")
    assert type(module).__name__ == "VqaScore"
    assert module.compute(predictions=["yes"], references=[["yes"] * 10]) == {"vqa_score": 1.0}
    with pytest.raises(ValueError, match="name"):
        metrics.load("bleu")


def test_evaluate_load_of_local_paths_works_offline(tmp_path):
    """A fresh interpreter with the Hub unreachable and every offline switch on loads all metrics."""
    script = textwrap.dedent(
        f"""
        import json, os, evaluate
        import hf_vl.metrics as metrics
        results = {{}}
        vqa = evaluate.load(metrics.metric_path("vqa_score"))
        results["vqa_score"] = vqa.compute(predictions=["two"], references=[["2"] * 3 + ["3"] * 7])
        by_file = evaluate.load(os.path.join(metrics.metric_path("vqa_score"), "vqa_score.py"))
        results["vqa_score_file"] = by_file.compute(predictions=["yes"], references=[["yes"]])
        results["accuracy"] = evaluate.load(metrics.metric_path("accuracy")).compute(
            predictions=[1, 0, 1, 1], references=[1, 1, 1, 1]
        )
        results["retrieval_recall"] = metrics.load("retrieval_recall").compute(
            predictions={SIMILARITY.T.tolist()!r}, references={TEXT_TO_IMAGE.tolist()!r}, ks=[1]
        )
        print(json.dumps(results))
        """
    )
    environment = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens there: any Hub request would fail
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "modules"),
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["vqa_score"]["vqa_score"] == pytest.approx(0.9)
    assert results["vqa_score_file"] == {"vqa_score": 1.0}
    assert results["accuracy"] == {"accuracy": 0.75}
    assert results["retrieval_recall"]["i2t_r1"] == pytest.approx(1 / 3)
    assert results["retrieval_recall"]["t2i_r1"] == pytest.approx(1 / 3)
    assert (tmp_path / "modules" / "evaluate_modules" / "metrics" / "vqa_score").is_dir()


def test_caption_level_retrieval_against_a_brute_force_count():
    """i2t: the image's caption among the top K distinct captions (ties against it); t2i: precision@K over images."""
    from hf_vl.metrics import caption_level_retrieval

    rng = np.random.default_rng(0)
    similarity = rng.integers(0, 4, size=(30, 5)).astype(float)  # many ties
    truth = rng.integers(0, 5, size=30)
    truth[:5] = np.arange(5)  # every caption describes at least one image
    result = caption_level_retrieval(similarity, truth, ks=(1, 2, 10))
    for k in (1, 2):
        hits = [sum(similarity[i, c] >= similarity[i, truth[i]] for c in range(5) if c != truth[i]) < k for i in range(30)]
        assert result[f"i2t_r{k}"] == pytest.approx(np.mean(hits))
        assert result[f"i2t_chance_r{k}"] == k / 5
    assert "i2t_r10" not in result  # K beyond the number of captions
    order = np.argsort(-similarity.T, axis=1, kind="stable")
    for k in (1, 2, 10):
        expected = np.mean([[truth[i] == c for i in order[c, :k]] for c in range(5)])
        assert result[f"t2i_p{k}"] == pytest.approx(expected)
        assert result[f"t2i_chance_p{k}"] == pytest.approx(1 / 5)
    assert (result["num_images"], result["num_captions"]) == (30, 5)
    perfect = caption_level_retrieval(np.eye(5)[truth], truth, ks=(1,))
    assert perfect["i2t_r1"] == 1.0 and perfect["t2i_p1"] == 1.0
    constant = caption_level_retrieval(np.zeros((30, 5)), truth, ks=(1,))
    assert constant["i2t_r1"] == 0.0  # a constant scorer gets no credit
    with pytest.raises(ValueError, match="image_captions"):
        caption_level_retrieval(similarity, truth[:-1])
    with pytest.raises(ValueError, match="image_captions"):
        caption_level_retrieval(similarity, np.full(30, 5))
    with pytest.raises(ValueError, match="NaN"):
        caption_level_retrieval(np.full((2, 2), np.nan), [0, 1])
    with pytest.raises(ValueError, match="ks"):
        caption_level_retrieval(similarity, truth, ks=(0,))
