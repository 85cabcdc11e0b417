"""METER: common model checks (tiny CLIP+BERT co-attention and tiny Swin+RoBERTa merged attention), heads, errors."""

import copy
import unittest

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

from hf_vl import (
    AutoModelForImageAndTextRetrieval,
    AutoModelForImagesAndTextClassification,
    AutoModelForImageTextClassification,
    MeterConfig,
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForImageTextClassification,
    MeterForPreTraining,
    MeterForQuestionAnswering,
    MeterModel,
)
from test_modeling_common import ModelTesterMixin

ALL_METER_CLASSES = (
    MeterModel,
    MeterForPreTraining,
    MeterForQuestionAnswering,
    MeterForImageTextClassification,
    MeterForImagesAndTextClassification,
    MeterForImageAndTextRetrieval,
)
METER_AUTO_CLASSES = {
    MeterForPreTraining: AutoModelForPreTraining,
    MeterForQuestionAnswering: AutoModelForVisualQuestionAnswering,
    MeterForImageTextClassification: AutoModelForImageTextClassification,
    MeterForImagesAndTextClassification: AutoModelForImagesAndTextClassification,
    MeterForImageAndTextRetrieval: AutoModelForImageAndTextRetrieval,
}

TINY_BERT = dict(
    model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)
TINY_ROBERTA = dict(TINY_BERT, model_type="roberta", pad_token_id=1, type_vocab_size=1, max_position_embeddings=66)
TINY_CLIP = dict(
    model_type="clip_vision_model", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    image_size=32, patch_size=8,
)
TINY_SWIN = dict(
    model_type="swin", image_size=32, patch_size=4, embed_dim=16, depths=[1, 1, 2], num_heads=[2, 2, 4], window_size=2,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
)


