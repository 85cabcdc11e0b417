"""Switch-BERT: common model checks for every class (switching on, and the plain single-stream path), the
Switch-Attention and Switch-Input Blocks (soft vs hard, top-K, ablations), heads, losses, input errors."""

import unittest

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

from hf_vl import (
    AutoModelForImageAndTextRetrieval,
    SwitchBertConfig,
    SwitchBertForImageAndTextRetrieval,
    SwitchBertForPreTraining,
    SwitchBertForQuestionAnswering,
    SwitchBertForReferringExpression,
    SwitchBertModel,
)
from hf_vl.models.switch_bert.modeling_switch_bert import (
    attention_mode_table,
    mode_coefficients,
    route,
    switch_attention_forward,
)
from test_modeling_common import ModelTesterMixin, PaddedIndex

ALL_CLASSES = (
    SwitchBertModel,
    SwitchBertForPreTraining,
    SwitchBertForQuestionAnswering,
    SwitchBertForImageAndTextRetrieval,
    SwitchBertForReferringExpression,
)
AUTO_CLASSES = {
    SwitchBertForPreTraining: AutoModelForPreTraining,
    SwitchBertForQuestionAnswering: AutoModelForVisualQuestionAnswering,
    SwitchBertForImageAndTextRetrieval: AutoModelForImageAndTextRetrieval,
}


def random_boxes(batch_size, num_regions, pos_dim=5, generator=None):
    """Valid normalised boxes `(B, N, pos_dim)`: x1 <= x2, y1 <= y2 in [0, 1], area last for pos_dim 5."""
    corner = torch.rand(batch_size, num_regions, 2, generator=generator) * 0.5
    size = 0.1 + torch.rand(batch_size, num_regions, 2, generator=generator) * 0.4
    boxes = torch.cat([corner, corner + size], dim=-1)
    if pos_dim == 5:
        boxes = torch.cat([boxes, (size[..., :1] * size[..., 1:])], dim=-1)
    return boxes


class SwitchBertModelTester:
    def __init__(self, parent, **config_overrides):
        self.parent = parent
        self.config_overrides = config_overrides
        self.batch_size = 3
        self.text_length = 7
        self.num_regions = 5
        self.hidden_size = 32
        self.num_heads = 4
        self.num_layers = 3
        self.num_labels = 5
        self.vocab_size = 99

    def get_config(self, **overrides):
        kwargs = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=37, max_position_embeddings=32,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, visual_feat_dim=16, visual_pos_dim=5,
            num_region_classes=11, pooler_size=24, qa_hidden_size=20, switcher_hidden_size=16,
            classifier_dropout_prob=0.0, num_labels=self.num_labels,
        )
        kwargs.update(self.config_overrides)
        kwargs.update(overrides)
        return SwitchBertConfig(**kwargs)

    @property
    def image_length(self):
        return self.num_regions + 1  # + the [IMG] token

    def prepare_config_and_inputs_for_common(self):
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.text_length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, -2:] = 0
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        visual_attention_mask = torch.ones(self.batch_size, self.num_regions, dtype=torch.long)
        visual_attention_mask[2, -2:] = 0
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "visual_feats": torch.randn(self.batch_size, self.num_regions, 16, generator=generator),
            "visual_pos": random_boxes(self.batch_size, self.num_regions, generator=generator),
            "visual_attention_mask": visual_attention_mask,
        }
        return self.get_config(), inputs

    def prepare_labels(self, model_class, inputs_dict):
        batch = self.batch_size
        if model_class is SwitchBertForPreTraining:
            mlm_labels = torch.full_like(inputs_dict["input_ids"], -100)
            mlm_labels[:, 1] = inputs_dict["input_ids"][:, 1]
            mrm_labels = torch.softmax(torch.randn(batch, self.num_regions, 11, generator=torch.Generator().manual_seed(1)), -1)
            mrm_mask = torch.zeros(batch, self.num_regions, dtype=torch.bool)
            mrm_mask[:, 0] = mrm_mask[0, 2] = True
            return {"mlm_labels": mlm_labels, "mrm_labels": mrm_labels, "mrm_mask": mrm_mask,
                    "itm_labels": torch.tensor([1, 0, 1])}
        if model_class is SwitchBertForQuestionAnswering:
            labels = torch.zeros(batch, self.num_labels)
            labels[torch.arange(batch), torch.tensor([0, 2, 4])] = torch.tensor([1.0, 0.3, 0.6])
            return {"labels": labels}
        if model_class is SwitchBertForImageAndTextRetrieval:
            return {"labels": torch.tensor([1.0, 0.0, 1.0])}
        if model_class is SwitchBertForReferringExpression:
            return {"labels": torch.rand(batch, self.num_regions, generator=torch.Generator().manual_seed(2))}
        return {}

    def expected_hidden_states(self, config, inputs_dict):
        length = self.text_length + self.image_length
        return {"hidden_states": (self.num_layers + 1, (self.batch_size, length, self.hidden_size))}

    def expected_attentions(self, config, inputs_dict):
        length = self.text_length + self.image_length
        return {"attentions": (self.num_layers, (self.batch_size, self.num_heads, length, length))}

    def pad_inputs(self, inputs_dict, extra=3):
        padded = dict(inputs_dict)
        pad_ids = torch.zeros((self.batch_size, extra), dtype=torch.long)
        padded["input_ids"] = torch.cat([inputs_dict["input_ids"], pad_ids], dim=1)
        padded["attention_mask"] = torch.cat([inputs_dict["attention_mask"], pad_ids], dim=1)
        text = (slice(None), slice(0, self.text_length))
        return padded, {"text_features": text, "mlm_logits": text}


