"""Catalogue of bad inputs to VLMo's model classes, processor and config: each raises a ValueError/TypeError naming
the argument (or config field) with the expected and the actual value; never an error from inside torch/PIL, never
a silent result. Shape/type checks run in `forward`; value checks in `validate_input_values` (eager calls while
`config.check_input_values`); image/text rules in the processor (the same rules as METER's)."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoTokenizer

from hf_vl import (
    VlmoConfig,
    VlmoForImageClassification,
    VlmoForImagesAndTextClassification,
    VlmoForMaskedLM,
    VlmoForQuestionAnswering,
    VlmoImageProcessor,
    VlmoModel,
    VlmoProcessor,
)
from hf_vl.training import local_pretrained_path

CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              vl_ffn_start_layer=1, image_size=32, patch_size=8, num_labels=4, max_text_len=16,
              max_relative_text_length=16)  # fmt: skip
MODELS = {}


def model(cls, **overrides):
    key = (cls, tuple(sorted(overrides.items())))
    if key not in MODELS:
        torch.manual_seed(0)
        MODELS[key] = cls(VlmoConfig(**{**CONFIG, **overrides})).eval()
    return MODELS[key]


def good(batch=2, length=6):
    input_ids = torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def with_(cls=VlmoModel, overrides=None, **changes):
    """A call of `cls` on good inputs with `changes` applied (None removes an input)."""

    def call():
        inputs = good()
        for key, value in changes.items():
            if value is None:
                inputs.pop(key)
            else:
                inputs[key] = value(inputs) if callable(value) else value
        return model(cls, **(overrides or {}))(**inputs)

    return call


def _nan_first_row(inputs):
    return inputs["pixel_values"].index_fill(0, torch.tensor([0]), float("nan"))


MODEL_CASES = [
    ("float input_ids", with_(input_ids=lambda i: i["input_ids"].float()), TypeError, r"`input_ids`.*integer.*float"),
    ("input_ids beyond the vocabulary", with_(input_ids=lambda i: i["input_ids"] + 200), ValueError,
     r"`input_ids` must be in \[0, 99\).*\[\d+, \d+\]"),
    ("negative input_ids", with_(input_ids=lambda i: i["input_ids"] - 50), ValueError, r"`input_ids` must be in"),
    ("text longer than the relative position table",
     with_(input_ids=torch.randint(3, 99, (2, 40)), attention_mask=torch.ones(2, 40, dtype=torch.long)), ValueError,
     r"`input_ids` has 40 tokens.*max_relative_text_length.*16"),
    ("1-D input_ids", with_(input_ids=torch.tensor([5, 6, 7])), ValueError, r"`input_ids` must be \(batch_size"),
    ("empty input_ids", with_(input_ids=torch.zeros(2, 0, dtype=torch.long), attention_mask=None), ValueError,
     r"`input_ids` is empty"),
    ("token_type_ids of another shape", with_(token_type_ids=torch.zeros(2, 4, dtype=torch.long)), ValueError,
     r"`token_type_ids` shape \(2, 4\) must equal `input_ids` shape \(2, 6\)"),
    ("token_type_ids out of range", with_(token_type_ids=lambda i: torch.full_like(i["input_ids"], 5)), ValueError,
     r"`token_type_ids` must be in \[0, 2\)"),
    ("attention_mask of another shape", with_(attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError,
     r"`attention_mask` shape \(2, 5\)"),
    ("attention_mask holding 2s", with_(attention_mask=lambda i: i["attention_mask"] * 2), ValueError,
     r"`attention_mask` must hold only 0 and 1"),
    ("all-zero attention_mask row", with_(attention_mask=lambda i: i["attention_mask"] * torch.tensor([[1], [0]])),
     ValueError, r"`attention_mask` rows \[1\] are all zeros"),
    ("neither text nor image", with_(pixel_values=None, input_ids=None), ValueError, r"`input_ids`.*`pixel_values`"),
    ("VQA without an image", with_(VlmoForQuestionAnswering, pixel_values=None), ValueError, r"`pixel_values` is None"),
    ("VQA without text", with_(VlmoForQuestionAnswering, input_ids=None), ValueError, r"`input_ids` is None"),
    ("3-D pixel_values", with_(pixel_values=torch.randn(3, 32, 32)), ValueError,
     r"`pixel_values` must be \(batch_size, 3, 32, 32\).*got shape \(3, 32, 32\)"),
    ("1-channel pixel_values", with_(pixel_values=torch.randn(2, 1, 32, 32)), ValueError,
     r"`pixel_values` must be \(batch_size, 3, 32, 32\)"),
    ("pixel_values of another size", with_(pixel_values=torch.randn(2, 3, 48, 48)), ValueError,
     r"`pixel_values`.*image_size=32, patch_size=8.*\(2, 3, 48, 48\)"),
    ("integer pixel_values", with_(pixel_values=torch.randint(0, 255, (2, 3, 32, 32))), TypeError,
     r"`pixel_values` must be a floating point tensor"),
    ("NaN pixel_values", with_(pixel_values=_nan_first_row), ValueError, r"`pixel_values` contains NaN"),
    ("+inf pixel_values", with_(pixel_values=lambda i: i["pixel_values"] * float("inf")), ValueError,
     r"`pixel_values` contains inf"),
    ("text and image batch sizes differ", with_(pixel_values=torch.randn(3, 3, 32, 32)), ValueError,
     r"`input_ids` has 2 rows, `pixel_values` 3"),
    ("VQA labels of another width", with_(VlmoForQuestionAnswering, labels=torch.rand(2, 5)), ValueError,
     r"`labels` must be soft scores of shape \(2, 4\), got \(2, 5\)"),
    ("VQA labels as class indices", with_(VlmoForQuestionAnswering, labels=torch.tensor([1, 2])), ValueError,
     r"`labels`"),
    ("VQA labels above 1", with_(VlmoForQuestionAnswering, labels=torch.full((2, 4), 3.0)), ValueError,
     r"`labels` must be soft VQA scores in \[0, 1\]"),
    ("NLVR2 head on a 2-modality config", with_(VlmoForImagesAndTextClassification), ValueError,
     r"`modality_type_vocab_size=3`"),
    ("NLVR2 single image per example",
     with_(VlmoForImagesAndTextClassification, overrides={"modality_type_vocab_size": 3, "num_labels": 2}),
     ValueError, r"`pixel_values`"),
    ("NLVR2 labels out of range",
     with_(VlmoForImagesAndTextClassification, overrides={"modality_type_vocab_size": 3, "num_labels": 2},
           pixel_values=torch.randn(2, 2, 3, 32, 32), labels=torch.tensor([0, 7])), ValueError, r"`labels`"),
    ("misspelt keyword argument", with_(VlmoForQuestionAnswering, label=torch.rand(2, 4)), TypeError,
     r"'label' \(did you mean 'labels'\?\)"),
    ("image classification labels out of range",
     with_(VlmoForImageClassification, input_ids=None, attention_mask=None, labels=torch.tensor([0, 9])), ValueError,
     r"`labels` must be class indices in \[0, 4\), got values in \[0, 9\]"),
    ("MLM labels beyond the vocabulary", with_(VlmoForMaskedLM, pixel_values=None, labels=torch.full((2, 6), 500)),
     ValueError, r"labels must be -100 or token ids in \[0, 99\)"),
]

CONFIG_CASES = [
    ("hidden_size not a multiple of the heads", dict(hidden_size=30, num_attention_heads=4),
     r"`hidden_size` \(30\) must be a multiple of `num_attention_heads` \(4\)"),
    ("VL-FFN start above the depth", dict(num_hidden_layers=2, vl_ffn_start_layer=5),
     r"`vl_ffn_start_layer` \(5\) must be <= `num_hidden_layers` \(2\)"),
    ("misspelt activation", dict(hidden_act="gelux"), r"`hidden_act`.*'gelux'"),
    ("image_size not a multiple of patch_size", dict(image_size=30, patch_size=8),
     r"`image_size` \(30\) must be a multiple of `patch_size` \(8\)"),
    ("no labels", dict(num_labels=0), r"`num_labels` must be a positive int"),
    ("no heads", dict(num_attention_heads=0), r"`num_attention_heads`"),
]


@pytest.fixture(scope="module")
def processor():
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))
    return VlmoProcessor(VlmoImageProcessor(size={"height": 32, "width": 32}), tokenizer)


RED = PIL.Image.new("RGB", (40, 40), "red")
PROCESSOR_CASES = [
    ("more images than texts", dict(images=[RED, RED], text=["a"]), ValueError,
     r"`text` and `images` must describe the same number of examples; got 1 text\(s\) and 2"),
    ("empty text", dict(images=RED, text=""), ValueError, r"`text` must be a non-empty string"),
    ("an empty entry in the text list", dict(images=[RED, RED], text=["a", " "]), ValueError,
     r"`text\[1\]` must be a non-empty string"),
    ("text that is not a string", dict(images=RED, text=5), TypeError, r"`text` must be a string or a list"),
    ("an image without pixels", dict(images=np.zeros((0, 40, 3), dtype=np.uint8), text="a"), ValueError,
     r"`images` has no pixels"),
    ("NaN pixels", dict(images=np.full((40, 40, 3), np.nan, dtype=np.float32), text="a"), ValueError,
     r"`images` contains 4800 NaN or infinite"),
    ("16-bit integers as an array", dict(images=np.full((40, 40, 3), 30000, dtype=np.int32), text="a"), ValueError,
     r"`images` integer arrays must hold 8-bit values"),
    ("float image mode without an RGB meaning", dict(images=PIL.Image.new("F", (40, 40)), text="a"), ValueError,
     r"`images` is a PIL image in mode 'F'"),
    ("NLVR2 examples with different image counts", dict(images=[[RED, RED], [RED]], text=["a", "b"]), ValueError,
     r"Every entry of `images` must hold the same non-zero number"),
    ("a 2-channel array", dict(images=np.zeros((40, 40, 2), dtype=np.uint8), text="a"), ValueError,
     r"`images` arrays must have 1, 3 or 4 channels"),
    ("neither images nor text", dict(), ValueError, r"at least one input"),
]


@pytest.mark.parametrize("name, call, error, match", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_model_rejects_bad_input_naming_the_argument(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("name, fields, match", CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_config_rejects_bad_values_naming_the_field(name, fields, match):
    with pytest.raises(ValueError, match=match):
        VlmoConfig(**fields)


@pytest.mark.parametrize("name, inputs, error, match", PROCESSOR_CASES, ids=[case[0] for case in PROCESSOR_CASES])
def test_processor_rejects_bad_input_naming_the_argument(processor, name, inputs, error, match):
    with pytest.raises(error, match=match):
        processor(**inputs, return_tensors="pt")


def test_processor_reads_16_bit_images_and_grayscale_like_meter(processor):
    """`convert("RGB")` clips a 16-bit image to white; the one RGB rule scales it to 8 bits."""
    sixteen = processor(images=PIL.Image.new("I;16", (40, 40), 32896), text="a", return_tensors="pt")["pixel_values"]
    gray = processor(images=PIL.Image.new("L", (40, 40), 128), text="a", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(sixteen, gray)
    assert abs(gray.mean().item()) < 0.01  # 128 / 255 normalised with mean = std = 0.5
