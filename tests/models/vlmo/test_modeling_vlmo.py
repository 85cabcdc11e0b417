"""VLMo: the shared common model checks for every class, and VLMo's own behaviour (hard routing of the modality
experts, relative position bias layouts, dual-encoder embeddings, pre-training objectives, errors)."""

import math
import re
import unittest

import pytest
import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
)

from hf_vl import (
    AutoModelForImagesAndTextClassification,
    VlmoConfig,
    VlmoForImageAndTextRetrieval,
    VlmoForImageClassification,
    VlmoForImagesAndTextClassification,
    VlmoForMaskedLM,
    VlmoForPreTraining,
    VlmoForQuestionAnswering,
    VlmoModel,
)
from hf_vl.models.vlmo.modeling_vlmo import (
    fusion_relative_position_index,
    image_relative_position_index,
    text_relative_position_index,
)
from test_modeling_common import ModelTesterMixin, PaddedIndex

ALL_VLMO_CLASSES = (
    VlmoModel,
    VlmoForMaskedLM,
    VlmoForImageClassification,
    VlmoForPreTraining,
    VlmoForQuestionAnswering,
    VlmoForImagesAndTextClassification,
    VlmoForImageAndTextRetrieval,
)
VLMO_AUTO_CLASSES = {
    VlmoForMaskedLM: AutoModelForMaskedLM,
    VlmoForImageClassification: AutoModelForImageClassification,
    VlmoForPreTraining: AutoModelForPreTraining,
    VlmoForQuestionAnswering: AutoModelForVisualQuestionAnswering,
    VlmoForImagesAndTextClassification: AutoModelForImagesAndTextClassification,
    VlmoForImageAndTextRetrieval: AutoModelForZeroShotImageClassification,
}
BASE_PLUS_CLASSES = (VlmoModel, VlmoForMaskedLM, VlmoForImageClassification, VlmoForImageAndTextRetrieval)
TEXT_ONLY = (VlmoForMaskedLM,)
IMAGE_ONLY = (VlmoForImageClassification,)

# Parameters a head's loss legitimately does not reach (hard routing: a text-only head never runs V-FFN ...).
_ITC = r"vlmo\.(itc_(text|image)_proj|logit_scale)"
_TOP_LAYER_MODALITY_EXPERTS = r"layers\.1\.(text|image)_expert"  # the fusion encoder runs VL-FFN there (tiny: 2 layers)
NO_GRAD_ALLOWED = {
    VlmoForMaskedLM: (_ITC, r"image_embeddings", r"image_expert", r"vl_expert", r"vlmo\.pooler"),
    VlmoForImageClassification: (_ITC, r"text_embeddings", r"text_expert", r"vl_expert", r"vlmo\.pooler"),
    VlmoForPreTraining: (),
    VlmoForQuestionAnswering: (_ITC, _TOP_LAYER_MODALITY_EXPERTS),
    VlmoForImagesAndTextClassification: (_ITC, _TOP_LAYER_MODALITY_EXPERTS),
    VlmoForImageAndTextRetrieval: (r"vl_expert", r"vlmo\.pooler"),
}