class SwitchBertModelTest(ModelTesterMixin, unittest.TestCase):
    """Full Switch-BERT (SAB + SIB, soft top-4 routing in training, hard in eval)."""

    all_model_classes = ALL_CLASSES
    auto_class_mapping = AUTO_CLASSES
    # the referring-expression head reads the region states, not the poolers
    parameters_without_grad_allowed = (r"^switch_bert\.(text|image)_pooler\.",)
    # eval routing is an argmax over the switchers' logits: bf16 rounding flips near-ties of the random tiny model
    # (then a whole layer attends another way); the plain model below is compared with fp32
    bfloat16_close_to_float32 = False

    def setUp(self):
        self.model_tester = SwitchBertModelTester(self)


class SwitchBertPlainModelTest(ModelTesterMixin, unittest.TestCase):
    """SAB and SIB off, joint attention: the plain single-stream (UNITER) path, attention through sdpa / eager."""

    all_model_classes = (SwitchBertModel, SwitchBertForPreTraining, SwitchBertForQuestionAnswering)
    auto_class_mapping = {SwitchBertForQuestionAnswering: AutoModelForVisualQuestionAnswering}

    def setUp(self):
        self.model_tester = SwitchBertModelTester(self, use_switch_attention=False, use_switch_input=False)


# --------------------------------------------------------------------------------------------------- helpers


def _tester_model(model_class=SwitchBertModel, seed=0, **overrides):
    tester = SwitchBertModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    config = tester.get_config(**overrides)
    torch.manual_seed(seed)
    return model_class(config), inputs, tester


def _masked_softmax_mode(scores, key_valid, allowed):
    """Reference attention probabilities of one mode: softmax over the allowed, unpadded keys."""
    mask = allowed[None, None] & key_valid[:, None, None, :]
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


# ------------------------------------------------------------------------------------------- Switch-Attention


def test_mode_table_is_table_1():
    """Text queries / image queries: M0 self/self, M1 self/cross (everyone reads text), M2 cross/self (everyone reads
    the image), M3 joint."""
    table = attention_mode_table(2, 5, "cpu")  # 2 text tokens, 3 regions
    text, image = slice(0, 2), slice(2, 5)
    assert table[0][text, text].all() and not table[0][text, image].any() and table[0][image, image].all()
    assert not table[0][image, text].any()
    assert table[1][:, text].all() and not table[1][:, image].any()
    assert table[2][:, image].all() and not table[2][:, text].any()
    assert table[3].all()


