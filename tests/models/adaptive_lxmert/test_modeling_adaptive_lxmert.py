"""Adaptive LXMERT: common model checks (plain, and with span + entmax on), numerical parity with transformers'
LXMERT, heads' losses, input errors."""

import copy
import tempfile
import unittest

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    LxmertConfig,
    LxmertForPreTraining,
    LxmertForQuestionAnswering,
    LxmertModel,
)

from hf_vl import (
    AdaptiveLxmertConfig,
    AdaptiveLxmertForPreTraining,
    AdaptiveLxmertForQuestionAnswering,
    AdaptiveLxmertModel,
)
from test_modeling_common import ModelTesterMixin

ALL_CLASSES = (AdaptiveLxmertModel, AdaptiveLxmertForQuestionAnswering, AdaptiveLxmertForPreTraining)
AUTO_CLASSES = {
    AdaptiveLxmertForQuestionAnswering: AutoModelForVisualQuestionAnswering,
    AdaptiveLxmertForPreTraining: AutoModelForPreTraining,
}
TINY = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, intermediate_size=37, l_layers=2, x_layers=2,
            r_layers=1, visual_feat_dim=16, visual_pos_dim=4, num_qa_labels=5, num_object_labels=7, num_attr_labels=6,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32)


def random_boxes(batch_size, num_regions, generator=None):
    corner = torch.rand(batch_size, num_regions, 2, generator=generator) * 0.5
    size = 0.1 + torch.rand(batch_size, num_regions, 2, generator=generator) * 0.4
    return torch.cat([corner, corner + size], dim=-1)


def tiny_inputs(batch_size=3, text_length=7, num_regions=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, TINY["vocab_size"], (batch_size, text_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    visual_attention_mask = torch.ones(batch_size, num_regions, dtype=torch.long)
    visual_attention_mask[-1, -2:] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "visual_feats": torch.randn(batch_size, num_regions, TINY["visual_feat_dim"], generator=generator),
        "visual_pos": random_boxes(batch_size, num_regions, generator),
        "visual_attention_mask": visual_attention_mask,
    }


class AdaptiveLxmertModelTester:
    def __init__(self, parent, **mechanisms):
        self.parent = parent
        self.mechanisms = mechanisms
        self.batch_size, self.text_length, self.num_regions = 3, 7, 5

    def get_config(self, **overrides):
        return AdaptiveLxmertConfig(**{**TINY, **self.mechanisms, **overrides})

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), tiny_inputs(self.batch_size, self.text_length, self.num_regions)

    def prepare_labels(self, model_class, inputs_dict):
        batch, regions = self.batch_size, self.num_regions
        if model_class is AdaptiveLxmertForQuestionAnswering:
            labels = torch.zeros(batch, TINY["num_qa_labels"])
            labels[torch.arange(batch), torch.tensor([0, 2, 4])] = torch.tensor([1.0, 0.3, 0.6])
            return {"labels": labels}
        if model_class is AdaptiveLxmertForPreTraining:
            mlm = torch.full_like(inputs_dict["input_ids"], -100)
            mlm[:, 1] = inputs_dict["input_ids"][:, 1]
            mask_conf = torch.zeros(batch, regions)
            mask_conf[:, 1] = 1.0
            generator = torch.Generator().manual_seed(1)
            obj_labels = {
                "obj": (torch.randint(0, TINY["num_object_labels"], (batch, regions), generator=generator), mask_conf),
                "attr": (torch.randint(0, TINY["num_attr_labels"], (batch, regions), generator=generator), mask_conf),
                "feat": (torch.randn(batch, regions, TINY["visual_feat_dim"], generator=generator), mask_conf),
            }
            return {"labels": mlm, "obj_labels": obj_labels, "matched_label": torch.tensor([1, 0, 1]),
                    "ans": torch.tensor([0, 3, 1])}
        return {}

    def expected_hidden_states(self, config, inputs_dict):
        b, length, regions, hidden = self.batch_size, self.text_length, self.num_regions, config.hidden_size
        return {
            "language_hidden_states": (config.l_layers + config.x_layers, (b, length, hidden)),
            "vision_hidden_states": (config.r_layers + config.x_layers, (b, regions, hidden)),
        }

    def expected_attentions(self, config, inputs_dict):
        b, length, regions, heads = self.batch_size, self.text_length, self.num_regions, config.num_attention_heads
        return {
            "language_attentions": (config.l_layers, (b, heads, length, length)),
            "vision_attentions": (config.r_layers, (b, heads, regions, regions)),
            "cross_encoder_attentions": (config.x_layers, (b, heads, length, regions)),
        }

    def pad_inputs(self, inputs_dict, extra=3):
        padded = dict(inputs_dict)
        pad = torch.zeros((self.batch_size, extra), dtype=torch.long)
        padded["input_ids"] = torch.cat([inputs_dict["input_ids"], pad], dim=1)
        padded["attention_mask"] = torch.cat([inputs_dict["attention_mask"], pad], dim=1)
        text = (slice(None), slice(0, self.text_length))
        return padded, {"language_output": text, "prediction_logits": text}


