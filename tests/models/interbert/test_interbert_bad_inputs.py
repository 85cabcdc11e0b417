"""Catalogue of bad inputs to InterBERT's model classes and config: each raises a ValueError/TypeError naming the
argument (or config field) with the expected and the actual value; never an error from inside torch, never a silent
result (shape/type checks in `forward`, value checks in `validate_input_values` while `config.check_input_values`)."""

import pytest
import torch

from hf_vl import InterBertConfig, InterBertForQuestionAnswering, InterBertModel
from test_modeling_interbert import InterBertModelTester, random_boxes

TESTER = InterBertModelTester(None)
CONFIG, GOOD = TESTER.prepare_config_and_inputs_for_common()  # batch 3, 7 tokens, 5 regions of 16 features, 5-d boxes
MODELS = {}


def model(cls):
    if cls not in MODELS:
        torch.manual_seed(0)
        MODELS[cls] = cls(CONFIG).eval()
    return MODELS[cls]


def with_(cls=InterBertModel, **changes):
    def call():
        inputs = dict(GOOD)
        for key, value in changes.items():
            if value is None:
                inputs.pop(key)
            else:
                inputs[key] = value(inputs) if callable(value) else value
        return model(cls)(**inputs)

    return call


ONES = torch.ones(3, 40, dtype=torch.long)
CASES = [
    ("float input_ids", with_(input_ids=lambda i: i["input_ids"].float()), TypeError, r"`input_ids` must be an integer"),
    ("input_ids beyond the vocabulary", with_(input_ids=lambda i: i["input_ids"] + 200), ValueError,
     r"`input_ids` must be in \[0, 99\), got values in \[\d+, \d+\]"),
    ("text longer than the position table", with_(input_ids=torch.randint(3, 99, (3, 40)), attention_mask=ONES),
     ValueError, r"`input_ids` has 40 tokens but the position table holds 32"),
    ("attention_mask of another shape", with_(attention_mask=torch.ones(3, 5, dtype=torch.long)), ValueError,
     r"`attention_mask` shape \(3, 5\) must equal `input_ids` shape \(3, 7\)"),
    ("attention_mask holding 2s", with_(attention_mask=lambda i: i["attention_mask"] * 2), ValueError,
     r"`attention_mask` must hold only 0 and 1"),
    ("region features of another size", with_(visual_feats=torch.randn(3, 5, 15)), ValueError,
     r"`visual_feats` must be \(batch_size=3, num_regions, visual_feat_dim=16\), got shape \(3, 5, 15\)"),
    ("4-d boxes for a 5-d config", with_(visual_pos=torch.rand(3, 5, 4)), ValueError,
     r"`visual_pos` must be .* = \(3, 5, 5\), got shape \(3, 5, 4\)"),
    ("fewer boxes than regions", with_(visual_pos=random_boxes(3, 4)), ValueError, r"`visual_pos` must be .*\(3, 4, 5\)"),
    ("regions and text batch sizes differ",
     with_(visual_feats=torch.randn(2, 5, 16), visual_pos=random_boxes(2, 5),
           visual_attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError, r"`visual_feats` must be \(batch_size=3"),
    ("boxes outside [0, 1]", with_(visual_pos=lambda i: i["visual_pos"] + 2), ValueError,
     r"`visual_pos` must hold boxes normalised to \[0, 1\]"),
    ("inverted boxes", with_(visual_pos=lambda i: i["visual_pos"][..., [2, 3, 0, 1, 4]]), ValueError,
     r"`visual_pos` boxes must be \(x1, y1, x2, y2, \.\.\.\) with x1 <= x2"),
    ("NaN region features", with_(visual_feats=lambda i: i["visual_feats"] * float("nan")), ValueError,
     r"`visual_feats` contains NaN"),
    ("integer region features", with_(visual_feats=lambda i: i["visual_feats"].long()), TypeError,
     r"`visual_feats` must be a floating point tensor"),
    ("visual_attention_mask of another shape", with_(visual_attention_mask=torch.ones(3, 4, dtype=torch.long)),
     ValueError, r"`visual_attention_mask` must be \(batch_size, num_regions\) = \(3, 5\), got shape \(3, 4\)"),
    ("visual_attention_mask holding 2s", with_(visual_attention_mask=lambda i: i["visual_attention_mask"] * 2),
     ValueError, r"`visual_attention_mask` must hold only 0 and 1"),
    ("an example without regions",
     with_(visual_attention_mask=lambda i: i["visual_attention_mask"] * torch.tensor([[1], [0], [1]])), ValueError,
     r"`visual_attention_mask` rows \[1\] are all zeros"),
    ("features without boxes", with_(visual_pos=None), ValueError, r"`visual_feats` needs `visual_pos`"),
    ("VQA without regions",
     with_(InterBertForQuestionAnswering, visual_feats=None, visual_pos=None, visual_attention_mask=None), ValueError,
     r"needs regions: `visual_feats` is None"),
    ("VQA labels of another width", with_(InterBertForQuestionAnswering, labels=torch.rand(3, 7)), ValueError,
     r"`labels` must be soft scores of shape .* = \(3, 5\), got \(3, 7\)"),
    ("VQA labels above 1", with_(InterBertForQuestionAnswering, labels=torch.full((3, 5), 3.0)), ValueError,
     r"`labels` must be soft VQA scores in \[0, 1\]"),
    ("misspelt keyword argument", with_(InterBertForQuestionAnswering, label=torch.rand(3, 5)), TypeError,
     r"'label' \(did you mean 'labels'\?\)"),
]
CONFIG_CASES = [
    ("hidden_size not a multiple of the heads", dict(hidden_size=30, num_attention_heads=4),
     r"`hidden_size` \(30\) must be a multiple of `num_attention_heads` \(4\)"),
    ("misspelt activation", dict(hidden_act="gelux"), r"`hidden_act` must name a transformers activation"),
    ("no labels", dict(num_labels=0), r"`num_labels` must be a positive int"),
    ("3-d boxes", dict(visual_pos_dim=3), r"`visual_pos_dim` must be 4 \(x1, y1, x2, y2\) or 5"),
]


@pytest.mark.parametrize("name, call, error, match", CASES, ids=[case[0] for case in CASES])
def test_model_rejects_bad_input_naming_the_argument(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("name, fields, match", CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_config_rejects_bad_values_naming_the_field(name, fields, match):
    with pytest.raises(ValueError, match=match):
        InterBertConfig(**fields)


def test_the_good_inputs_pass():
    outputs = model(InterBertModel)(**GOOD)
    assert outputs.pooler_output.isfinite().all() and outputs.pooler_output.shape[0] == 3