def test_soft_switch_attention_equals_weighted_sum_of_the_four_masked_attentions():
    """One score matrix + block log-sum-exps reproduces sum_m w_m softmax(S + mask_m), for one-hot and mixed weights."""
    generator = torch.Generator().manual_seed(0)
    batch, heads, text_length, total, dim = 3, 2, 4, 9, 8
    query, key, value = (torch.randn(batch, heads, total, dim, generator=generator) for _ in range(3))
    key_valid = torch.ones(batch, total, dtype=torch.bool)
    key_valid[1, 2:4] = False  # padded text
    key_valid[2, 7:] = False  # padded regions
    table = attention_mode_table(text_length, total, "cpu")
    scores = query @ key.transpose(2, 3) * dim**-0.5
    module = torch.nn.Module().eval()
    weights_list = [F.one_hot(torch.tensor([m] * batch), 4).float() for m in range(4)]
    weights_list.append(torch.softmax(torch.randn(batch, 4, generator=generator), -1))
    for mode_weights in weights_list:
        coefficients = mode_coefficients(mode_weights, text_length, total)
        output, probs = switch_attention_forward(module, query, key, value, key_valid, table[0], coefficients,
                                                 scaling=dim**-0.5)
        expected = sum(mode_weights[:, m, None, None, None] * _masked_softmax_mode(scores, key_valid, table[m])
                       for m in range(4))
        torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(output, (expected @ value).transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_soft_routing_with_hard_weights_equals_hard_mask_path():
    """`switch_routing="soft"` in eval with a one-hot switcher runs the block-softmax mixture; it must equal the
    hard per-sample mask path (sdpa) for every mode."""
    model, inputs, _ = _tester_model(use_switch_input=False)
    model.eval()
    for mode in range(4):
        with torch.no_grad():
            for layer in model.layers:  # switcher logits: mode `mode` wins by a margin for every sample
                layer.attention_switcher.classifier.weight.zero_()
                layer.attention_switcher.classifier.bias.copy_(F.one_hot(torch.tensor(mode), 4).float() * 50.0)
            model.config.switch_routing = "hard"
            hard = model(**inputs)
            model.config.switch_routing = "soft"
            soft = model(**inputs)
        assert (hard.attention_modes == mode).all()
        torch.testing.assert_close(soft.text_features, hard.text_features, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(soft.image_features, hard.image_features, atol=1e-5, rtol=1e-4)


def test_hard_routing_picks_argmax_per_sample_and_mode_zero_keeps_modalities_apart():
    """M0 (self-self) has no interaction: with every layer in M0 the text output ignores the regions."""
    model, inputs, _ = _tester_model(use_switch_input=False)
    model.eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.attention_switcher.classifier.weight.zero_()
            layer.attention_switcher.classifier.bias.copy_(torch.tensor([9.0, 0.0, 0.0, 0.0]))
        outputs = model(**inputs)
        other = dict(inputs, visual_feats=inputs["visual_feats"] + 1.0)
        changed = model(**other)
    assert (outputs.attention_modes == 0).all()
    torch.testing.assert_close(outputs.text_features, changed.text_features)
    assert not torch.allclose(outputs.image_features, changed.image_features)
    assert torch.equal(outputs.attention_mode_weights, F.one_hot(outputs.attention_modes, 4).float())


def test_route_soft_hard_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 0.0, 0.0]])
    probs, weights, choice = route(logits, "auto", training=False, temperature=1.0, top_k=4)
    torch.testing.assert_close(probs, logits.softmax(-1))
    assert torch.equal(weights, F.one_hot(torch.tensor([0, 1]), 4).float()) and choice.tolist() == [0, 1]
    torch.manual_seed(0)
    _, soft, _ = route(logits, "auto", training=True, temperature=1.0, top_k=4)
    assert (soft > 0).all() and torch.allclose(soft.sum(-1), torch.ones(2))
    for top_k in (1, 2):
        torch.manual_seed(0)
        _, weights, choice = route(logits.requires_grad_(), "auto", training=True, temperature=0.5, top_k=top_k)
        assert ((weights > 0).sum(-1) == top_k).all(), weights
        torch.testing.assert_close(weights.sum(-1), torch.ones(2))
        # straight-through (K = 1) and renormalised top-K keep a gradient to the switcher logits
        (weights * torch.tensor([1.0, -2.0, 3.0, 0.5])).sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0
        logits.grad = None
    # a low temperature makes the Gumbel-softmax sample nearly one-hot
    torch.manual_seed(0)
    _, cold, _ = route(logits.detach(), "auto", training=True, temperature=0.01, top_k=4)
    assert (cold.max(-1).values > 0.99).all()