class VlmoModelTester:
    def __init__(self, parent, use_relative_position_bias=True):
        self.parent = parent
        self.batch_size = 3
        self.text_length = 7
        self.hidden_size = 32
        self.num_heads = 4
        self.num_layers = 2
        self.image_size = 32
        self.patch_size = 16
        self.image_length = (self.image_size // self.patch_size) ** 2 + 1
        self.num_labels = 5
        self.vocab_size = 99
        self.use_relative_position_bias = use_relative_position_bias

    def get_config(self):
        return VlmoConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=37, vl_ffn_start_layer=1,
            image_size=self.image_size, patch_size=self.patch_size, max_text_len=12, max_relative_text_length=12,
            use_relative_position_bias=self.use_relative_position_bias,
            use_absolute_position_embeddings=not self.use_relative_position_bias,
            layer_scale_init_value=0.1 if self.use_relative_position_bias else None,
            drop_path_rate=0.0, embedding_dropout_prob=0.0, modality_type_vocab_size=3, num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        torch.manual_seed(0)
        input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.text_length))
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, -2:] = 0  # a padded row
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}

    def prepare_labels(self, model_class, inputs_dict):
        batch = self.batch_size
        if model_class in (VlmoForMaskedLM, VlmoForPreTraining):
            mlm_labels = torch.full_like(inputs_dict["input_ids"], -100)
            mlm_labels[:, 1] = inputs_dict["input_ids"][:, 1]
            if model_class is VlmoForMaskedLM:
                return {"labels": mlm_labels}
            mlm_input_ids = inputs_dict["input_ids"].clone()
            mlm_input_ids[:, 1] = 2  # [MASK]
            return {"return_loss": True, "mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels}
        if model_class is VlmoForQuestionAnswering:
            labels = torch.zeros(batch, self.num_labels)
            labels[torch.arange(batch), torch.tensor([0, 2, 4])] = torch.tensor([1.0, 0.3, 0.6])
            return {"labels": labels}
        if model_class in (VlmoForImageClassification, VlmoForImagesAndTextClassification):
            return {"labels": torch.tensor([0, 1, 4])}
        if model_class is VlmoForImageAndTextRetrieval:
            return {"return_loss": True}
        return {}

    def _sequence(self, model_class):
        if model_class in TEXT_ONLY:
            return self.text_length
        if model_class in IMAGE_ONLY:
            return self.image_length
        return self.text_length + self.image_length

    def _batch(self, model_class):
        return (self.batch_size, 2) if model_class is VlmoForImagesAndTextClassification else (self.batch_size,)

    def expected_hidden_states(self, config, inputs_dict, model_class=None):
        count = self.num_layers + 1
        if model_class is VlmoForImageAndTextRetrieval:
            return {
                "text_hidden_states": (count, (self.batch_size, self.text_length, self.hidden_size)),
                "image_hidden_states": (count, (self.batch_size, self.image_length, self.hidden_size)),
            }
        return {"hidden_states": (count, (*self._batch(model_class), self._sequence(model_class), self.hidden_size))}

    def expected_attentions(self, config, inputs_dict, model_class=None):
        count, heads = self.num_layers, self.num_heads
        if model_class is VlmoForImageAndTextRetrieval:
            text, image = self.text_length, self.image_length
            return {
                "text_attentions": (count, (self.batch_size, heads, text, text)),
                "image_attentions": (count, (self.batch_size, heads, image, image)),
            }
        length = self._sequence(model_class)
        return {"attentions": (count, (*self._batch(model_class), heads, length, length))}

    def pad_inputs(self, inputs_dict, extra=3):
        padded = dict(inputs_dict)
        pad_ids = torch.zeros((self.batch_size, extra), dtype=torch.long)
        padded["input_ids"] = torch.cat([inputs_dict["input_ids"], pad_ids], dim=1)
        padded["attention_mask"] = torch.cat([inputs_dict["attention_mask"], pad_ids], dim=1)
        text = (slice(None), slice(0, self.text_length))
        keep = list(range(self.text_length))
        image = list(range(self.image_length))
        fused = PaddedIndex(
            (slice(None), torch.tensor(keep + [self.text_length + i for i in image])),
            (slice(None), torch.tensor(keep + [self.text_length + extra + i for i in image])),
        )
        compare = {"text_features": text, "mlm_logits": text, "logits": text, "last_hidden_state": fused}
        if not self.use_relative_position_bias:  # the Base-Plus test class runs no pre-training head
            compare.pop("mlm_logits")
        return padded, compare


class VlmoModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = ALL_VLMO_CLASSES
    auto_class_mapping = VLMO_AUTO_CLASSES
    custom_init_parameters = {r"logit_(vl_)?scale": math.log(1 / 0.07)}
    batching_equivalence_ignore = ("logits_per_image", "logits_per_text", "vl_logits_per_image", "vl_logits_per_text")

    def setUp(self):
        self.model_tester = VlmoModelTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if model_class in TEXT_ONLY:
            inputs_dict.pop("pixel_values")
        elif model_class in IMAGE_ONLY:
            inputs_dict.pop("input_ids")
            inputs_dict.pop("attention_mask")
        elif model_class is VlmoForImagesAndTextClassification:
            pixel_values = inputs_dict["pixel_values"]
            inputs_dict["pixel_values"] = torch.stack([pixel_values, pixel_values.flip(-1)], dim=1)
        return inputs_dict

    def test_all_parameters_receive_gradients(self):
        """Per head: only the parameters hard routing keeps away from its loss may miss a gradient."""
        _, inputs_dict = self._config_and_inputs()
        for model_class in self._classes_with_labels(inputs_dict):
            self.all_model_classes = (model_class,)
            self.parameters_without_grad_allowed = NO_GRAD_ALLOWED[model_class]
            super().test_all_parameters_receive_gradients()


class VlmoBasePlusLayoutTest(VlmoModelTest):
    """The VLMo-Base-Plus layout: absolute image and text positions, no relative position bias, no layer scale.
    The base model (fusion) and one head per other path (text-only, image-only, dual encoder) cover it."""

    all_model_classes = BASE_PLUS_CLASSES
    auto_class_mapping = {k: v for k, v in VLMO_AUTO_CLASSES.items() if k in BASE_PLUS_CLASSES}

    def setUp(self):
        self.model_tester = VlmoModelTester(self, use_relative_position_bias=False)


# ---------------------------------------------------------------------------------------------------- VLMo specifics


@pytest.fixture
def tiny():
    tester = VlmoModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    return tester, config, inputs


def _expert_calls(model):
    """Records which expert of which layer ran, and on how many tokens."""
    calls, hooks = [], []
    for index, layer in enumerate(model.layers):
        for name in ("text_expert", "image_expert", "vl_expert"):
            expert = getattr(layer, name)
            if expert is not None:
                hooks.append(expert.register_forward_hook(
                    lambda module, args, output, key=(index, name): calls.append((*key, args[0].shape[1]))
                ))
    return calls, hooks


@pytest.mark.parametrize("mode", ["image", "text", "fusion"])
def test_hard_routing_by_modality_and_depth(tiny, mode):
    tester, config, inputs = tiny
    config.num_hidden_layers, config.vl_ffn_start_layer = 3, 2
    model = VlmoModel(config).eval()
    calls, hooks = _expert_calls(model)
    kwargs = {"image": {"pixel_values": inputs["pixel_values"]},
              "text": {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
              "fusion": inputs}[mode]
    with torch.no_grad():
        model(**kwargs)
    for hook in hooks:
        hook.remove()
    text, image = tester.text_length, tester.image_length
    expected = {
        "image": [(i, "image_expert", image) for i in range(3)],
        "text": [(i, "text_expert", text) for i in range(3)],
        # bottom layers split the sequence (text tokens -> L-FFN, image tokens -> V-FFN); top layer VL-FFN on all
        "fusion": [(0, "text_expert", text), (0, "image_expert", image), (1, "text_expert", text),
                   (1, "image_expert", image), (2, "vl_expert", text + image)],
    }[mode]
    assert calls == expected


def test_vl_ffn_exists_only_in_the_top_layers(tiny):
    _, config, _ = tiny
    config.num_hidden_layers, config.vl_ffn_start_layer = 4, 3
    model = VlmoModel(config)
    assert [layer.vl_expert is not None for layer in model.layers] == [False, False, False, True]
    assert VlmoConfig().vl_ffn_start_layer == 10 and VlmoConfig.large().vl_ffn_start_layer == 21


def test_fusion_split_uses_each_tokens_own_expert(tiny):
    """In a bottom layer, perturbing the V-FFN must change only what image tokens get from the FFN."""
    _, config, inputs = tiny
    model = VlmoModel(config).eval()
    layer = model.layers[0]
    hidden = torch.randn(3, 7 + 5, 32)
    with torch.no_grad():
        before, _ = layer(hidden, None, "vl", 7)
        layer.image_expert.fc2.bias.add_(1.0)
        after, _ = layer(hidden, None, "vl", 7)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert (before[:, 7:] - after[:, 7:]).abs().min() > 0.01


def test_dual_encoder_embeddings_are_normalised_and_scored_with_the_temperature(tiny):
    _, config, inputs = tiny
    model = VlmoForImageAndTextRetrieval(config).eval()
    with torch.no_grad():
        out = model(**inputs, return_loss=True)
        text = model.vlmo.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        image = model.vlmo.get_image_features(inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds, text)
    torch.testing.assert_close(out.logits_per_image, model.vlmo.logit_scale.exp() * image @ text.t())
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.t())
    targets = torch.arange(3)
    expected = (torch.nn.functional.cross_entropy(out.logits_per_image, targets)
                + torch.nn.functional.cross_entropy(out.logits_per_text, targets)) / 2
    torch.testing.assert_close(out.loss, expected)
    # one image against several candidate texts (what the zero-shot pipeline does)
    with torch.no_grad():
        single = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:1])
    assert single.logits_per_image.shape == (1, 3)


