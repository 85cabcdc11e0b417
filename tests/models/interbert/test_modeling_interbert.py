"""InterBERT: common model checks for every class (regions + text, and text only), architecture specifics, heads,
losses, input errors."""

import copy
import unittest

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForVisualQuestionAnswering,
)

from hf_vl import (
    AutoModelForImageAndTextRetrieval,
    InterBertConfig,
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
    InterBertForPreTraining,
    InterBertForQuestionAnswering,
    InterBertForSequenceClassification,
    InterBertModel,
)
from test_modeling_common import ModelTesterMixin

REGION_CLASSES = (
    InterBertModel,
    InterBertForPreTraining,
    InterBertForQuestionAnswering,
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
)
AUTO_CLASSES = {
    InterBertForPreTraining: AutoModelForPreTraining,
    InterBertForQuestionAnswering: AutoModelForVisualQuestionAnswering,
    InterBertForImageAndTextRetrieval: AutoModelForImageAndTextRetrieval,
    InterBertForMultipleChoice: AutoModelForMultipleChoice,
}
NUM_CHOICES = 2


def random_boxes(batch_size, num_regions, pos_dim=5, generator=None):
    """Valid normalised boxes `(B, N, pos_dim)`: x1 <= x2, y1 <= y2 in [0, 1], area last for pos_dim 5."""
    corner = torch.rand(batch_size, num_regions, 2, generator=generator) * 0.5
    size = 0.1 + torch.rand(batch_size, num_regions, 2, generator=generator) * 0.4
    boxes = torch.cat([corner, corner + size], dim=-1)
    if pos_dim == 5:
        boxes = torch.cat([boxes, (size[..., :1] * size[..., 1:])], dim=-1)
    return boxes


