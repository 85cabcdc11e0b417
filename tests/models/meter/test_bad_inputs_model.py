"""Catalogue of bad inputs to METER's model classes: each raises a ValueError/TypeError naming the argument (shape
and type checks in `forward`, value checks in `validate_input_values`, which eager `forward` runs while
`config.check_input_values` is True). The processor / pipeline / regions / config / converter catalogue is
tests/test_bad_inputs.py."""

import copy

import pytest
import torch

from hf_vl import (
    MeterConfig,
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForImageTextClassification,
    MeterForPreTraining,
    MeterForQuestionAnswering,
    MeterModel,
)
from test_modeling_meter import TINY_BERT, TINY_CLIP

CONFIG = MeterConfig(
    text_config=copy.deepcopy(TINY_BERT), vision_config=copy.deepcopy(TINY_CLIP), hidden_size=32,
    num_attention_heads=4, intermediate_size=37, num_fusion_layers=1, modality_type_vocab_size=3, num_labels=4,
)
MODELS = {}


def model(cls):
    if cls not in MODELS:
        torch.manual_seed(0)
        MODELS[cls] = cls(CONFIG).eval()
    return MODELS[cls]


def good(batch=2, length=6):
    input_ids = torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(batch, 3, 32, 32)}


def with_(cls=MeterModel, **changes):
    """A call of `cls` on good inputs with `changes` applied (None removes an input)."""

    def call():
        inputs = good()
        for key, value in changes.items():
            if value is None:
                inputs.pop(key)
            else:
                inputs[key] = value(inputs) if callable(value) else value
        return model(cls)(**inputs)

    return call