def test_text_embedding_does_not_depend_on_the_image_and_vice_versa(tiny):
    _, config, inputs = tiny
    model = VlmoModel(config).eval()
    with torch.no_grad():
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        fused_a = model(**inputs).pooler_output
        fused_b = model(**{**inputs, "pixel_values": inputs["pixel_values"].flip(0)}).pooler_output
        text_again = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
    torch.testing.assert_close(text, text_again)
    assert not torch.allclose(fused_a, fused_b)  # the fusion encoder does look at the image


def test_relative_position_index_layouts():
    config = VlmoConfig(image_size=48, patch_size=16, max_relative_text_length=12, max_text_len=8)
    rows = config.num_relative_distances
    assert (config.num_image_relative_distances, rows) == (28, 54)
    image = image_relative_position_index(3)
    assert image.shape == (10, 10)
    # patch 0 = (0, 0), patch 4 = (1, 1): (0 - 1 + 2) * 5 + (0 - 1 + 2) = 6; reversed (1 - 0 + 2) * 5 + 3 = 18
    assert image[1, 5] == 6 and image[5, 1] == 18 and image[1, 1] == 12
    assert image[0, 3] == 25 and image[3, 0] == 26 and image[0, 0] == 27
    text = text_relative_position_index(8, config)
    # key minus query, offset by M (12) and the image rows (28)
    assert text[1, 4] == 3 + 12 + 28 and text[4, 1] == -3 + 12 + 28
    assert text[0, 5] == rows - 3 and text[5, 0] == rows - 2 and text[0, 0] == rows - 1
    fused = fusion_relative_position_index(text, image, config)
    assert fused.shape == (18, 18)
    assert bool((fused[:8, 8:] == 28).all()) and bool((fused[8:, :8] == 29).all())
    torch.testing.assert_close(fused[:8, :8], text)
    torch.testing.assert_close(fused[8:, 8:], image)
    # every index addresses a row of the table, and text/image/cross rows never collide
    assert int(fused.max()) < rows
    assert set(text[1:, 1:].flatten().tolist()).isdisjoint(set(image.flatten().tolist()) | {28, 29})