def test_routing_of_bf16_logits_runs_in_float32():
    """Near-equal switcher logits in a bf16 model: a bf16 softmax would round their probabilities into a tie (argmax ->
    the first mode); routing in float32 picks the largest logit, as the fp32 model does, and returns bf16 weights."""
    logits = torch.tensor([[0.0, 0.001, 0.003, 0.002]], dtype=torch.bfloat16)
    assert logits.softmax(-1).unique().numel() == 1  # the tie a bf16 softmax makes
    probs, weights, choice = route(logits, "auto", training=False, temperature=1.0, top_k=4)
    assert choice.tolist() == [2] and probs.dtype == weights.dtype == torch.bfloat16
    assert torch.equal(weights, F.one_hot(torch.tensor([2]), 4).to(torch.bfloat16))


def test_training_routing_is_soft_with_top_k_and_eval_is_hard():
    for top_k, expected_nonzero in ((4, 4), (2, 2), (1, 1)):
        model, inputs, tester = _tester_model(switch_top_k=top_k)
        model.train()
        torch.manual_seed(0)
        outputs = model(**inputs)
        nonzero = (outputs.attention_mode_weights > 0).sum(-1)
        assert (nonzero == expected_nonzero).all(), (top_k, nonzero)
        assert outputs.attention_mode_weights.shape == (tester.batch_size, tester.num_layers, 4)
        torch.testing.assert_close(outputs.attention_mode_probs.sum(-1), torch.ones(tester.batch_size, tester.num_layers))
    model.eval()
    with torch.no_grad():
        outputs = model(**inputs)
    assert torch.equal(outputs.attention_mode_weights, F.one_hot(outputs.attention_modes, 4).float())
    assert torch.equal(outputs.attention_modes, outputs.attention_mode_probs.argmax(-1))


def test_restricted_mode_set_never_routes_outside_it():
    model, inputs, _ = _tester_model(allowed_modes=[0, 1, 2])
    model.train()
    torch.manual_seed(0)
    outputs = model(**inputs)
    assert (outputs.attention_mode_weights[..., 3] == 0).all() and (outputs.attention_mode_probs[..., 3] == 0).all()
    model.eval()
    with torch.no_grad():
        assert (model(**inputs).attention_modes != 3).all()


def test_gumbel_temperature_is_read_every_step():
    model, inputs, _ = _tester_model(switch_top_k=4)
    model.train()
    model.set_gumbel_temperature(0.01)
    torch.manual_seed(0)
    cold = model(**inputs).attention_mode_weights
    assert (cold.max(-1).values > 0.95).all()
    with pytest.raises(ValueError, match="temperature"):
        model.set_gumbel_temperature(0.0)


# ----------------------------------------------------------------------------------------------- Switch-Input


def test_switch_input_reads_the_chosen_layer():
    """SIB one-hot on X_{l-2} in every layer >= 2: layer l's input is the output of layer l-2."""
    model, inputs, tester = _tester_model(use_switch_attention=False)
    model.eval()
    with torch.no_grad():
        for layer in model.layers[1:]:
            for switcher in (layer.text_input_switcher, layer.image_input_switcher):
                switcher.classifier.weight.zero_()
                switcher.classifier.bias.copy_(torch.tensor([0.0, 9.0]))
        outputs = model(**inputs, output_hidden_states=True)
        assert model.layers[0].text_input_switcher is None
        assert outputs.input_choices[:, 0].eq(0).all() and outputs.input_choices[:, 1:].eq(1).all()
        hidden = outputs.hidden_states
        # recompute layer 3 (index 2) on X_1 (= hidden[1]) with the SIB off: same output
        key_valid = torch.cat([inputs["attention_mask"].bool(), torch.ones(3, 1, dtype=torch.bool),
                               inputs["visual_attention_mask"].bool()], 1)
        table = attention_mode_table(tester.text_length, hidden[0].shape[1], "cpu")
        layer = model.layers[2]
        switchers = layer.text_input_switcher, layer.image_input_switcher
        layer.text_input_switcher = layer.image_input_switcher = None
        expected = layer(hidden[1], None, key_valid, table, tester.text_length)[0]
        layer.text_input_switcher, layer.image_input_switcher = switchers
    torch.testing.assert_close(hidden[3], expected)