# the last cross layer's vision self-attention / FFN feed only `vision_output`, which the QA head does not read
QA_UNUSED = (r"^lxmert\.encoder\.x_layers\.1\.visn_(self_att|inter|output)\.",)


class AdaptiveLxmertModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = ALL_CLASSES
    auto_class_mapping = AUTO_CLASSES
    parameters_without_grad_allowed = QA_UNUSED

    def setUp(self):
        self.model_tester = AdaptiveLxmertModelTester(self)


SPAN_ENTMAX = dict(adaptive_span=True, adaptive_span_init=0.3, adaptive_span_ramp=2.0, attention_entmax=True,
                   entmax_alpha_init=1.4)


class AdaptiveLxmertSpanEntmaxModelTest(ModelTesterMixin, unittest.TestCase):
    """Span + learnable-alpha entmax. The attention is eager whatever `attn_implementation` says, so the sdpa check
    holds by the fallback."""

    all_model_classes = ALL_CLASSES
    auto_class_mapping = AUTO_CLASSES
    parameters_without_grad_allowed = QA_UNUSED
    custom_init_parameters = {r"span_fraction$": 0.3, r"entmax_alpha$": 1.4}

    def setUp(self):
        self.model_tester = AdaptiveLxmertModelTester(self, **SPAN_ENTMAX)

    def test_padding_does_not_change_outputs(self):
        """Span distances count from the last key (as in the released code), so appended padding moves them: a span
        covering every key (fraction 1) makes padding irrelevant again; entmax gives padded keys exactly 0."""
        self.model_tester = AdaptiveLxmertModelTester(self, **{**SPAN_ENTMAX, "adaptive_span_init": 1.0})
        super().test_padding_does_not_change_outputs()

    def test_short_span_padding_moves_the_window(self):
        config, inputs = self._config_and_inputs()
        padded, _ = self.model_tester.pad_inputs(inputs, extra=3)
        model = AdaptiveLxmertModel(config).eval()
        with torch.no_grad():
            before, after = model(**inputs), model(**padded)
        assert not torch.allclose(before.language_output, after.language_output[:, :7], atol=1e-4)

    def test_mechanisms_present_and_eager(self):
        config, inputs = self._config_and_inputs()
        model = AdaptiveLxmertModel(config).eval()
        spans, alphas = model.learned_spans(), model.learned_alphas()
        # 2 language + 1 vision self-attentions, per cross layer: the shared cross-attention and two self-attentions
        assert len(spans) == len(alphas) == 2 + 1 + 2 * 3
        assert all(value.shape == (4,) for value in [*spans.values(), *alphas.values()])
        plain = AdaptiveLxmertModel(AdaptiveLxmertConfig(**TINY)).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        with torch.no_grad():
            assert not torch.allclose(model(**inputs).pooled_output, plain(**inputs).pooled_output, atol=1e-3)


class AdaptiveLxmertSpanModelTest(ModelTesterMixin, unittest.TestCase):
    """Span with softmax, distances counted from the first key: an additive log-mask over the kept keys, so
    `attn_implementation="sdpa"` runs it for real (the sdpa check compares two backends, not a fallback). With a
    `max_span` no longer than the texts (z = span * min(K, max_span) then ignores K), appended padding leaves every
    distance and span, hence every output, unchanged even for short spans."""

    all_model_classes = ALL_CLASSES
    auto_class_mapping = AUTO_CLASSES
    parameters_without_grad_allowed = QA_UNUSED
    custom_init_parameters = {r"span_fraction$": 0.3}

    def setUp(self):
        self.model_tester = AdaptiveLxmertModelTester(self, adaptive_span=True, adaptive_span_init=0.3,
                                                      adaptive_span_ramp=2.0, adaptive_span_anchor="first",
                                                      adaptive_span_max_span=6)