def test_each_layer_reads_its_own_columns_of_the_shared_table(tiny):
    _, config, _ = tiny
    model = VlmoModel(config)
    with torch.no_grad():
        model.relative_position_bias_table.copy_(torch.arange(model.relative_position_bias_table.numel()).float()
                                                 .reshape(model.relative_position_bias_table.shape))
    index = model.position_index(4, with_image=False)
    bias = model.relative_position_bias(index)  # (layers, heads, 4, 4)
    table = model.relative_position_bias_table
    heads = config.num_attention_heads
    for layer in range(config.num_hidden_layers):
        for head in range(heads):
            torch.testing.assert_close(bias[layer, head], table[index, layer * heads + head])


def test_relative_position_bias_changes_attention_and_text_positions_are_not_absolute(tiny):
    _, config, inputs = tiny
    model = VlmoModel(config).eval()
    assert model.text_embeddings.position_embeddings is None  # relative bias: no absolute text positions
    with torch.no_grad():
        before = model(**inputs).pooler_output
        model.relative_position_bias_table.normal_(0, 1)
        after = model(**inputs).pooler_output
    assert not torch.allclose(before, after)


def test_pretraining_hard_negatives_come_from_the_similarities(tiny):
    _, config, inputs = tiny
    model = VlmoForPreTraining(config).eval()
    torch.manual_seed(0)
    out = model(**inputs, return_loss=True)
    assert out.itm_logits.shape == (9, 2) and out.itm_labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    # negatives never repeat the true pair
    logits = torch.tensor([[5.0, 0.0, -50.0], [0.0, 5.0, -50.0], [-50.0, 0.0, 5.0]])
    torch.manual_seed(0)
    (ids, pixels, _, _), labels = model._with_hard_negatives(
        inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"], None, logits
    )
    # text 0's negative image: images 1 or 2 with softmax weights, image 2 ~ e^-50: always image 1
    torch.testing.assert_close(pixels[3], inputs["pixel_values"][1])
    torch.testing.assert_close(ids[6], inputs["input_ids"][1])  # image 0's negative text: text 1
    torch.testing.assert_close(pixels[8], inputs["pixel_values"][2])
    torch.testing.assert_close(ids[8], inputs["input_ids"][1])  # image 2's negative text: text 1 (text 0 ~ e^-55)
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_pretraining_loss_is_the_weighted_sum_of_the_objectives(tiny):
    tester, config, inputs = tiny
    model = VlmoForPreTraining(config).eval()
    labels = tester.prepare_labels(VlmoForPreTraining, inputs)
    torch.manual_seed(0)
    out = model(**inputs, **labels)
    torch.testing.assert_close(out.loss, out.itc_loss + out.itm_loss + 0.25 * out.mlm_loss)
    expected_mlm = torch.nn.functional.cross_entropy(out.mlm_logits[:, 1], inputs["input_ids"][:, 1])
    torch.testing.assert_close(out.mlm_loss, expected_mlm)
    only_mlm = model(**inputs, mlm_labels=labels["mlm_labels"], mlm_input_ids=labels["mlm_input_ids"])
    assert only_mlm.itc_loss is None and only_mlm.itm_loss is None
    torch.testing.assert_close(only_mlm.loss, 0.25 * only_mlm.mlm_loss)