def test_ablations_equal_the_plain_model_where_they_should():
    """SAB restricted to joint attention and SIB off, or SIB switchers that always pick X_{l-1}: the plain model."""
    plain, inputs, _ = _tester_model(use_switch_attention=False, use_switch_input=False)
    plain.eval()
    with torch.no_grad():
        expected = plain(**inputs)
        joint_only, _, _ = _tester_model(allowed_modes=[3], use_switch_input=False)
        joint_only.load_state_dict(plain.state_dict())
        assert torch.allclose(joint_only.eval()(**inputs).text_features, expected.text_features, atol=1e-6)
        with_sib, _, _ = _tester_model(use_switch_attention=False)
        missing = with_sib.load_state_dict(plain.state_dict(), strict=False).missing_keys
        assert missing and all("_input_switcher." in key for key in missing)
        for layer in with_sib.layers[1:]:
            for switcher in (layer.text_input_switcher, layer.image_input_switcher):
                switcher.classifier.weight.zero_()
                switcher.classifier.bias.copy_(torch.tensor([9.0, 0.0]))
        outputs = with_sib.eval()(**inputs)
    torch.testing.assert_close(outputs.text_features, expected.text_features)
    torch.testing.assert_close(outputs.pooler_output, expected.pooler_output)
    assert outputs.input_choices.eq(0).all() and expected.input_probs is None
    assert expected.attention_mode_probs is None and expected.attention_modes.eq(3).all()


def test_switchers_only_exist_where_configured():
    model, _, _ = _tester_model()
    names = {name.split(".", 2)[-1].split(".")[0] for name, _ in model.named_parameters() if "switcher" in name}
    assert names == {"attention_switcher", "text_input_switcher", "image_input_switcher"}
    assert model.layers[0].text_input_switcher is None and model.layers[1].text_input_switcher is not None
    plain, _, _ = _tester_model(use_switch_attention=False, use_switch_input=False)
    assert not any("switcher" in name for name, _ in plain.named_parameters())


# ------------------------------------------------------------------------------------------------------ heads


def test_pretraining_losses_per_objective():
    model, inputs, tester = _tester_model(SwitchBertForPreTraining)
    model.eval()
    labels = tester.prepare_labels(SwitchBertForPreTraining, inputs)
    with torch.no_grad():
        outputs = model(**inputs, **labels)
    mlm = F.cross_entropy(outputs.mlm_logits.flatten(0, 1), labels["mlm_labels"].flatten(), ignore_index=-100)
    itm = F.cross_entropy(outputs.itm_logits, labels["itm_labels"])
    counted = labels["mrm_mask"] & (labels["itm_labels"][:, None] == 1)  # matched pairs only
    kl = (labels["mrm_labels"] * (labels["mrm_labels"].log() - outputs.mrm_logits.log_softmax(-1))).sum(-1)
    torch.testing.assert_close(outputs.mlm_loss, mlm)
    torch.testing.assert_close(outputs.itm_loss, itm)
    torch.testing.assert_close(outputs.mrm_loss, kl[counted].mean())
    torch.testing.assert_close(outputs.loss, mlm + itm + kl[counted].mean())
    assert outputs.mrm_logits.shape == (tester.batch_size, tester.num_regions, 11)  # [IMG] token left out
    with torch.no_grad():
        only_itm = model(**inputs, itm_labels=labels["itm_labels"])
    assert only_itm.mlm_loss is None and only_itm.mrm_loss is None
    torch.testing.assert_close(only_itm.loss, itm)