class InterBertModelTester:
    def __init__(self, parent, text_only=False):
        self.parent = parent
        self.text_only = text_only
        self.batch_size = 3
        self.text_length = 7
        self.num_regions = 5
        self.hidden_size = 32
        self.num_heads = 4
        self.image_heads = 2
        self.num_interaction_layers = 2
        self.num_text_layers = 1
        self.num_image_layers = 2
        self.num_labels = 5
        self.vocab_size = 99

    def get_config(self, **overrides):
        kwargs = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_attention_heads=self.num_heads,
            intermediate_size=37, max_position_embeddings=32, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, num_interaction_layers=self.num_interaction_layers,
            num_text_extraction_layers=self.num_text_layers, num_image_extraction_layers=self.num_image_layers,
            image_num_attention_heads=self.image_heads, image_intermediate_size=24, image_hidden_dropout_prob=0.0,
            image_attention_probs_dropout_prob=0.0, visual_feat_dim=16, visual_pos_dim=5, num_region_classes=11,
            pooler_size=24, classifier_dropout_prob=0.0, num_labels=self.num_labels,
        )
        kwargs.update(overrides)
        return InterBertConfig(**kwargs)

    @property
    def image_length(self):
        return self.num_regions + 1  # + the prepended global region

    def prepare_config_and_inputs_for_common(self):
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.text_length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, -2:] = 0
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not self.text_only:
            visual_attention_mask = torch.ones(self.batch_size, self.num_regions, dtype=torch.long)
            visual_attention_mask[2, -2:] = 0
            inputs.update(
                visual_feats=torch.randn(self.batch_size, self.num_regions, 16, generator=generator),
                visual_pos=random_boxes(self.batch_size, self.num_regions, generator=generator),
                visual_attention_mask=visual_attention_mask,
            )
        return self.get_config(), inputs

    def prepare_labels(self, model_class, inputs_dict):
        batch = self.batch_size
        if model_class is InterBertForPreTraining:
            mlm_labels = torch.full_like(inputs_dict["input_ids"], -100)
            mlm_labels[:, 1] = inputs_dict["input_ids"][:, 1]
            mrm_labels = torch.full((batch, self.num_regions), -100, dtype=torch.long)
            mrm_labels[:, 0], mrm_labels[:, 2] = 3, 7
            return {"mlm_labels": mlm_labels, "mrm_labels": mrm_labels, "itm_labels": torch.tensor([1, 0, 1])}
        if model_class is InterBertForQuestionAnswering:
            labels = torch.zeros(batch, self.num_labels)
            labels[torch.arange(batch), torch.tensor([0, 2, 4])] = torch.tensor([1.0, 0.3, 0.6])
            return {"labels": labels}
        if model_class is InterBertForImageAndTextRetrieval:
            return {"labels": torch.tensor([1.0, 0.0, 1.0])}
        if model_class is InterBertForMultipleChoice:
            return {"labels": torch.tensor([0, 1, 1])}
        if model_class is InterBertForSequenceClassification:
            return {"labels": torch.tensor([0, 1, 4])}
        return {}

    def _batch(self, model_class):
        return (self.batch_size, NUM_CHOICES) if model_class is InterBertForMultipleChoice else (self.batch_size,)

    def expected_hidden_states(self, config, inputs_dict, model_class=None):
        batch, text, hidden = self._batch(model_class), self.text_length, self.hidden_size
        if self.text_only:
            return {
                "hidden_states": (self.num_interaction_layers + 1, (*batch, text, hidden)),
                "text_hidden_states": (self.num_text_layers + 1, (*batch, text, hidden)),
            }
        image = self.image_length
        return {
            "hidden_states": (self.num_interaction_layers + 1, (*batch, image + text, hidden)),
            "text_hidden_states": (self.num_text_layers + 1, (*batch, text, hidden)),
            "image_hidden_states": (self.num_image_layers + 1, (*batch, image, hidden)),
        }

    def expected_attentions(self, config, inputs_dict, model_class=None):
        batch, text = self._batch(model_class), self.text_length
        if self.text_only:
            return {
                "attentions": (self.num_interaction_layers, (*batch, self.num_heads, text, text)),
                "text_attentions": (self.num_text_layers, (*batch, self.num_heads, text, text)),
            }
        single = self.image_length + text
        return {
            "attentions": (self.num_interaction_layers, (*batch, self.num_heads, single, single)),
            "text_attentions": (self.num_text_layers, (*batch, self.num_heads, text, text)),
            "image_attentions": (self.num_image_layers, (*batch, self.image_heads, self.image_length, self.image_length)),
        }

    def pad_inputs(self, inputs_dict, extra=3):
        padded = dict(inputs_dict)
        pad_ids = torch.zeros((self.batch_size, extra), dtype=torch.long)
        padded["input_ids"] = torch.cat([inputs_dict["input_ids"], pad_ids], dim=1)
        padded["attention_mask"] = torch.cat([inputs_dict["attention_mask"], pad_ids], dim=1)
        text = (slice(None), slice(0, self.text_length))
        compare = {"text_features": text}
        if not self.text_only:
            compare["msm_logits"] = text
        return padded, compare


class InterBertModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = REGION_CLASSES
    auto_class_mapping = AUTO_CLASSES

    def setUp(self):
        self.model_tester = InterBertModelTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if model_class is InterBertForMultipleChoice:  # K texts per image: the text and a shifted copy
            ids, mask = inputs_dict["input_ids"], inputs_dict["attention_mask"]
            shifted = torch.where(mask.bool(), (ids + 1) % self.model_tester.vocab_size, ids)
            inputs_dict["input_ids"] = torch.stack([ids, shifted], dim=1)
            inputs_dict["attention_mask"] = torch.stack([mask, mask], dim=1)
        return inputs_dict


class InterBertTextOnlyTest(ModelTesterMixin, unittest.TestCase):
    """The text path (paper's single-modal experiment): no regions; the image parts get no gradient."""

    all_model_classes = (InterBertModel, InterBertForSequenceClassification)
    auto_class_mapping = {InterBertForSequenceClassification: AutoModelForSequenceClassification}
    parameters_without_grad_allowed = (
        r"^interbert\.region_embeddings\.", r"^interbert\.image_extraction_layers\.", r"^interbert\.image_pooler\.",
    )

    def setUp(self):
        self.model_tester = InterBertModelTester(self, text_only=True)