def test_nlvr2_second_image_uses_modality_row_two(tiny):
    _, config, inputs = tiny
    model = VlmoForImagesAndTextClassification(config).eval()
    pixel_values = torch.stack([inputs["pixel_values"], inputs["pixel_values"]], dim=1)
    with torch.no_grad():
        out = model(**{**inputs, "pixel_values": pixel_values})
        first = model.vlmo(**inputs, image_token_type_idx=1).pooler_output
        second = model.vlmo(**inputs, image_token_type_idx=2).pooler_output
    torch.testing.assert_close(out.pooler_output, torch.cat([first, second], -1))
    assert not torch.allclose(first, second)
    config.modality_type_vocab_size = 2
    with pytest.raises(ValueError, match="modality_type_vocab_size"):
        VlmoForImagesAndTextClassification(config)


def test_vqa_loss_is_bce_times_num_answers(tiny):
    tester, config, inputs = tiny
    model = VlmoForQuestionAnswering(config).eval()
    labels = tester.prepare_labels(VlmoForQuestionAnswering, inputs)["labels"]
    out = model(**inputs, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels) * config.num_labels
    torch.testing.assert_close(out.loss, expected)


def test_image_classification_mean_pools_patch_tokens(tiny):
    _, config, inputs = tiny
    model = VlmoForImageClassification(config).eval()
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"]).logits
        tokens = model.vlmo(pixel_values=inputs["pixel_values"]).last_hidden_state
    torch.testing.assert_close(logits, model.classifier(model.fc_norm(tokens[:, 1:].mean(1))))


def test_layer_scale_multiplies_both_residual_branches(tiny):
    _, config, _ = tiny
    model = VlmoModel(config).eval()
    layer = model.layers[0]
    hidden = torch.randn(2, 5, 32)
    with torch.no_grad():
        layer.gamma_1.zero_()
        layer.gamma_2.zero_()
        out, _ = layer(hidden, None, "image", 0)
    torch.testing.assert_close(out, hidden)