class MeterModelTester:
    def __init__(self, parent, text_config=TINY_BERT, vision_config=TINY_CLIP, fusion_type="co_attention"):
        self.parent = parent
        self.batch_size = 3
        self.text_length = 7
        self.text_config = text_config
        self.vision_config = vision_config
        self.fusion_type = fusion_type
        self.hidden_size = 32
        self.num_heads = 4
        self.num_fusion_layers = 2
        self.num_labels = 5
        image_size = vision_config["image_size"]
        if vision_config["model_type"] == "swin":
            self.image_length = (image_size // (vision_config["patch_size"] * 4)) ** 2
        else:
            self.image_length = (image_size // vision_config["patch_size"]) ** 2 + 1

    def get_config(self):
        return MeterConfig(
            text_config=copy.deepcopy(self.text_config),
            vision_config=copy.deepcopy(self.vision_config),
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_heads,
            intermediate_size=37,
            num_fusion_layers=self.num_fusion_layers,
            fusion_type=self.fusion_type,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            modality_type_vocab_size=3,
            num_labels=self.num_labels,
            mim_codebook_size=16,
        )

    @property
    def pad_token_id(self):
        return self.text_config.get("pad_token_id", 0)

    def prepare_config_and_inputs_for_common(self):
        torch.manual_seed(0)
        input_ids = torch.randint(3, self.text_config["vocab_size"], (self.batch_size, self.text_length))
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, -2:] = 0  # a padded row
        input_ids = input_ids.masked_fill(attention_mask == 0, self.pad_token_id)
        size = self.vision_config["image_size"]
        pixel_values = torch.randn(self.batch_size, 3, size, size)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        return self.get_config(), inputs

    def prepare_labels(self, model_class, inputs_dict):
        batch = self.batch_size
        if model_class is MeterForPreTraining:
            mlm_labels = torch.full_like(inputs_dict["input_ids"], -100)
            mlm_labels[:, 1] = inputs_dict["input_ids"][:, 1]
            model = MeterForPreTraining(self.get_config())
            bool_masked_pos = model.random_patch_mask(inputs_dict["pixel_values"], torch.Generator().manual_seed(0))
            codes = torch.randint(0, 16, bool_masked_pos.shape, generator=torch.Generator().manual_seed(1))
            return {
                "mlm_labels": mlm_labels,
                "itm_labels": torch.tensor([1, 0, 1]),
                "bool_masked_pos": bool_masked_pos,
                "mim_discrete_labels": codes.masked_fill(~bool_masked_pos, -100),
            }
        if model_class is MeterForQuestionAnswering:
            labels = torch.zeros(batch, self.num_labels)
            labels[torch.arange(batch), torch.tensor([0, 2, 4])] = torch.tensor([1.0, 0.3, 0.6])
            return {"labels": labels}
        if model_class in (MeterForImageTextClassification, MeterForImagesAndTextClassification):
            return {"labels": torch.tensor([0, 1, 4]) % self.num_labels}
        if model_class is MeterForImageAndTextRetrieval:
            return {"labels": torch.tensor([1.0, 0.0, 1.0])}
        return {}

    def _stream_shapes(self, model_class):
        stacked = model_class is MeterForImagesAndTextClassification
        batch = (self.batch_size, 2) if stacked else (self.batch_size,)
        return batch

    def expected_hidden_states(self, config, inputs_dict, model_class=None):
        batch = self._stream_shapes(model_class)
        count = self.num_fusion_layers + 1
        return {
            "hidden_states": (count, (*batch, self.text_length + self.image_length, self.hidden_size)),
            "text_hidden_states": (count, (*batch, self.text_length, self.hidden_size)),
            "image_hidden_states": (count, (*batch, self.image_length, self.hidden_size)),
        }

    def expected_attentions(self, config, inputs_dict, model_class=None):
        batch, heads = self._stream_shapes(model_class), self.num_heads
        text, image, count = self.text_length, self.image_length, self.num_fusion_layers
        if self.fusion_type == "merged_attention":
            return {"attentions": (count, (*batch, heads, text + image, text + image))}
        return {
            "attentions": (count, (*batch, heads, text + image, text + image)),
            "text_attentions": (count, (*batch, heads, text, text)),
            "image_attentions": (count, (*batch, heads, image, image)),
            "text_cross_attentions": (count, (*batch, heads, text, image)),
            "image_cross_attentions": (count, (*batch, heads, image, text)),
        }

    def pad_inputs(self, inputs_dict, extra=3):
        padded = dict(inputs_dict)
        pad_ids = torch.full((self.batch_size, extra), self.pad_token_id, dtype=torch.long)
        padded["input_ids"] = torch.cat([inputs_dict["input_ids"], pad_ids], dim=1)
        padded["attention_mask"] = torch.cat([inputs_dict["attention_mask"], torch.zeros_like(pad_ids)], dim=1)
        text = (slice(None), slice(0, self.text_length))
        return padded, {"text_features": text, "mlm_logits": text}


class MeterPixelTestMixin(ModelTesterMixin):
    all_model_classes = ALL_METER_CLASSES
    auto_class_mapping = METER_AUTO_CLASSES
    batching_equivalence_ignore = ("mim_logits",)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if model_class is MeterForImagesAndTextClassification:
            pixel_values = inputs_dict["pixel_values"]
            inputs_dict["pixel_values"] = torch.stack([pixel_values, pixel_values.flip(-1)], dim=1)  # a second image per sample
        return inputs_dict


class MeterCoAttentionClipBertTest(MeterPixelTestMixin, unittest.TestCase):
    def setUp(self):
        self.model_tester = MeterModelTester(self)


class MeterMergedAttentionSwinRobertaTest(MeterPixelTestMixin, unittest.TestCase):
    def setUp(self):
        self.model_tester = MeterModelTester(
            self, text_config=TINY_ROBERTA, vision_config=TINY_SWIN, fusion_type="merged_attention"
        )


# ---------------------------------------------------------------------------------------------------- METER specifics


@pytest.fixture
def tiny():
    tester = MeterModelTester(None)
    return tester, *tester.prepare_config_and_inputs_for_common()


def test_swin_uses_mean_pooling_and_clip_uses_cls():
    assert MeterModelTester(None, vision_config=TINY_SWIN).get_config().image_pooling == "mean"
    assert MeterModelTester(None).get_config().image_pooling == "cls"


def test_clip_tower_applies_final_layernorm_to_every_token(tiny):
    _, config, inputs = tiny
    model = MeterModel(config).eval()
    with torch.no_grad():
        raw = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        tokens = model.get_image_encoder_hidden_states(inputs["pixel_values"])
    torch.testing.assert_close(tokens, model.vision_model.post_layernorm(raw))


def test_co_attention_streams_are_updated_in_parallel(tiny):
    """Layer k of both streams reads the outputs of layer k-1 (METER), not the other stream's new output."""
    _, config, inputs = tiny
    model = MeterModel(config).eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        text0, image0 = out.text_hidden_states[0], out.image_hidden_states[0]
        ext_text = (1.0 - inputs["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        ext_image = torch.zeros(text0.shape[0], 1, 1, image0.shape[1])
        image1 = model.cross_modal_image_layers[0](image0, text0, ext_image, ext_text)[0]
    torch.testing.assert_close(image1, out.image_hidden_states[1])


def test_nlvr2_second_image_uses_modality_row_two(tiny):
    _, config, inputs = tiny
    model = MeterForImagesAndTextClassification(config).eval()
    pixel_values = torch.stack([inputs["pixel_values"], inputs["pixel_values"]], dim=1)
    with torch.no_grad():
        out = model(**{**inputs, "pixel_values": pixel_values})
        first = model.meter(**inputs, image_token_type_idx=1).pooler_output
        second = model.meter(**inputs, image_token_type_idx=2).pooler_output
    torch.testing.assert_close(out.pooler_output, torch.cat([first, second], -1))
    assert not torch.allclose(first, second)


def test_nlvr2_needs_three_modality_rows(tiny):
    _, config, _ = tiny
    config.modality_type_vocab_size = 2
    with pytest.raises(ValueError, match="modality_type_vocab_size"):
        MeterForImagesAndTextClassification(config)
    base = MeterModel(config)
    row1 = base.token_type_embeddings.weight[1].clone()
    base.resize_modality_type_embeddings(3)
    torch.testing.assert_close(base.token_type_embeddings.weight[2], row1)


def test_retrieval_ranking_mode_scores_every_candidate(tiny):
    _, config, inputs = tiny
    model = MeterForImageAndTextRetrieval(config).eval()
    candidates = inputs["input_ids"][:, None].repeat(1, 4, 1)
    candidates[:, 1:, 1] = 5
    masks = inputs["attention_mask"][:, None].repeat(1, 4, 1)
    out = model(input_ids=candidates, attention_mask=masks, pixel_values=inputs["pixel_values"], labels=torch.tensor([0, 0, 0]))
    assert out.logits.shape == (3, 4)
    with torch.no_grad():
        pair = model(input_ids=candidates[:, 2], attention_mask=masks[:, 2], pixel_values=inputs["pixel_values"])
    torch.testing.assert_close(out.logits[:, 2], pair.logits[:, 0])
    assert torch.isfinite(out.loss)


def test_vqa_loss_is_bce_times_num_answers(tiny):
    tester, config, inputs = tiny
    model = MeterForQuestionAnswering(config).eval()
    labels = tester.prepare_labels(MeterForQuestionAnswering, inputs)["labels"]
    out = model(**inputs, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels) * config.num_labels
    torch.testing.assert_close(out.loss, expected)


def test_mim_targets_are_the_masked_pixel_patches(tiny):
    _, config, inputs = tiny
    model = MeterForPreTraining(config)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, 5] = True
    masked, targets = model._mask_patches(inputs["pixel_values"], mask, model.image_token_stride())
    # patch 5 of a 4x4 grid of 8x8 patches = rows 8..15, cols 8..15
    assert torch.all(masked[:, :, 8:16, 8:16] == 0)
    torch.testing.assert_close(masked[:, :, :8], inputs["pixel_values"][:, :, :8])
    torch.testing.assert_close(targets[0], inputs["pixel_values"][0, :, 8:16, 8:16].reshape(-1))
    out = model(**inputs, bool_masked_pos=mask)
    assert out.mim_logits.shape == (3, 3) and torch.isfinite(out.mim_loss)


def test_mlm_loss_ignores_mismatched_pairs(tiny):
    _, config, inputs = tiny
    model = MeterForPreTraining(config).eval()
    mlm_labels = inputs["input_ids"].clone()
    out = model(**inputs, mlm_labels=mlm_labels, itm_labels=torch.tensor([1, 0, 0]))
    expected = torch.nn.functional.cross_entropy(out.mlm_logits[0], mlm_labels[0])
    torch.testing.assert_close(out.mlm_loss, expected)
    torch.testing.assert_close(out.loss, out.mlm_loss + out.itm_loss)


def test_position_embedding_interpolation_and_resize(tiny):
    _, config, inputs = tiny
    model = MeterModel(config).eval()
    big = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        interpolated = model(**{**inputs, "pixel_values": big})
    assert interpolated.image_features.shape[1] == (48 // 8) ** 2 + 1
    model.resize_vision_position_embeddings(48)
    assert model.vision_model.embeddings.position_embedding.weight.shape[0] == 37
    with torch.no_grad():
        resized = model(**{**inputs, "pixel_values": big}, interpolate_pos_encoding=False)
    torch.testing.assert_close(resized.pooler_output, interpolated.pooler_output, atol=1e-4, rtol=1e-4)


def test_pixel_mask_masks_padded_image_tokens(tiny):
    _, config, inputs = tiny
    model = MeterModel(config).eval()
    pixel_mask = torch.ones(3, 32, 32, dtype=torch.long)
    pixel_mask[0, :, 16:] = 0  # right half of image 0 is padding
    mask = model._image_token_mask(pixel_mask, torch.zeros(3, 17, 32))
    assert mask[0].tolist() == [1] + [1, 1, 0, 0] * 4
    assert mask[1].tolist() == [1] * 17


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda i: i.pop("pixel_values"), "pixel_values` is None"),
        (lambda i: i.pop("input_ids"), "input_ids` is None"),
        (lambda i: i.update(pixel_values=torch.randn(3, 1, 32, 32)), r"pixel_values` must be \(batch_size, 3"),
        (lambda i: i.update(pixel_values=torch.randn(2, 3, 32, 32)), "batch sizes differ"),
        (lambda i: i.update(pixel_values=torch.full((3, 3, 32, 32), float("nan"))), "NaN"),
        (lambda i: i.update(input_ids=torch.zeros(3, 0, dtype=torch.long), attention_mask=None), "empty"),
        (lambda i: i.update(attention_mask=torch.zeros(3, 7, dtype=torch.long)), "empty text"),
        (lambda i: i.update(attention_mask=torch.ones(3, 5, dtype=torch.long)), "attention_mask` shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, change, match):
    _, config, inputs = tiny
    model = MeterModel(config)
    change(inputs)
    with pytest.raises(ValueError, match=match):
        model(**inputs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"fusion_type": "bilinear"}, "fusion_type"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"modality_type_vocab_size": 1}, "modality_type_vocab_size"),
        ({"image_pooling": "max"}, "image_pooling"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MeterConfig(text_config=TINY_BERT, vision_config=TINY_CLIP, **kwargs)


def test_default_config_is_meter_clip16_roberta():
    config = MeterConfig()
    assert config.text_config.model_type == "roberta" and config.vision_config.model_type == "clip_vision_model"
    assert (config.vision_config.patch_size, config.vision_config.image_size) == (16, 288)
    assert config.vision_config.num_hidden_layers == 11  # METER drops CLIP's last block
    assert (config.hidden_size, config.num_attention_heads, config.num_fusion_layers) == (768, 12, 6)
    assert config.num_labels == 3129


def test_convolutional_vision_tower_feature_map_becomes_mean_pooled_tokens():
    resnet = dict(model_type="resnet", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    config = MeterConfig(text_config=TINY_BERT, vision_config=resnet, hidden_size=32, num_attention_heads=4,
                         intermediate_size=37, num_fusion_layers=1, num_labels=3)
    assert config.image_pooling == "mean" and config.vision_config.hidden_size == 32
    model = MeterForPreTraining(config).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feature_map = model.meter.vision_model(pixel_values=pixel_values).last_hidden_state  # (2, 32, 8, 8)
        tokens = model.meter.get_image_encoder_hidden_states(pixel_values)
    assert feature_map.shape == (2, 32, 8, 8) and tokens.shape == (2, 64, 32)
    torch.testing.assert_close(tokens[:, 9], feature_map[:, :, 1, 1])  # row-major token order
    assert model.image_token_stride() == 8
    out = model(input_ids=torch.randint(3, 99, (2, 5)), pixel_values=pixel_values,
                bool_masked_pos=model.random_patch_mask(pixel_values), itm_labels=torch.tensor([1, 0]))
    assert torch.isfinite(out.loss) and torch.isfinite(out.mim_loss)