CASES = [
    # (name, call, exception, message regex naming the argument)
    ("float input_ids", with_(input_ids=lambda i: i["input_ids"].float()), TypeError, r"`input_ids`.*integer.*float"),
    ("input_ids beyond the vocabulary", with_(input_ids=lambda i: i["input_ids"] + 200), ValueError,
     r"`input_ids` must be in \[0, 99\).*\[\d+, \d+\]"),
    ("negative input_ids", with_(input_ids=lambda i: i["input_ids"] - 50), ValueError, r"`input_ids` must be in"),
    ("text longer than the position table",
     with_(input_ids=torch.randint(3, 99, (2, 70)), attention_mask=torch.ones(2, 70, dtype=torch.long)), ValueError,
     r"`input_ids` has 70 tokens.*position table holds 64"),
    ("1-D input_ids", with_(input_ids=torch.tensor([5, 6, 7])), ValueError, r"`input_ids` must be \(batch_size"),
    ("empty input_ids", with_(input_ids=torch.zeros(2, 0, dtype=torch.long), attention_mask=None), ValueError,
     r"`input_ids` is empty"),
    ("token_type_ids of another shape", with_(token_type_ids=torch.zeros(2, 4, dtype=torch.long)), ValueError,
     r"`token_type_ids` shape \(2, 4\) must equal `input_ids` shape \(2, 6\)"),
    ("token_type_ids out of range", with_(token_type_ids=lambda i: torch.full_like(i["input_ids"], 5)), ValueError,
     r"`token_type_ids` must be in \[0, 2\)"),
    ("attention_mask of another shape", with_(attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError,
     r"`attention_mask` shape"),
    ("attention_mask holding 2s", with_(attention_mask=lambda i: i["attention_mask"] * 2), ValueError,
     r"`attention_mask` must hold only 0 and 1, got values \[2\]"),
    ("all-zero attention_mask row", with_(attention_mask=lambda i: i["attention_mask"] * torch.tensor([[1], [0]])),
     ValueError, r"`attention_mask` rows \[1\] are all zeros"),
    ("missing pixel_values", with_(pixel_values=None), ValueError, r"`pixel_values` is None"),
    ("missing input_ids", with_(input_ids=None), ValueError, r"`input_ids` is None"),
    ("NaN pixels", with_(pixel_values=torch.full((2, 3, 32, 32), float("nan"))), ValueError,
     r"`pixel_values` contains NaN"),
    ("+inf pixels", with_(pixel_values=lambda i: i["pixel_values"].index_fill(1, torch.tensor([0]), float("inf"))),
     ValueError, r"`pixel_values` contains inf"),
    ("integer pixels", with_(pixel_values=torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), TypeError,
     r"`pixel_values` must be a floating point tensor"),
    ("one-channel pixels", with_(pixel_values=torch.randn(2, 1, 32, 32)), ValueError,
     r"`pixel_values` must be \(batch_size, 3, height, width\), got shape \(2, 1, 32, 32\)"),
    ("image smaller than one patch", with_(pixel_values=torch.randn(2, 3, 4, 4)), ValueError,
     r"`pixel_values` images are \(4, 4\) pixels, smaller than one 8x8 patch"),
    ("text and image batch sizes differ", with_(pixel_values=torch.randn(3, 3, 32, 32)), ValueError,
     r"batch sizes differ.*`input_ids` / `pixel_values`"),
    ("pixel_mask of another shape", with_(pixel_mask=torch.ones(2, 16, 16, dtype=torch.long)), ValueError,
     r"`pixel_mask` must be \(batch_size, height, width\)"),
    ("pixel_mask holding 3s", with_(pixel_mask=torch.full((2, 32, 32), 3)), ValueError,
     r"`pixel_mask` must hold only 0 and 1"),
    ("image_token_type_idx out of range", with_(image_token_type_idx=7), ValueError, r"`image_token_type_idx`"),
    ("both input_ids and text_embeds", with_(text_embeds=torch.randn(2, 6, 32)), ValueError,
     r"either `input_ids` or `text_embeds`"),
    ("image_embeds of the wrong width", with_(pixel_values=None, image_embeds=torch.randn(2, 17, 8)), ValueError,
     r"`image_embeds` must be \(batch_size, image_length, 32\)"),
    ("misspelt pixel_values", with_(MeterForQuestionAnswering, pixel_valuez=lambda i: i["pixel_values"]), TypeError,
     r"unexpected keyword argument.*'pixel_valuez' \(did you mean 'pixel_values'\?\)"),
    ("label= instead of labels=", with_(MeterForQuestionAnswering, label=torch.zeros(2, 4)), TypeError,
     r"'label' \(did you mean 'labels'\?\)"),
    ("VQA labels of the wrong shape", with_(MeterForQuestionAnswering, labels=torch.zeros(2, 3)), ValueError,
     r"`labels` must be soft scores of shape \(batch_size, num_labels\) = \(2, 4\)"),
    ("VQA labels outside [0, 1]", with_(MeterForQuestionAnswering, labels=torch.full((2, 4), 3.0)), ValueError,
     r"`labels` must be soft VQA scores in \[0, 1\]"),
    ("NaN VQA labels", with_(MeterForQuestionAnswering, labels=torch.full((2, 4), float("nan"))), ValueError,
     r"`labels` contains NaN"),
    ("class label out of range", with_(MeterForImageTextClassification, labels=torch.tensor([1, 7])), ValueError,
     r"`labels` must be class indices in \[0, 4\), got values in \[1, 7\]"),
    ("negative class label", with_(MeterForImageTextClassification, labels=torch.tensor([-1, 0])), ValueError,
     r"`labels` must be class indices"),
    ("class labels of the wrong shape", with_(MeterForImageTextClassification, labels=torch.tensor([[1], [0]])),
     ValueError, r"`labels` must be \(batch_size,\)"),
    ("NLVR2 with one image", with_(MeterForImagesAndTextClassification), ValueError,
     r"`pixel_values` must be \(batch_size, 2, 3, height, width\) for NLVR2"),
    ("NLVR2 label out of range",
     with_(MeterForImagesAndTextClassification, pixel_values=torch.randn(2, 2, 3, 32, 32), labels=torch.tensor([0, 9])),
     ValueError, r"`labels` must be class indices"),
    ("retrieval pair label 2", with_(MeterForImageAndTextRetrieval, labels=torch.tensor([1, 2])), ValueError,
     r"`labels` must be 1 \(match\) or 0"),
    ("retrieval candidate index out of range",
     with_(MeterForImageAndTextRetrieval, input_ids=torch.randint(3, 99, (2, 3, 6)), attention_mask=None,
           labels=torch.tensor([0, 3])), ValueError, r"`labels` must be the index of the true candidate in \[0, 3\)"),
    ("retrieval candidates without matching images",
     with_(MeterForImageAndTextRetrieval, input_ids=torch.randint(3, 99, (2, 3, 6)), attention_mask=None,
           pixel_values=torch.randn(1, 3, 32, 32)), ValueError, r"Ranking mode: the images must have batch_size 2"),
    ("itm_labels holding 2", with_(MeterForPreTraining, itm_labels=torch.tensor([1, 2])), ValueError,
     r"`itm_labels` must be 0 \(mismatch\) or 1"),
    ("mlm_labels outside the vocabulary",
     with_(MeterForPreTraining, mlm_labels=torch.full((2, 6), 500)), ValueError, r"`mlm_labels` must be -100 or"),
    ("mlm_labels of the wrong shape", with_(MeterForPreTraining, mlm_labels=torch.full((2, 3), -100)), ValueError,
     r"`mlm_labels` must be \(batch_size, text_length\)"),
    ("bool_masked_pos of the wrong shape",
     with_(MeterForPreTraining, bool_masked_pos=torch.ones(2, 5, dtype=torch.bool)), ValueError,
     r"`bool_masked_pos` must be \(batch_size, num_patches\) = \(2, 16\)"),
    ("bool_masked_pos without pixels",
     with_(MeterForPreTraining, pixel_values=None, image_embeds=torch.randn(2, 17, 32),
           bool_masked_pos=torch.ones(2, 16, dtype=torch.bool)), ValueError,
     r"`bool_masked_pos` was given without `pixel_values`"),
]


@pytest.mark.parametrize("name, call, exception, message", CASES, ids=[case[0] for case in CASES])
def test_bad_model_input_raises_a_clear_error(name, call, exception, message):
    with pytest.raises(exception, match=message):
        with torch.no_grad():
            call()


def test_value_checks_can_be_switched_off_and_shape_checks_cannot():
    config = copy.deepcopy(CONFIG)
    config.check_input_values = False
    fast = MeterModel(config).eval()
    inputs = good()
    inputs["attention_mask"] = inputs["attention_mask"] * 2
    with torch.no_grad():
        fast(**inputs)  # no value check: runs (documented trade-off for accelerators)
    with pytest.raises(ValueError, match="attention_mask"):
        fast.validate_input_values(**inputs)  # the same checks, called explicitly
    with pytest.raises(ValueError, match="`token_type_ids` shape"):
        fast(**good(), token_type_ids=torch.zeros(2, 3, dtype=torch.long))


def test_catalogue_size():
    assert len(CASES) >= 40