# ------------------------------------------------------------------------------------------------- parity with LXMERT


def _lxmert_pair(hf_class, ours_class, seed=0):
    torch.manual_seed(seed)
    hf = hf_class(LxmertConfig(**TINY)).eval()
    ours = ours_class(AdaptiveLxmertConfig(**LxmertConfig(**TINY).to_dict())).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)  # same key names, nothing renamed
    return hf, ours


def _max_diff(expected, actual):
    if isinstance(expected, (tuple, list)):
        assert len(expected) == len(actual)
        return max(_max_diff(e, a) for e, a in zip(expected, actual))
    return (expected - actual).abs().max().item()


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "hf_class, ours_class, fields",
    [
        (LxmertModel, AdaptiveLxmertModel, ("language_output", "vision_output", "pooled_output")),
        (LxmertForQuestionAnswering, AdaptiveLxmertForQuestionAnswering, ("question_answering_score",)),
        (LxmertForPreTraining, AdaptiveLxmertForPreTraining,
         ("prediction_logits", "cross_relationship_score", "question_answering_score")),
    ],
)
def test_matches_transformers_lxmert(hf_class, ours_class, fields, attn_implementation):
    hf, ours = _lxmert_pair(hf_class, ours_class)
    ours.config._attn_implementation = attn_implementation
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = hf(**inputs, output_hidden_states=True, output_attentions=attn_implementation == "eager")
        actual = ours(**inputs, output_hidden_states=True, output_attentions=attn_implementation == "eager")
    streams = ["language_hidden_states", "vision_hidden_states"]
    if attn_implementation == "eager":
        streams += ["language_attentions", "vision_attentions", "cross_encoder_attentions"]
    for field in (*fields, *streams):
        assert _max_diff(expected[field], actual[field]) <= 1e-5, field


def test_losses_match_transformers_lxmert():
    inputs = tiny_inputs()
    tester = AdaptiveLxmertModelTester(None)
    hf, ours = _lxmert_pair(LxmertForPreTraining, AdaptiveLxmertForPreTraining)
    labels = tester.prepare_labels(AdaptiveLxmertForPreTraining, inputs)
    with torch.no_grad():
        expected = hf(**inputs, **labels).loss
        actual = ours(**inputs, **labels)
    assert abs(expected.item() - actual.loss.item()) <= 1e-5
    parts = actual.masked_lm_loss + actual.matched_loss + actual.visual_loss + actual.answer_loss
    assert abs(parts.item() - actual.loss.item()) <= 1e-6 and actual.span_loss is None
    hf_qa, ours_qa = _lxmert_pair(LxmertForQuestionAnswering, AdaptiveLxmertForQuestionAnswering)
    answers = torch.tensor([0, 4, 2])  # class indices: cross-entropy, as transformers
    with torch.no_grad():
        assert abs(hf_qa(**inputs, labels=answers).loss.item() - ours_qa(**inputs, labels=answers).loss.item()) <= 1e-5


def test_loads_transformers_lxmert_folder_directly(tmp_path):
    hf, _ = _lxmert_pair(LxmertForQuestionAnswering, AdaptiveLxmertForQuestionAnswering, seed=3)
    hf.save_pretrained(tmp_path)
    model, info = AdaptiveLxmertForQuestionAnswering.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.model_type == "adaptive_lxmert"
    inputs = tiny_inputs()
    with torch.no_grad():
        assert _max_diff(hf(**inputs).question_answering_score, model.eval()(**inputs).question_answering_score) <= 1e-5


# ------------------------------------------------------------------------------------------------------------ heads


def test_qa_soft_scores_use_bce_times_answers():
    model = AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertConfig(**TINY)).eval()
    inputs = tiny_inputs()
    labels = AdaptiveLxmertModelTester(None).prepare_labels(AdaptiveLxmertForQuestionAnswering, inputs)["labels"]
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    expected = F.binary_cross_entropy_with_logits(out.question_answering_score, labels) * labels.shape[1]
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="labels"):
        model(**inputs, labels=torch.zeros(3, 2))