def test_presets():
    large, plus = VlmoConfig.large(), VlmoConfig.base_plus()
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads) == (24, 1024, 16)
    assert large.num_hidden_layers - large.vl_ffn_start_layer == 3
    assert (plus.num_hidden_layers, plus.hidden_size, plus.num_attention_heads) == (24, 544, 16)
    assert plus.use_absolute_position_embeddings and not plus.use_relative_position_bias
    assert plus.layer_scale_init_value is None
    base = VlmoConfig()
    assert (base.num_hidden_layers, base.hidden_size, base.intermediate_size, base.max_text_len) == (12, 768, 3072, 40)
    assert (base.patch_size, base.image_size, base.vocab_size, base.layer_scale_init_value) == (16, 224, 30522, 0.1)
    assert base.num_hidden_layers - base.vl_ffn_start_layer == 2 and base.num_labels == 3129


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size"),
        ({"vl_ffn_start_layer": 13}, "vl_ffn_start_layer"),
        ({"image_size": 230}, "image_size"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"layer_scale_init_value": -1.0}, "layer_scale_init_value"),
        ({"modality_type_vocab_size": 1}, "modality_type_vocab_size"),
        ({"hidden_act": "nope"}, "hidden_act"),
        ({"max_text_len": 0}, "max_text_len"),
        ({"use_relative_position_bias": "yes"}, "use_relative_position_bias"),
        ({"num_labels": 0}, "num_labels"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VlmoConfig(**kwargs)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda i: i.update(pixel_values=torch.randn(3, 3, 48, 48)), ValueError, r"pixel_values` must be \(batch_size, 3, 32, 32\)"),
        (lambda i: i.update(pixel_values=torch.randn(2, 3, 32, 32)), ValueError, "batch sizes differ"),
        (lambda i: i.update(input_ids=torch.ones(3, 13, dtype=torch.long), attention_mask=None), ValueError,
         "13 tokens"),
        (lambda i: i.update(attention_mask=torch.ones(3, 5, dtype=torch.long)), ValueError, "attention_mask` shape"),
        (lambda i: i.update(attention_mask=torch.zeros(3, 7, dtype=torch.long)), ValueError, "empty text"),
        (lambda i: i.update(pixel_values=torch.full((3, 3, 32, 32), float("nan"))), ValueError, "NaN"),
        (lambda i: i.update(input_ids=torch.full((3, 7), 500)), ValueError, r"input_ids` must be in \[0, 99\)"),
        (lambda i: i.update(input_ids=torch.ones(3, 7)), TypeError, "integer tensor"),
        (lambda i: i.update(pixel_values=None, input_ids=None, attention_mask=None), ValueError, "got neither"),
        (lambda i: i.update(image_token_type_idx=3), ValueError, "image_token_type_idx"),
        (lambda i: i.update(pixel_valuez=i["pixel_values"]), TypeError, "did you mean 'pixel_values'"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, change, error, match):
    _, config, inputs = tiny
    model = VlmoModel(config)
    change(inputs)
    with pytest.raises(error, match=match):
        model(**inputs)


def test_heads_name_the_missing_modality(tiny):
    _, config, inputs = tiny
    with pytest.raises(ValueError, match="needs an image"):
        VlmoForQuestionAnswering(config)(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="needs text"):
        VlmoForPreTraining(config)(pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="at least 2"):
        VlmoForPreTraining(config)(**{k: v[:1] for k, v in inputs.items()}, return_loss=True)
    with pytest.raises(ValueError, match="as many texts as images"):
        VlmoForImageAndTextRetrieval(config)(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:1],
                                             return_loss=True)


def test_forward_compiles_fullgraph(tiny):
    _, config, inputs = tiny
    config.check_input_values = False
    model = VlmoModel(config).eval()
    with torch.no_grad():
        expected = model(**inputs).pooler_output
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        actual = compiled(**inputs).pooler_output
    torch.testing.assert_close(actual, expected)


def test_lora_targets_the_fused_attention_projection(tiny):
    from peft import LoraConfig, get_peft_model

    _, config, inputs = tiny
    model = VlmoForQuestionAnswering(config).eval()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["qkv", "proj"], init_lora_weights=False))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any(re.search(r"layers\.0\.attention\.qkv\.lora_A", n) for n in names)
    with torch.no_grad():
        with peft_model.disable_adapter():
            plain = peft_model(**inputs).logits
        adapted = peft_model(**inputs).logits
    assert not torch.allclose(plain, adapted)  # the adapter on the fused qkv is really applied


def test_resize_image_size_for_base_plus_absolute_positions():
    tester = VlmoModelTester(None, use_relative_position_bias=False)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    model = VlmoModel(config).eval()
    cls_row = model.image_embeddings.position_embeddings.data[:, 0].clone()
    model.resize_image_size(48)
    assert model.image_embeddings.position_embeddings.shape == (1, 10, 32) and model.config.image_size == 48
    torch.testing.assert_close(model.image_embeddings.position_embeddings.data[:, 0], cls_row)
    with torch.no_grad():
        assert model(pixel_values=torch.randn(2, 3, 48, 48)).last_hidden_state.shape == (2, 10, 32)
    with pytest.raises(ValueError, match="image_size"):
        model.resize_image_size(50)