# ------------------------------------------------------------------------------------------------- InterBERT specifics


@pytest.fixture
def tiny():
    tester = InterBertModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    return tester, config, inputs


def test_global_region_is_the_mean_of_unmasked_regions(tiny):
    _, config, inputs = tiny
    model = InterBertModel(config).eval()
    feats, pos, mask = model.region_inputs(inputs["visual_feats"], inputs["visual_pos"], inputs["visual_attention_mask"])
    assert feats.shape == (3, 6, 16) and mask[:, 0].tolist() == [1, 1, 1]
    torch.testing.assert_close(feats[2, 0], inputs["visual_feats"][2, :3].mean(0))  # two padded regions left out
    torch.testing.assert_close(feats[0, 0], inputs["visual_feats"][0].mean(0))
    assert pos[:, 0].tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]] * 3
    # padded regions change nothing: neither the global feature nor any output
    changed = dict(inputs, visual_feats=inputs["visual_feats"].clone())
    changed["visual_feats"][2, -2:] = 100.0
    with torch.no_grad():
        before, after = model(**inputs), model(**changed)
    torch.testing.assert_close(before.pooler_output, after.pooler_output)
    torch.testing.assert_close(before.image_features[:, :4], after.image_features[:, :4])


def test_prepending_equals_precomputed_global_row(tiny):
    """`prepend_global_region=True` on N regions == `False` on the N + 1 rows with the global row built by hand."""
    _, config, inputs = tiny
    model = InterBertForPreTraining(config).eval()
    manual = copy.deepcopy(model)
    manual.config.prepend_global_region = False
    feats, pos, mask = model.interbert.region_inputs(
        inputs["visual_feats"], inputs["visual_pos"], inputs["visual_attention_mask"]
    )
    with torch.no_grad():
        auto = model(**inputs)
        by_hand = manual(**dict(inputs, visual_feats=feats, visual_pos=pos, visual_attention_mask=mask))
    torch.testing.assert_close(auto.itm_logits, by_hand.itm_logits)
    torch.testing.assert_close(auto.mrm_logits, by_hand.mrm_logits[:, 1:])  # scores for the input regions only


def test_interaction_is_single_stream_image_first(tiny):
    _, config, inputs = tiny
    model = InterBertModel(config).eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
        regions = model.region_inputs(inputs["visual_feats"], inputs["visual_pos"], inputs["visual_attention_mask"])
        image = model.region_embeddings(*regions[:2])
    torch.testing.assert_close(out.hidden_states[0][:, :6], image)  # regions first ...
    torch.testing.assert_close(out.hidden_states[0][:, 6:], model.embeddings(inputs["input_ids"]))  # ... then words
    # every query attends to both modalities in the interaction module; padded words and regions get no weight
    first = out.attentions[0]
    assert float(first[0, :, :, :6].sum()) > 0 and float(first[0, :, :, 6:].sum()) > 0
    assert float(first[1, :, :, -2:].abs().max()) == 0.0  # padded words of row 1
    assert float(first[2, :, :, 4:6].abs().max()) == 0.0  # padded regions of row 2


def test_extraction_streams_are_separate(tiny):
    """After the interaction module, each stream runs through its own layers with its own mask only."""
    _, config, inputs = tiny
    model = InterBertModel(config).eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        last = out.hidden_states[-1]
        torch.testing.assert_close(out.image_hidden_states[0], last[:, :6])
        torch.testing.assert_close(out.text_hidden_states[0], last[:, 6:])
        image = last[:, :6]
        _, _, mask = model.region_inputs(inputs["visual_feats"], inputs["visual_pos"], inputs["visual_attention_mask"])
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in model.image_extraction_layers:
            image = layer(image, additive)[0]
        torch.testing.assert_close(image, out.image_features)
        # changing the text extractor changes the text stream only
        for param in model.text_extraction_layers.parameters():
            param.add_(0.5)
        changed = model(**inputs)
    torch.testing.assert_close(changed.image_features, out.image_features)
    assert not torch.allclose(changed.text_features, out.text_features)
    assert len(model.image_extraction_layers[0].attention.self.query.weight) == 32
    assert model.image_extraction_layers[0].attention.self.num_attention_heads == 2


