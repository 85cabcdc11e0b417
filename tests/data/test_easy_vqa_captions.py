"""The offline image-caption set derived from easy-VQA: one caption per image, read from that image's own answers,
and consistent with every question asked about the image."""

import re

import pytest

from hf_vl.data import load_easy_vqa, load_easy_vqa_captions
from hf_vl.data.easy_vqa import EASY_VQA_COLOURS, EASY_VQA_SHAPES


@pytest.fixture(scope="module")
def captions():
    return load_easy_vqa_captions()


def test_sizes_columns_and_24_distinct_captions(captions):
    assert captions["train"].num_rows == 3395 and captions["test"].num_rows == 841
    assert captions["train"].column_names == ["image", "image_id", "caption", "colour", "shape"]
    for split in captions.values():
        assert len(set(split["image_id"])) == split.num_rows  # one row per image
        assert set(split["caption"]) == {f"a {c} {s}" for c in EASY_VQA_COLOURS for s in EASY_VQA_SHAPES}
    row = captions["test"][0]
    assert row["image"].size == (64, 64) and row["caption"] == f"a {row['colour']} {row['shape']}"


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_caption_agrees_with_every_answer_about_its_image(captions, split):
    """A colour or shape answer must be the caption's; a yes/no question naming only the caption's colour and shape
    (or another one) must be answered accordingly."""
    described = {row_id: (colour, shape) for row_id, colour, shape in
                 zip(captions[split]["image_id"], captions[split]["colour"], captions[split]["shape"])}  # fmt: skip
    questions = load_easy_vqa(split)
    checked = 0
    for question, answer, image_id in zip(questions["question"], questions["answer"], questions["image_id"]):
        if image_id not in described:
            continue
        colour, shape = described[image_id]
        if answer in EASY_VQA_SHAPES:
            assert answer == shape, (question, answer, described[image_id])
        elif answer in EASY_VQA_COLOURS:
            assert answer == colour, (question, answer, described[image_id])
        else:
            words = set(re.findall(r"[a-z]+", question))
            named = [w for w in words if w in EASY_VQA_SHAPES or w in EASY_VQA_COLOURS]
            if not named:
                continue
            holds = all(w in (colour, shape) for w in named)
            negated = bool(words & {"not", "no"})
            assert (answer == "yes") == (holds != negated), (question, answer, described[image_id])
        checked += 1
    assert checked > 5 * len(described)  # several questions per image were checked


def test_train_and_test_images_are_disjoint(captions):
    import datasets

    paths = {name: {value["path"] for value in split.cast_column("image", datasets.Image(decode=False))["image"]}
             for name, split in captions.items()}  # fmt: skip
    assert len(paths["train"]) == 3395 and not paths["train"] & paths["test"]
