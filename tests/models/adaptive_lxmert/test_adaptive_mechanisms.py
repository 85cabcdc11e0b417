"""Adaptive LXMERT's three mechanisms: alpha-entmax (against the `entmax` reference package), adaptive span (mask,
truncation, loss, clamping), LayerDrop (training / eval behaviour, pruning)."""

import math

import entmax
import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering, AdaptiveLxmertModel
from hf_vl.models.adaptive_lxmert.modeling_adaptive_lxmert import (
    _every_other,
    adaptive_attention_forward,
    entmax15,
    entmax_bisect_newton,
    sparsemax,
)
from hf_vl.training import AdaptiveLxmertClampCallback, AdaptiveLxmertStructureCallback

from test_modeling_adaptive_lxmert import TINY, tiny_inputs

MASK = torch.finfo(torch.float32).min


def _scores(shape=(2, 4, 6, 9), seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, generator=generator) * scale
    scores[0, :, :, -3:] += MASK  # masked keys, as the model's additive attention mask makes them
    return scores


# ------------------------------------------------------------------------------------------------------------ entmax


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learnable_alpha_entmax_matches_entmax_bisect_values_and_gradients(seed):
    scores = _scores(seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    alpha = torch.tensor([1.1, 1.3, 1.7, 2.0]).view(1, 4, 1, 1) if seed == 0 else \
        1.1 + 0.9 * torch.rand(1, 4, 1, 1, generator=generator)
    ours_x, ref_x = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    ours_a, ref_a = alpha.clone().requires_grad_(), alpha.clone().requires_grad_()
    ours = entmax_bisect_newton(ours_x, ours_a)  # default 2 bisection + 4 Newton steps
    reference = entmax.entmax_bisect(ref_x, ref_a.expand(2, 4, 6, 1), dim=-1)  # 50 bisection steps
    assert (ours - reference).abs().max() <= 1e-4
    assert (ours == 0).any() and torch.allclose(ours.sum(-1), torch.ones(2, 4, 6))
    upstream = torch.randn(ours.shape, generator=generator)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert (ours_x.grad - ref_x.grad).abs().max() <= 1e-4
    assert ((ours_a.grad - ref_a.grad).abs() / (1 + ref_a.grad.abs())).max() <= 1e-4


def test_entmax_near_alpha_one_matches_in_double():
    """At alpha = 1.01 the alpha gradient divides by (alpha - 1)^2 = 1e-4: in float32 both this implementation and
    `entmax_bisect` carry ~1e-3 relative error there, so the edge of the range is checked in float64."""
    scores = _scores().double().clamp(min=-1e4)
    alpha = torch.tensor([1.01, 1.02, 1.05, 1.1], dtype=torch.float64).view(1, 4, 1, 1)
    ours_x, ref_x = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    ours_a, ref_a = alpha.clone().requires_grad_(), alpha.clone().requires_grad_()
    ours = entmax_bisect_newton(ours_x, ours_a, 4, 10)
    reference = entmax.entmax_bisect(ref_x, ref_a.expand(2, 4, 6, 1), dim=-1, n_iter=100)
    assert (ours - reference).abs().max() <= 1e-9
    upstream = torch.randn(ours.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert (ours_x.grad - ref_x.grad).abs().max() <= 1e-8
    assert (ours_a.grad - ref_a.grad).abs().max() <= 1e-6


def test_entmax_gradients_pass_gradcheck_in_double():
    scores = torch.randn(2, 3, 7, dtype=torch.float64).requires_grad_()
    alpha = torch.tensor([1.2, 1.5, 1.9], dtype=torch.float64).view(1, 3, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, a: entmax_bisect_newton(x, a, 4, 8), (scores, alpha), atol=1e-6)


@pytest.mark.parametrize("ours, reference", [(entmax15, entmax.entmax15), (sparsemax, entmax.sparsemax)])
def test_exact_entmax15_and_sparsemax(ours, reference):
    scores = _scores()
    ours_x, ref_x = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    mine, theirs = ours(ours_x), reference(ref_x, dim=-1)
    assert (mine - theirs).abs().max() <= 1e-6
    upstream = torch.randn_like(mine)
    (mine * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    assert (ours_x.grad - ref_x.grad).abs().max() <= 1e-5


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_fixed_alpha_uses_the_exact_forms(alpha):
    config = AdaptiveLxmertConfig(**TINY, attention_entmax=True, entmax_learn_alpha=False, entmax_alpha_init=alpha)
    model = AdaptiveLxmertModel(config).eval()
    assert model.learned_alphas() == {} and not any("entmax_alpha" in n for n, _ in model.named_parameters())
    attention = model.encoder.layer[0].attention.self
    scores = _scores(shape=(3, 4, 7, 7))
    exact = entmax.entmax15(scores, dim=-1) if alpha == 1.5 else entmax.sparsemax(scores, dim=-1)
    assert (attention.normalize(scores) - exact).abs().max() <= 1e-6
    learnable = AdaptiveLxmertModel(AdaptiveLxmertConfig(**TINY, attention_entmax=True, entmax_alpha_init=alpha)).eval()
    learnable.load_state_dict(model.state_dict(), strict=False)
    inputs = tiny_inputs()
    with torch.no_grad():  # the bisection + Newton path agrees with the exact one
        assert (model(**inputs).pooled_output - learnable(**inputs).pooled_output).abs().max() <= 1e-5


def test_bfloat16_model_with_every_mechanism_stays_close_to_float32():
    config = AdaptiveLxmertConfig(**TINY, adaptive_span=True, adaptive_span_init=0.3, attention_entmax=True)
    model = AdaptiveLxmertModel(config).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        reference = model(**inputs).pooled_output
        half = model.to(torch.bfloat16)(**inputs).pooled_output
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - reference).abs().max() < 0.05


def test_alpha_is_clamped_at_forward_and_by_the_clamp_method():
    model = AdaptiveLxmertModel(AdaptiveLxmertConfig(**TINY, attention_entmax=True)).eval()
    attention = model.encoder.layer[0].attention.self
    with torch.no_grad():
        attention.entmax_alpha.copy_(torch.tensor([0.5, 1.5, 2.5, 1.0]))
    torch.testing.assert_close(attention.alpha(), torch.tensor([1.01, 1.5, 2.0, 1.01]))
    model.clamp_adaptive_parameters()
    torch.testing.assert_close(attention.entmax_alpha.detach(), torch.tensor([1.01, 1.5, 2.0, 1.01]))


# ------------------------------------------------------------------------------------------------------ adaptive span


def _span_model(span_init=0.3, ramp=2.0, entmax_on=False, max_span=1024, anchor="last"):
    config = AdaptiveLxmertConfig(**TINY, adaptive_span=True, adaptive_span_init=span_init, adaptive_span_ramp=ramp,
                                  attention_entmax=entmax_on, adaptive_span_max_span=max_span,
                                  adaptive_span_anchor=anchor)
    return AdaptiveLxmertModel(config).eval()


def test_span_mask_is_the_soft_ramp_over_distance_from_the_last_key():
    model = _span_model(ramp=2.0)
    attention = model.encoder.layer[0].attention.self
    with torch.no_grad():
        attention.span_fraction.copy_(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    keep, mask = attention.span_mask(8)
    z = torch.tensor([0.0, 2.0, 4.0, 8.0])  # span * K
    distance = torch.arange(7, -1, -1.0)  # key j sits K - 1 - j from the last key
    full = ((2.0 + z[:, None] - distance[None]) / 2.0).clamp(0, 1)  # (H, K)
    assert keep == 8  # head 3 sees every key
    torch.testing.assert_close(mask, full)
    with torch.no_grad():
        attention.span_fraction.copy_(torch.tensor([0.0, 0.25, 0.1, 0.0]))
    keep, mask = attention.span_mask(8)
    assert keep == math.ceil(2.0 + 2.0) == 4  # keys beyond z + R are never computed
    full = ((2.0 + torch.tensor([0.0, 2.0, 0.8, 0.0])[:, None] - distance[None]) / 2.0).clamp(0, 1)
    assert full[:, : 8 - keep].abs().max() == 0
    torch.testing.assert_close(mask, full[:, 8 - keep:])


def _reference_attention(query, key, value, mask, span_mask, normalise):
    """Untruncated reference: normalise over every key, multiply by the full span mask, renormalise."""
    scores = query @ key.transpose(2, 3) * query.shape[-1] ** -0.5 + mask
    probs = normalise(scores) * span_mask[None, :, None, :]
    probs = probs / (probs.sum(-1, keepdim=True) + 1e-8)
    return (probs @ value).transpose(1, 2), probs


@pytest.mark.parametrize("anchor", ["last", "first"])
@pytest.mark.parametrize("entmax_on, implementation", [(False, "eager"), (False, "sdpa"), (True, "eager")])
def test_truncated_span_attention_equals_the_full_computation(entmax_on, implementation, anchor):
    """Through the module (softmax + span: an additive log-mask over the kept keys, any backend; entmax: eager),
    against the paper's formula over every key: normalise, multiply by the span mask, renormalise."""
    model = _span_model(entmax_on=entmax_on, anchor=anchor)
    model.config._attn_implementation = implementation
    attention = model.encoder.layer[0].attention.self
    with torch.no_grad():
        attention.span_fraction.copy_(torch.tensor([0.05, 0.2, 0.1, 0.15]))
    generator = torch.Generator().manual_seed(0)
    hidden, context = torch.randn(2, 6, 32, generator=generator), torch.randn(2, 10, 32, generator=generator)
    mask = torch.zeros(2, 1, 1, 10)
    mask[1, ..., :2] = MASK  # padded keys at both ends: one end inside the span, the other outside
    mask[0, ..., -1] = MASK
    keep, span_mask = attention.span_mask(10)
    assert keep < 10
    outside = torch.zeros(4, 10 - keep)
    full_span = torch.cat([outside, span_mask] if anchor == "last" else [span_mask, outside], dim=1)
    heads = lambda t: t.view(2, -1, 4, 8).transpose(1, 2)  # noqa: E731  (B, L, H * D) -> (B, H, L, D)
    query, key, value = heads(attention.query(hidden)), heads(attention.key(context)), heads(attention.value(context))
    normalise = attention.normalize if entmax_on else (lambda scores: scores.softmax(-1))
    with torch.no_grad():
        expected, expected_probs = _reference_attention(query, key, value, mask, full_span, normalise)
        output, _ = attention(hidden, context, mask)
        _, probs = attention(hidden, context, mask, output_attentions=True)
    assert probs.shape == (2, 4, 6, 10)  # reported over every key
    torch.testing.assert_close(output, expected.reshape(2, 6, 32), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs, expected_probs, atol=1e-6, rtol=1e-5)
    if not entmax_on:  # the written-out eager form of the paper is the same function
        direct, _ = adaptive_attention_forward(attention, query, key, value, mask, attention.scaling)
        torch.testing.assert_close(direct.reshape(2, 6, 32), output, atol=1e-6, rtol=1e-5)


def test_span_gradients_are_finite_and_match_the_formula():
    model = _span_model(span_init=0.2)
    attention = model.encoder.layer[0].attention.self
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 32, generator=generator)
    mask = torch.zeros(2, 1, 1, 9)
    mask[1, ..., -2:] = MASK
    attention(hidden, hidden, mask)[0].square().sum().backward()
    via_mask = attention.span_fraction.grad.clone()
    assert torch.isfinite(via_mask).all() and via_mask.abs().sum() > 0
    attention.span_fraction.grad = None
    heads = lambda t: t.view(2, -1, 4, 8).transpose(1, 2)  # noqa: E731
    query, key, value = heads(attention.query(hidden)), heads(attention.key(hidden)), heads(attention.value(hidden))
    adaptive_attention_forward(attention, query, key, value, mask, attention.scaling)[0].square().sum().backward()
    torch.testing.assert_close(via_mask, attention.span_fraction.grad, atol=1e-5, rtol=1e-4)


def test_truncation_saves_attention_flops_and_spans_are_introspectable():
    model = _span_model(span_init=0.05, ramp=2.0)
    flops = model.attention_flops(text_length=20, num_regions=36)
    assert flops["effective"] < 0.5 * flops["dense"]
    full = _span_model(span_init=1.0).attention_flops(text_length=20, num_regions=36)
    assert full["effective"] == full["dense"]
    spans = model.learned_spans(num_keys=20)
    assert len(spans) == 9 and all(torch.allclose(v, torch.full((4,), 1.0)) for v in spans.values())


def test_first_key_anchor_counts_distances_from_the_first_key():
    attention = _span_model(ramp=2.0, anchor="first").encoder.layer[0].attention.self
    with torch.no_grad():
        attention.span_fraction.copy_(torch.tensor([0.0, 0.25, 0.1, 0.0]))
    keep, mask = attention.span_mask(8)
    assert keep == 4 and attention.kept_keys(8, keep) == slice(0, 4)
    distance = torch.arange(4.0)  # key j sits j from the first key
    torch.testing.assert_close(mask, ((2.0 + torch.tensor([0.0, 2.0, 0.8, 0.0])[:, None] - distance) / 2.0).clamp(0, 1))
    padded = attention.pad_to_all_keys(torch.ones(1, 4, 3, keep), 8)
    assert padded[..., :4].eq(1).all() and padded[..., 4:].eq(0).all()


def test_max_span_caps_the_span_in_keys():
    model = _span_model(span_init=1.0, ramp=2.0, max_span=3)
    keep, mask = model.encoder.layer[0].attention.self.span_mask(10)
    assert keep == 5  # z = 1.0 * min(10, 3) = 3 keys, + ramp 2
    torch.testing.assert_close(mask[0], torch.tensor([0.5, 1.0, 1.0, 1.0, 1.0]))  # distances 4, 3, 2, 1, 0


def test_span_outputs_do_not_depend_on_batch_position():
    """The released code's per-batch-row span makes row 0 alone differ from row 0 of a batch; per-head spans do not."""
    model = _span_model(span_init=0.2, entmax_on=True)
    inputs = tiny_inputs()
    with torch.no_grad():
        batched = model(**inputs).pooled_output
        alone = model(**{k: v[1:2] for k, v in inputs.items()}).pooled_output
    torch.testing.assert_close(batched[1:2], alone, atol=1e-6, rtol=1e-5)


def _trainer(model, callbacks, tmp_path):
    inputs = tiny_inputs(batch_size=4)
    labels = torch.tensor([0, 1, 2, 3])
    rows = [{**{k: v[i] for k, v in inputs.items()}, "labels": labels[i]} for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=0.5,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)


def test_clamp_callback_keeps_spans_and_alphas_valid_during_training(tmp_path):
    config = AdaptiveLxmertConfig(**TINY, adaptive_span=True, adaptive_span_init=0.98, attention_entmax=True,
                                  entmax_alpha_init=1.99, adaptive_span_loss_coeff=0.0)

    def spans_and_alphas(model):
        return torch.cat([*model.learned_spans().values()]), torch.cat(
            [m.entmax_alpha.detach() for m in model.modules() if hasattr(m, "entmax_alpha")])

    torch.manual_seed(0)
    free = AdaptiveLxmertForQuestionAnswering(config)
    clamped = AdaptiveLxmertForQuestionAnswering(config)
    clamped.load_state_dict(free.state_dict())
    _trainer(free, [], tmp_path / "free").train()
    raw_spans = torch.cat([m.span_fraction.detach() for m in free.modules() if hasattr(m, "span_fraction")])
    raw_alphas = spans_and_alphas(free)[1]
    assert raw_spans.max() > 1.0 or raw_spans.min() < 0.0 or raw_alphas.max() > 2.0  # lr 0.5 leaves the range
    recorder = AdaptiveLxmertStructureCallback(output_file=str(tmp_path / "structure.json"), every_n_steps=1)
    _trainer(clamped, [AdaptiveLxmertClampCallback(), recorder], tmp_path / "clamped").train()
    spans = torch.cat([m.span_fraction.detach() for m in clamped.modules() if hasattr(m, "span_fraction")])
    alphas = spans_and_alphas(clamped)[1]
    assert spans.min() >= 0.0 and spans.max() <= 1.0 and alphas.min() >= 1.01 and alphas.max() <= 2.0
    assert [record["step"] for record in recorder.history] == [0, 1, 2, 3]
    assert (tmp_path / "structure.json").exists() and len(recorder.history[-1]["alphas"]) == 9
    # the figures: labelled heatmaps (9 modules x 4 heads, 30-px cells, coloured by value) and curves with a legend
    from PIL import Image

    from hf_vl.training.adaptive_lxmert_callbacks import _viridis

    heatmap = Image.open(tmp_path / "spans_heatmap.png").convert("RGB")
    assert heatmap.height >= 9 * 30 and heatmap.width >= 4 * 30
    final = recorder.history[-1]["spans"]
    first_module = next(iter(final))
    expected = tuple(int(c) for c in _viridis(np.clip(np.array(final[first_module][0]), 0, 1)))
    left = heatmap.width - 4 * 30 - 60 - 40  # cells start after the row labels
    assert heatmap.getpixel((left + 28, 52 + 1)) == expected  # head 0 of the first module, away from its number
    for name in ("alphas_heatmap.png", "spans_over_training.png", "alphas_over_training.png"):
        figure = Image.open(tmp_path / name).convert("RGB")
        colours = {colour for _, colour in figure.getcolors(maxcolors=1 << 20)}
        assert len(colours) > 10  # lines / cells in several colours, text, axes


# ------------------------------------------------------------------------------------------------------------ LayerDrop


def _layerdrop_model(**overrides):
    config = AdaptiveLxmertConfig(**{**TINY, "l_layers": 4, "language_layerdrop": 0.5, "vision_layerdrop": 0.5,
                                     "cross_layerdrop": 0.5, **overrides})
    return AdaptiveLxmertModel(config)


def test_layerdrop_is_deterministic_at_eval_and_random_in_training():
    model = _layerdrop_model()
    plain = AdaptiveLxmertModel(AdaptiveLxmertConfig(**{**TINY, "l_layers": 4}))
    plain.load_state_dict(model.state_dict())
    inputs = tiny_inputs()
    with torch.no_grad():
        model.eval(), plain.eval()
        torch.testing.assert_close(model(**inputs).pooled_output, plain(**inputs).pooled_output)
        model.train()
        torch.manual_seed(0)
        draws = [model(**inputs, output_attentions=True, output_hidden_states=True) for _ in range(6)]
        torch.manual_seed(0)
        again = model(**inputs, output_attentions=True)
    torch.testing.assert_close(draws[0].pooled_output, again.pooled_output)  # seeded: reproducible
    skipped = [sum(a is None for a in d.language_attentions) for d in draws]
    assert len(set(skipped)) > 1 and all(len(d.language_hidden_states) == 4 + 2 for d in draws)
    assert len({round(d.pooled_output.sum().item(), 4) for d in draws}) > 1


def test_layerdrop_in_eval_on_request():
    model = _layerdrop_model(layerdrop_in_eval=True).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        outputs = {round(model(**inputs).pooled_output.sum().item(), 4) for _ in range(6)}
    assert len(outputs) > 1


def test_every_other_pruning_keeps_n_minus_p_layers(tmp_path):
    assert _every_other(9, 4) == [1, 3, 5, 7] and _every_other(5, 2) == [1, 3] and _every_other(4, 1) == [2]
    model = _layerdrop_model().eval()
    first_kept = model.encoder.layer[0].attention.self.query.weight.clone()
    third_kept = model.encoder.layer[2].attention.self.query.weight.clone()
    dropped = model.prune_layers(language=2, cross=[1])
    assert dropped == {"language": [1, 3], "cross": [1]}
    assert (model.config.l_layers, model.config.x_layers, model.config.r_layers) == (2, 1, 1)
    assert torch.equal(model.encoder.layer[1].attention.self.query.weight, third_kept)
    assert torch.equal(model.encoder.layer[0].attention.self.query.weight, first_kept)
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = model(**inputs, output_hidden_states=True)
    assert len(expected.language_hidden_states) == 3
    model.save_pretrained(tmp_path)
    reloaded = AdaptiveLxmertModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).pooled_output, expected.pooled_output)
    with pytest.raises(ValueError, match="language"):
        model.prune_layers(language=2)
    with pytest.raises(ValueError, match="cross"):
        model.prune_layers(cross=[0])