def test_fusion_is_product_of_poolers_and_sum_option(tiny):
    _, config, inputs = tiny
    model = InterBertModel(config).eval()
    with torch.no_grad():
        out = model(**inputs)
        torch.testing.assert_close(out.pooler_output, out.text_pooler_output * out.image_pooler_output)
        torch.testing.assert_close(out.text_pooler_output, torch.relu(model.text_pooler.dense(out.text_features[:, 0])))
        torch.testing.assert_close(out.image_pooler_output, torch.relu(model.image_pooler.dense(out.image_features[:, 0])))
        model.config.fusion_method = "sum"
        summed = model(**inputs)
    torch.testing.assert_close(summed.pooler_output, out.text_pooler_output + out.image_pooler_output)


def test_region_type_embedding_option(tiny):
    tester, _, inputs = tiny
    model = InterBertModel(tester.get_config(use_region_type_embedding=True)).eval()
    assert model.region_embeddings.type_embeddings.weight.shape == (1, 32)
    with torch.no_grad():
        before = model(**inputs).image_features
        model.region_embeddings.type_embeddings.weight.add_(torch.randn(1, 32))  # not a constant: LayerNorm removes it
        assert not torch.allclose(before, model(**inputs).image_features, atol=1e-3)


def test_text_only_path_matches_sequence_classification(tiny):
    _, config, inputs = tiny
    text = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    model = InterBertForSequenceClassification(config).eval()
    with torch.no_grad():
        out = model(**text)
        base = model.interbert(**text)
    assert base.image_features is None and base.image_pooler_output is None
    torch.testing.assert_close(out.logits, model.classifier(base.text_pooler_output))
    regression = InterBertForSequenceClassification(InterBertModelTester(None).get_config(num_labels=1))
    loss = regression(**text, labels=torch.tensor([0.5, -1.0, 2.0])).loss
    torch.testing.assert_close(loss, F.mse_loss(regression(**text).logits[:, 0], torch.tensor([0.5, -1.0, 2.0])))


def test_msm_decoder_is_tied_to_word_embeddings(tiny):
    _, config, _ = tiny
    model = InterBertForPreTraining(config)
    assert model.msm_head.decoder.weight is model.interbert.embeddings.word_embeddings.weight
    model.resize_token_embeddings(105)
    assert model.msm_head.decoder.weight.shape == (105, 32) and model.msm_head.bias.shape == (105,)
    assert model.msm_head.decoder.weight is model.interbert.embeddings.word_embeddings.weight


def test_pretraining_losses(tiny):
    tester, config, inputs = tiny
    model = InterBertForPreTraining(config).eval()
    labels = tester.prepare_labels(InterBertForPreTraining, inputs)
    with torch.no_grad():
        out = model(**inputs, **labels)
    msm = F.cross_entropy(out.msm_logits.flatten(0, 1), labels["mlm_labels"].flatten(), ignore_index=-100)
    mrm_labels = labels["mrm_labels"].clone()
    mrm_labels[1] = -100  # mismatched pair: its regions are not predicted
    mrm = F.cross_entropy(out.mrm_logits.flatten(0, 1), mrm_labels.flatten(), ignore_index=-100)
    itm = F.cross_entropy(out.itm_logits, labels["itm_labels"])
    torch.testing.assert_close(out.msm_loss, msm)
    torch.testing.assert_close(out.mrm_loss, mrm)
    torch.testing.assert_close(out.itm_loss, itm)
    torch.testing.assert_close(out.loss, msm + mrm + itm)
    weighted = InterBertForPreTraining(tester.get_config(mrm_loss_weight=0.5, itm_loss_weight=2.0)).eval()
    weighted.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(weighted(**inputs, **labels).loss, msm + 0.5 * mrm + 2.0 * itm)