@pytest.mark.parametrize("stage", ["text", "image"])
def test_stagewise_pretraining_trains_only_the_stage_parameters(tiny, stage, tmp_path):
    """Stage 2 (text): self-attention and V-FFN frozen, only L-FFN (and text embeddings) learn, with the Trainer."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    tester, config, inputs = tiny
    model_class = VlmoForMaskedLM if stage == "text" else VlmoForImageClassification
    model = model_class(config)
    trainable = model.set_pretraining_stage(stage)
    if stage == "text":
        assert all(n.startswith(("vlmo.text_embeddings.", "mlm_score.")) or ".text_expert." in n for n in trainable)
        assert "vlmo.layers.0.attention.qkv.weight" not in trainable
        columns = {"input_ids": inputs["input_ids"].tolist(), "labels": inputs["input_ids"].tolist()}
    else:
        assert "vlmo.layers.0.attention.qkv.weight" in trainable and "vlmo.layers.0.image_expert.fc1.weight" in trainable
        assert not any(".text_expert." in n or ".vl_expert." in n for n in trainable)
        columns = {"pixel_values": inputs["pixel_values"].tolist(), "labels": [0, 1, 2]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=3,
                             learning_rate=1e-2, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=Dataset.from_dict(columns).with_format("torch")).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= set(trainable)
    if stage == "text":
        assert any(".text_expert." in n for n in changed)
    model.set_pretraining_stage("vision_language")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="stage"):
        model.set_pretraining_stage("audio")


def test_text_side_from_pretrained_minilm():
    from transformers import AutoModel

    from hf_vl.training import local_pretrained_path

    path = local_pretrained_path("minilm")
    bert = AutoModel.from_pretrained(path).eval()
    model = VlmoForQuestionAnswering.from_text_pretrained(path, image_size=32, num_labels=4).eval()
    vlmo = model.vlmo
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vl_ffn_start_layer) == (384, 6, 4)
    torch.testing.assert_close(vlmo.text_embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(vlmo.layers[3].text_expert.fc1.weight, bert.encoder.layer[3].intermediate.dense.weight)
    torch.testing.assert_close(vlmo.layers[5].vl_expert.fc2.weight, bert.encoder.layer[5].output.dense.weight)
    torch.testing.assert_close(vlmo.layers[2].layernorm_before.weight, bert.encoder.layer[1].output.LayerNorm.weight)
    # the fused attention (k bias dropped) computes exactly BERT's attention output projection
    hidden = torch.randn(2, 6, 384)
    with torch.no_grad():
        bert_attention = bert.encoder.layer[0].attention
        context = bert_attention.self(hidden)[0]
        expected = bert_attention.output.dense(context)
        actual, _ = vlmo.layers[0].attention(hidden)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[101, 2054, 3609, 102]]), pixel_values=torch.randn(1, 3, 32, 32)).logits
    assert logits.shape == (1, 4)
    # the copied weights are reported (a smaller learning rate for them: hf_vl.training.create_vl_optimizer); the
    # vision side, the V-FFN / VL-FFN copies that must learn vision, layer scale and the heads are new
    from hf_vl.training import pretrained_parameter_names, vl_parameter_groups

    pretrained = pretrained_parameter_names(model)
    assert "vlmo.text_embeddings.word_embeddings.weight" in pretrained and "vlmo.layers.0.attention.qkv.weight" in pretrained
    assert "vlmo.layers.5.text_expert.fc1.weight" in pretrained and "vlmo.norm.weight" in pretrained
    for new in ("vlmo.image_embeddings.patch_embeddings.weight", "vlmo.layers.0.image_expert.fc1.weight",
                "vlmo.layers.5.vl_expert.fc1.weight", "vlmo.layers.0.gamma_1", "classifier.0.weight"):
        assert new not in pretrained, new
    groups = {group["name"]: group["lr"] for group in vl_parameter_groups(model, 1e-4, 5.0)}
    assert groups["pretrained"] == 1e-4 and groups["new"] == 5e-4
    assert VlmoForQuestionAnswering(model.config).vlmo.pretrained_parameter_names() == set()  # built from a config


@pytest.mark.parametrize("model_class", [VlmoForMaskedLM, VlmoForPreTraining])
def test_resize_token_embeddings_resizes_the_untied_mlm_decoder_and_bias(tiny, model_class):
    _, config, inputs = tiny
    model = model_class(config).eval()
    old_bias = model.mlm_score.bias.detach().clone()
    model.resize_token_embeddings(120)
    assert model.vlmo.text_embeddings.word_embeddings.weight.shape[0] == 120 and model.config.vocab_size == 120
    assert model.mlm_score.decoder.out_features == 120 and model.mlm_score.bias.shape == (120,)
    torch.testing.assert_close(model.mlm_score.bias[:99], old_bias)
    kwargs = {k: v for k, v in inputs.items() if model_class is VlmoForPreTraining or k != "pixel_values"}
    kwargs["input_ids"] = kwargs["input_ids"].masked_fill(kwargs["input_ids"] == 5, 110)  # a new token
    with torch.no_grad():
        out = model(**kwargs)
    logits = out.logits if model_class is VlmoForMaskedLM else out.mlm_logits
    assert logits.shape[-1] == 120


def test_pretraining_accepts_the_masked_lm_collator_layout():
    """hf_vl's whole-word MLM collator gives masked `input_ids` + `mlm_labels`: VLMo restores the clean text for ITC
    and ITM from the labels, exactly as if clean `input_ids` and `mlm_input_ids` had been passed."""
    from transformers import AutoTokenizer

    from hf_vl.data import DataCollatorForVLMaskedLM
    from hf_vl.training import local_pretrained_path

    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))
    collator = DataCollatorForVLMaskedLM(tokenizer, whole_word_mask=True, mlm_probability=0.5, seed=0)
    captions = ["a red circle above a blue square", "two green triangles", "is there a yellow shape?"]
    features = [dict(tokenizer(c, padding="max_length", max_length=12), pixel_values=torch.randn(3, 32, 32))
                for c in captions]
    batch = collator(features)
    clean = torch.tensor([f["input_ids"] for f in features])
    assert (batch["mlm_labels"] != -100).any() and not torch.equal(batch["input_ids"], clean)
    torch.testing.assert_close(torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"]), clean)
    torch.manual_seed(0)
    config = VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_relative_text_length=12)
    model = VlmoForPreTraining(config).eval()
    common = {key: batch[key] for key in ("attention_mask", "token_type_ids", "pixel_values")}
    with torch.no_grad():
        collated = model(input_ids=batch["input_ids"], mlm_labels=batch["mlm_labels"], return_loss=True, **common)
        explicit = model(input_ids=clean, mlm_input_ids=batch["input_ids"], mlm_labels=batch["mlm_labels"],
                         return_loss=True, **common)
        unmasked = model(input_ids=clean, mlm_input_ids=clean, mlm_labels=batch["mlm_labels"], **common)
    for name in ("loss", "itc_loss", "itm_loss", "mlm_loss", "logits_per_image", "itm_logits", "mlm_logits"):
        torch.testing.assert_close(getattr(collated, name), getattr(explicit, name), msg=name)
    assert not torch.allclose(unmasked.mlm_logits, explicit.mlm_logits)  # the masked text does reach MLM


def test_retrieval_scores_precomputed_embeddings_without_re_encoding(tiny):
    _, config, inputs = tiny
    model = VlmoForImageAndTextRetrieval(config).eval()
    with torch.no_grad():
        full = model(**inputs)
        gallery = model.vlmo.get_image_features(inputs["pixel_values"]).pooler_output
        calls, hooks = _expert_calls(model.vlmo)
        cached = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], image_embeds=gallery)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(cached.logits_per_image, full.logits_per_image)
    assert {name for _, name, _ in calls} == {"text_expert"}  # the images were not encoded again
    with pytest.raises(ValueError, match="exactly one of `pixel_values` and `image_embeds`"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], image_embeds=gallery)
    with pytest.raises(ValueError, match="text_embeds` must be"):
        model(text_embeds=torch.randn(3, 5), image_embeds=gallery)