def test_vqa_and_referring_expression_losses():
    model, inputs, tester = _tester_model(SwitchBertForQuestionAnswering)
    model.eval()
    labels = tester.prepare_labels(SwitchBertForQuestionAnswering, inputs)["labels"]
    with torch.no_grad():
        outputs = model(**inputs, labels=labels)
    torch.testing.assert_close(outputs.loss, F.binary_cross_entropy_with_logits(outputs.logits, labels) * 5)
    model, inputs, tester = _tester_model(SwitchBertForReferringExpression)
    model.eval()
    ious = tester.prepare_labels(SwitchBertForReferringExpression, inputs)["labels"]
    with torch.no_grad():
        outputs = model(**inputs, labels=ious)
    valid = inputs["visual_attention_mask"].bool()
    raw = outputs.logits.masked_fill(~valid, 0.0)
    expected = F.binary_cross_entropy_with_logits(raw, ious, reduction="none")[valid].mean()
    torch.testing.assert_close(outputs.loss, expected)
    assert outputs.logits.shape == (3, 5) and (outputs.logits[2, -2:] == torch.finfo(torch.float32).min).all()
    ious_hit = torch.zeros(3, 5)
    ious_hit[torch.arange(3), outputs.logits.argmax(-1)] = 0.7
    assert SwitchBertForReferringExpression.accuracy(outputs.logits, ious_hit) == 1.0
    assert SwitchBertForReferringExpression.accuracy(outputs.logits, ious_hit * 0.5) == 0.0


def test_retrieval_ranking_mode_scores_each_candidate():
    model, inputs, _ = _tester_model(SwitchBertForImageAndTextRetrieval)
    model.eval()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    shifted = torch.where(mask.bool(), (ids + 1) % 99, ids)
    ranking = dict(inputs, input_ids=torch.stack([ids, shifted], 1), attention_mask=torch.stack([mask, mask], 1))
    with torch.no_grad():
        outputs = model(**ranking, labels=torch.tensor([0, 1, 0]))
        pair = model(**inputs)
    assert outputs.logits.shape == (3, 2) and outputs.attention_modes.shape == (3, 2, 3)
    torch.testing.assert_close(outputs.logits[:, 0], pair.logits[:, 0])
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, torch.tensor([0, 1, 0])))


def test_a_few_steps_fit_a_tiny_vqa_batch():
    """Learning check: the routed model (soft top-2 routing) fits 3 examples; a broken gradient would not."""
    model, inputs, tester = _tester_model(SwitchBertForQuestionAnswering, switch_top_k=2)
    labels = F.one_hot(torch.tensor([0, 3, 1]), tester.num_labels).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(**inputs).logits.argmax(-1)
    assert predictions.tolist() == [0, 3, 1]


# ------------------------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_name_the_argument():
    model, inputs, _ = _tester_model(SwitchBertForQuestionAnswering)
    cases = [
        ({"visual_feats": None, "visual_pos": None}, ValueError, "visual_feats"),
        ({"visual_feats": inputs["visual_feats"][..., :8]}, ValueError, "visual_feat_dim"),
        ({"visual_pos": inputs["visual_pos"][..., :4]}, ValueError, "visual_pos"),
        ({"visual_feats": inputs["visual_feats"].long()}, TypeError, "visual_feats"),
        ({"visual_attention_mask": torch.ones(3, 4, dtype=torch.long)}, ValueError, "visual_attention_mask"),
        ({"attention_mask": torch.ones(3, 6, dtype=torch.long)}, ValueError, "attention_mask"),
        ({"input_ids": inputs["input_ids"].float()}, TypeError, "input_ids"),
        ({"input_ids": inputs["input_ids"] + 1000}, ValueError, "input_ids"),
        ({"visual_pos": inputs["visual_pos"] * 3}, ValueError, "visual_pos"),
        ({"labels": torch.ones(3, 4)}, ValueError, "labels"),
        ({"labels": torch.full((3, 5), 2.0)}, ValueError, "labels"),
        ({"label": torch.ones(3, 5)}, TypeError, "label"),
    ]
    for change, error, name in cases:
        with pytest.raises(error, match=name):
            model(**{**inputs, **change})
    pretraining, _, _ = _tester_model(SwitchBertForPreTraining)
    with pytest.raises(ValueError, match="mrm_mask"):
        pretraining(**inputs, mrm_labels=torch.rand(3, 5, 11))
    with pytest.raises(ValueError, match="itm_labels"):
        pretraining(**inputs, itm_labels=torch.tensor([2, 0, 1]))


@pytest.mark.parametrize(
    "field, value",
    [("allowed_modes", [4]), ("allowed_modes", []), ("allowed_modes", [1, 1]), ("switch_top_k", 0),
     ("gumbel_temperature", 0.0), ("switch_routing", "random"), ("fixed_attention_mode", 5),
     ("region_token_type_id", 2), ("visual_pos_dim", 3)],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SwitchBertConfig(**{field: value})