def test_mrm_kl_loss_on_class_distributions(tiny):
    _, config, inputs = tiny
    model = InterBertForPreTraining(config).eval()
    targets = torch.softmax(torch.randn(3, 5, 11), -1)
    mrm_mask = torch.zeros(3, 5, dtype=torch.bool)
    mrm_mask[0, 1] = mrm_mask[2, 3] = mrm_mask[1, 0] = True
    with torch.no_grad():
        out = model(**inputs, mrm_labels=targets, mrm_mask=mrm_mask, itm_labels=torch.tensor([1, 0, 1]))
    log_probs = F.log_softmax(out.mrm_logits, -1)
    kl = [(targets[b, r] * (targets[b, r].log() - log_probs[b, r])).sum() for b, r in ((0, 1), (2, 3))]
    torch.testing.assert_close(out.mrm_loss, sum(kl) / 2)
    with pytest.raises(ValueError, match="mrm_mask"):
        model(**inputs, mrm_labels=targets)


def test_retrieval_ranking_and_multiple_choice_score_each_candidate(tiny):
    _, config, inputs = tiny
    regions = {k: inputs[k] for k in ("visual_feats", "visual_pos", "visual_attention_mask")}
    candidates = inputs["input_ids"][:, None].repeat(1, 4, 1)
    candidates[:, 1:, 1] = 5
    masks = inputs["attention_mask"][:, None].repeat(1, 4, 1)
    for model_class in (InterBertForImageAndTextRetrieval, InterBertForMultipleChoice):
        model = model_class(config).eval()
        out = model(input_ids=candidates, attention_mask=masks, **regions, labels=torch.tensor([0, 2, 3]))
        assert out.logits.shape == (3, 4) and torch.isfinite(out.loss)
        with torch.no_grad():
            pair = model.interbert(input_ids=candidates[:, 2], attention_mask=masks[:, 2], **regions).pooler_output
        head = model.rank_output if model_class is InterBertForImageAndTextRetrieval else model.classifier
        torch.testing.assert_close(out.logits[:, 2], head(pair)[:, 0])
        torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 2, 3])))