def test_span_loss_is_added_to_the_training_loss():
    config = AdaptiveLxmertConfig(**TINY, adaptive_span=True, adaptive_span_init=0.5, adaptive_span_loss_coeff=1e-3,
                                  adaptive_span_max_span=10)
    model = AdaptiveLxmertForQuestionAnswering(config).eval()
    inputs = tiny_inputs()
    answers = torch.tensor([0, 4, 2])
    with torch.no_grad():
        out = model(**inputs, labels=answers)
    # 9 attention modules, coeff * max_span * mean(span) each
    torch.testing.assert_close(out.span_loss, torch.tensor(9 * 1e-3 * 10 * 0.5))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.question_answering_score, answers) + out.span_loss)


def test_pretraining_heads_follow_the_config():
    config = AdaptiveLxmertConfig(**TINY, task_qa=False, visual_attr_loss=False)
    model = AdaptiveLxmertForPreTraining(config).eval()
    assert not hasattr(model, "answer_head") and set(model.obj_predict_head.decoder_dict) == {"obj", "feat"}
    assert model.cls.predictions.decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    inputs = tiny_inputs()
    with torch.no_grad():
        out = model(**inputs, matched_label=torch.tensor([1, 0, 1]))
    assert out.question_answering_score is None and out.loss is not None
    with pytest.raises(ValueError, match="obj_labels"):
        model(**inputs, obj_labels={"obj": (torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5))})


# ------------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(visual_feats=torch.randn(3, 5, 15)), ValueError, "visual_feats.*visual_feat_dim=16"),
        (dict(visual_pos=torch.rand(3, 5, 5)), ValueError, "visual_pos.*\\(3, 5, 4\\)"),
        (dict(visual_feats=torch.randn(2, 5, 16)), ValueError, "visual_feats` has 2 examples"),
        (dict(visual_attention_mask=torch.ones(3, 4, dtype=torch.long)), ValueError, "visual_attention_mask"),
        (dict(attention_mask=torch.ones(3, 6, dtype=torch.long)), ValueError, "attention_mask"),
        (dict(visual_pos=torch.full((3, 5, 4), 1.5)), ValueError, "visual_pos.*normalised"),
        (dict(visual_feats=torch.full((3, 5, 16), float("nan"))), ValueError, "visual_feats.*NaN"),
        (dict(visual_feats=None), ValueError, "visual_feats"),
        (dict(input_ids=torch.full((3, 7), 500)), ValueError, "input_ids"),
        (dict(visual_feats=torch.ones(3, 5, 16, dtype=torch.long)), TypeError, "visual_feats"),
        (dict(visual_attention_mask=torch.ones(3, 5)), TypeError, "visual_attention_mask"),
        (dict(labels_typo=torch.zeros(3)), TypeError, "labels_typo"),
    ],
)
def test_bad_inputs_name_the_argument(change, error, match):
    model = AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertConfig(**TINY)).eval()
    with pytest.raises(error, match=match):
        model(**{**tiny_inputs(), **change})


def test_unknown_kwarg_hint():
    model = AdaptiveLxmertModel(AdaptiveLxmertConfig(**TINY))
    with pytest.raises(TypeError, match="did you mean 'visual_pos'"):
        model(**{**tiny_inputs(), "visual_poss": None})


@pytest.mark.parametrize(
    "field, value",
    [("adaptive_span_ramp", 0.0), ("adaptive_span_anchor", "middle"), ("entmax_alpha_init", 1.0), ("entmax_alpha_init", 2.5), ("cross_layerdrop", 1.0),
     ("language_layerdrop", -0.1), ("num_attention_heads", 5), ("adaptive_span", "yes"), ("l_layers", -1)],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "num_attention_heads" else "hidden_size"):
        AdaptiveLxmertConfig(**{**TINY, field: value})


def test_config_accepts_lxmert_config_dict_and_round_trips():
    config = AdaptiveLxmertConfig(**LxmertConfig(**TINY).to_dict())
    assert config.model_type == "adaptive_lxmert" and config.num_hidden_layers == {"vision": 1, "cross_encoder": 2,
                                                                                    "language": 2}
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        assert AdaptiveLxmertConfig.from_pretrained(tmp).to_dict() == config.to_dict()
    assert not copy.deepcopy(config).modifies_attention


def test_resize_token_embeddings_resizes_the_tied_decoder_and_bias():
    model = AdaptiveLxmertForPreTraining(AdaptiveLxmertConfig(**TINY)).eval()
    model.resize_token_embeddings(105)
    assert model.cls.predictions.decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    assert model.cls.predictions.bias.shape == (105,) and model.config.vocab_size == 105
    with torch.no_grad():
        assert model(**tiny_inputs()).prediction_logits.shape == (3, 7, 105)
