"""Tests of hf_vl.data.easy_vqa: the easy-VQA dataset built offline from the easy-vqa package."""

import datasets
import easy_vqa
import numpy as np
import pytest
from PIL import Image

from hf_vl.data import (
    EASY_VQA_ANSWERS,
    easy_vqa_answer_vocab,
    easy_vqa_id2label,
    easy_vqa_label2id,
    load_easy_vqa,
    soft_target_tensor,
)

EXPECTED_COLUMNS = {
    "image", "image_id", "question_id", "question", "answer", "answers", "label", "answer_ids", "answer_scores",
}  # fmt: skip


@pytest.fixture(scope="module")
def easy_vqa_dataset():
    return load_easy_vqa()


def test_split_sizes_match_the_published_counts(easy_vqa_dataset):
    assert isinstance(easy_vqa_dataset, datasets.DatasetDict)
    assert set(easy_vqa_dataset) == {"train", "test"}
    assert easy_vqa_dataset["train"].num_rows == 38_575
    assert easy_vqa_dataset["test"].num_rows == 9_673
    train_image_ids = np.unique(easy_vqa_dataset["train"].data.column("image_id").to_numpy())
    test_image_ids = np.unique(easy_vqa_dataset["test"].data.column("image_id").to_numpy())
    assert len(train_image_ids) == 4_000 and len(test_image_ids) == 1_000
    np.testing.assert_array_equal(train_image_ids, np.arange(4_000))
    np.testing.assert_array_equal(test_image_ids, np.arange(1_000))


def test_answer_vocabulary_is_the_sorted_package_answers():
    assert len(EASY_VQA_ANSWERS) == 13
    assert list(EASY_VQA_ANSWERS) == sorted(easy_vqa.get_answers())
    assert easy_vqa_answer_vocab() == list(EASY_VQA_ANSWERS)
    id2label, label2id = easy_vqa_id2label(), easy_vqa_label2id()
    assert id2label[0] == "black" and id2label[12] == "yes"
    assert all(label2id[answer] == index for index, answer in id2label.items())


def test_columns_features_and_first_row(easy_vqa_dataset):
    train = easy_vqa_dataset["train"]
    assert set(train.column_names) == EXPECTED_COLUMNS
    assert isinstance(train.features["image"], datasets.Image)
    assert train.features["label"].names == list(EASY_VQA_ANSWERS)
    questions, answers, image_ids = easy_vqa.get_train_questions()
    row = train[0]
    assert row["question"] == questions[0] == "what is the blue shape?"
    assert row["answer"] == answers[0] == "rectangle"
    assert row["answers"] == ["rectangle"]
    assert row["label"] == EASY_VQA_ANSWERS.index("rectangle")
    assert row["answer_ids"] == [row["label"]] and row["answer_scores"] == [1.0]
    assert row["image_id"] == image_ids[0] and row["question_id"] == 0


def test_images_decode_to_the_package_pngs(easy_vqa_dataset):
    test = easy_vqa_dataset["test"]
    paths = easy_vqa.get_test_image_paths()
    for index in (0, 4_321, test.num_rows - 1):
        row = test[index]
        assert isinstance(row["image"], Image.Image)
        assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
        with Image.open(paths[row["image_id"]]) as expected:
            np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(expected.convert("RGB")))


@pytest.mark.parametrize("split", ["train", "test"])
def test_targets_are_consistent_for_every_row(easy_vqa_dataset, split):
    table = easy_vqa_dataset[split].select_columns(["answer", "answers", "label", "answer_ids", "answer_scores"])
    columns = table.to_dict()
    label2id = easy_vqa_label2id()
    assert columns["label"] == [label2id[answer] for answer in columns["answer"]]
    assert columns["answers"] == [[answer] for answer in columns["answer"]]
    assert columns["answer_ids"] == [[label] for label in columns["label"]]
    assert all(scores == [1.0] for scores in columns["answer_scores"])
    assert set(columns["answer"]) == set(EASY_VQA_ANSWERS)


def test_sparse_target_becomes_a_one_hot_label_vector(easy_vqa_dataset):
    rows = easy_vqa_dataset["train"].select(range(4))
    target = soft_target_tensor(rows["answer_ids"], rows["answer_scores"], num_labels=len(EASY_VQA_ANSWERS))
    assert target.shape == (4, 13)
    assert target.sum(dim=1).tolist() == [1.0] * 4
    assert target.argmax(dim=1).tolist() == list(rows["label"])


def test_single_split_and_subsampling(easy_vqa_dataset):
    test = load_easy_vqa("test")
    assert isinstance(test, datasets.Dataset) and test.num_rows == 9_673 and str(test.split) == "test"
    small = load_easy_vqa(max_questions_per_split=100, seed=3)
    assert small["train"].num_rows == 100 and small["test"].num_rows == 100
    question_ids = small["train"]["question_id"]
    assert list(question_ids) == sorted(question_ids) and len(set(question_ids)) == 100
    again = load_easy_vqa("train", max_questions_per_split=100, seed=3)
    assert list(again["question_id"]) == list(question_ids)
    other = load_easy_vqa("train", max_questions_per_split=100, seed=4)
    assert list(other["question_id"]) != list(question_ids)
    full = easy_vqa_dataset["train"]
    for row in small["train"].select(range(5)):
        reference = full[row["question_id"]]
        assert (row["question"], row["answer"], row["image_id"]) == (
            reference["question"], reference["answer"], reference["image_id"],
        )  # fmt: skip
    assert load_easy_vqa("test", max_questions_per_split=10**6).num_rows == 9_673


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"split": "validation"}, "split"),
        ({"max_questions_per_split": 0}, "max_questions_per_split"),
        ({"max_questions_per_split": 2.5}, "max_questions_per_split"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        load_easy_vqa(**kwargs)