def test_vqa_loss_is_bce_times_num_answers(tiny):
    tester, config, inputs = tiny
    model = InterBertForQuestionAnswering(config).eval()
    labels = tester.prepare_labels(InterBertForQuestionAnswering, inputs)["labels"]
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels) * 5)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda i: i.pop("visual_pos"), ValueError, "visual_pos"),
        (lambda i: i.update(visual_feats=torch.randn(3, 5, 8)), ValueError, "visual_feat_dim=16"),
        (lambda i: i.update(visual_pos=torch.rand(3, 5, 4)), ValueError, "visual_pos"),
        (lambda i: i.update(visual_attention_mask=torch.ones(3, 4, dtype=torch.long)), ValueError, "visual_attention_mask"),
        (lambda i: i.update(attention_mask=torch.ones(3, 6, dtype=torch.long)), ValueError, "attention_mask"),
        (lambda i: i.update(input_ids=i["input_ids"].float()), TypeError, "input_ids"),
        (lambda i: i.update(visual_feats=i["visual_feats"].long()), TypeError, "visual_feats"),
        (lambda i: i.update(input_ids=i["input_ids"] + 200), ValueError, r"input_ids.*\[0, 99\)"),
        (lambda i: i.update(visual_pos=i["visual_pos"] * 3), ValueError, "normalised"),
        (lambda i: i["visual_feats"].__setitem__((0, 0, 0), float("nan")), ValueError, "NaN"),
        (lambda i: i.update(visual_attention_mask=torch.zeros(3, 5, dtype=torch.long)), ValueError, "all zeros"),
        (lambda i: i.update(input_ids=torch.zeros(3, 40, dtype=torch.long), attention_mask=None), ValueError, "position"),
        (lambda i: i.update(visual_fets=i["visual_feats"]), TypeError, "did you mean 'visual_feats'"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, change, error, match):
    _, config, inputs = tiny
    model = InterBertModel(config)
    inputs = {k: v.clone() for k, v in inputs.items()}
    change(inputs)
    with pytest.raises(error, match=match):
        model(**inputs)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("hidden_size", 30, "multiple of `num_attention_heads`"),
        ("image_num_attention_heads", 5, "image_num_attention_heads"),
        ("visual_pos_dim", 3, "visual_pos_dim"),
        ("fusion_method", "concat", "fusion_method"),
        ("pooler_act", "nope", "pooler_act"),
        ("mrm_iou_threshold", 1.5, "mrm_iou_threshold"),
        ("num_interaction_layers", 0, "num_interaction_layers"),
        ("num_text_extraction_layers", -1, "num_text_extraction_layers"),
        ("prepend_global_region", "yes", "prepend_global_region"),
        ("pad_token_id", 200, "pad_token_id"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        InterBertModelTester(None).get_config(**{field: value})


def test_config_defaults_are_the_released_base_model():
    config = InterBertConfig()
    assert (config.num_interaction_layers, config.num_text_extraction_layers, config.num_image_extraction_layers) == (6, 6, 6)
    assert (config.hidden_size, config.image_num_attention_heads, config.pooler_size) == (768, 8, 1024)
    assert (config.visual_feat_dim, config.visual_pos_dim, config.num_region_classes) == (2048, 5, 1601)
    assert config.num_hidden_layers == 6 and config.num_labels == 3129 and config.fusion_method == "mul"


def test_compiles_fullgraph(tiny):
    _, config, inputs = tiny
    model = InterBertForQuestionAnswering(config).eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(**inputs).logits, expected)


@pytest.mark.parametrize(
    "model_class, labels, match",
    [
        (InterBertForPreTraining, {"mlm_labels": torch.full((3, 7), 500)}, "mlm_labels"),
        (InterBertForPreTraining, {"mrm_labels": torch.full((3, 5), 11)}, "num_region_classes"),
        (InterBertForPreTraining, {"mrm_labels": torch.full((3, 4), 1)}, "mrm_labels"),
        (InterBertForPreTraining, {"itm_labels": torch.tensor([2, 0, 1])}, "itm_labels"),
        (InterBertForQuestionAnswering, {"labels": torch.full((3, 5), 2.0)}, r"\[0, 1\]"),
        (InterBertForQuestionAnswering, {"labels": torch.zeros(3, 4)}, "num_labels"),
        (InterBertForImageAndTextRetrieval, {"labels": torch.tensor([2.0, 0.0, 1.0])}, "1 \\(match\\)"),
        (InterBertForSequenceClassification, {"labels": torch.tensor([0, 1, 5])}, r"\[0, 5\)"),
    ],
)
def test_bad_labels_raise_clear_errors(tiny, model_class, labels, match):
    _, config, inputs = tiny
    if model_class is InterBertForSequenceClassification:
        inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with pytest.raises(ValueError, match=match):
        model_class(config)(**inputs, **labels)


def test_multiple_choice_needs_choices_and_valid_labels(tiny):
    _, config, inputs = tiny
    model = InterBertForMultipleChoice(config)
    with pytest.raises(ValueError, match="num_choices"):
        model(**inputs)
    choices = dict(inputs, input_ids=inputs["input_ids"][:, None].repeat(1, 2, 1),
                   attention_mask=inputs["attention_mask"][:, None].repeat(1, 2, 1))
    with pytest.raises(ValueError, match=r"correct choice in \[0, 2\)"):
        model(**choices, labels=torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="visual_feats"):
        model(**dict(choices, visual_feats=inputs["visual_feats"][:, None].repeat(1, 3, 1, 1)))
