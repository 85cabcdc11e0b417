"""PyTorch Adaptive LXMERT model.

Paper: Bhargava, "Adaptive Transformers for Learning Multimodal Representations" (ACL SRW 2020),
https://arxiv.org/abs/2005.07486. Released code without a licence (prajjwal1/adaptive_transformer): read for its
behaviour only, never copied. The backbone is LXMERT (Tan & Bansal, EMNLP 2019; airsplay/lxmert, MIT) in the weights
layout of `transformers.LxmertModel`, so LXMERT checkpoints load directly (`lxmert.` prefix, `answer_head`, `cls`,
`obj_predict_head`).

LXMERT: BERT word embeddings -> 9 language layers; region features + boxes -> 5 vision ("relationship") layers;
then 5 cross-modality layers (a cross-attention shared by both directions, reading the layer inputs, then a
self-attention and an FFN per stream). Post-LN, erf GELU, LayerNorm eps 1e-12. Pooled output = tanh(W lang[:, 0]).

The three mechanisms of the paper (each off by default; `AdaptiveLxmertConfig`):

- adaptive attention span (paper Sec. 3.1, Sukhbaatar et al. 2019 Eq. 3): a soft mask
  `m_z(x) = clamp((R + z - x) / R, 0, 1)` over the key distance `x`, one learnable span per head and attention module;
  keys the mask zeroes for every head are not computed (real FLOP saving). The released code learns one span per
  *batch position* (`current_val` of shape `(bs, heads, 1, 1)`, skipped when the batch size differs); here the span is
  per head, so outputs never depend on batch size or row index.
- alpha-entmax attention (paper Sec. 3.2, Correia et al. 2019): softmax replaced by alpha-entmax with a learnable alpha
  per head in [1.01, 2] (bisection + Newton refinement; exact sort-based entmax15 / sparsemax for a fixed alpha of
  1.5 / 2). With the span on as well, entmax normalises the scores first, then the span mask applies and the
  probabilities are renormalised (paper Sec. 4).
- LayerDrop (paper Sec. 3.3, Fan et al. 2019): each layer of a stack is skipped with the stack's rate during training;
  `prune_layers` keeps N - p layers with the every-other strategy for inference.

Attention goes through `ALL_ATTENTION_FUNCTIONS` (`attn_implementation="sdpa"` or `"eager"`), the adaptive span
included (as an additive log-mask over the kept keys); entmax attention falls back to eager.

This file is shipped to the Hub as remote code: it imports only torch, the public `transformers` API and its siblings.
"""

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_adaptive_lxmert import AdaptiveLxmertConfig


ENTMAX_ALPHA_MIN = 1.01  # Correia et al. keep alpha in [1.01, 2]: near 1 the exponent 1 / (alpha - 1) explodes
ENTMAX_ALPHA_MAX = 2.0
_SPAN_RENORM_EPS = 1e-8  # p * m / (sum(p * m) + eps), as in adaptive-span implementations


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class AdaptiveLxmertModelOutput(ModelOutput):
    """Outputs of [`AdaptiveLxmertModel`] (the fields of `transformers.LxmertModelOutput`, same order).

    Args:
        language_output (`(batch_size, text_length, hidden_size)`): language stream after the last cross layer.
        vision_output (`(batch_size, num_regions, hidden_size)`): vision stream after the last cross layer.
        pooled_output (`(batch_size, hidden_size)`): `tanh(W language_output[:, 0])`.
        language_hidden_states (`tuple` of `l_layers + x_layers` tensors): the language stream after each language
            and each cross layer (`output_hidden_states=True`; as in LXMERT, the embeddings are not included).
        vision_hidden_states (`tuple` of `r_layers + x_layers` tensors): the vision stream after each layer.
        language_attentions (`l_layers` x `(batch_size, heads, text_length, text_length)`), vision_attentions
            (`r_layers` x `(batch_size, heads, num_regions, num_regions)`), cross_encoder_attentions (`x_layers` x
            `(batch_size, heads, text_length, num_regions)`, language -> vision): attention probabilities
            (`output_attentions=True`). A layer skipped by LayerDrop contributes `None`.
    """

    language_output: torch.FloatTensor | None = None
    vision_output: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    language_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    language_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AdaptiveLxmertForQuestionAnsweringOutput(ModelOutput):
    """Outputs of [`AdaptiveLxmertForQuestionAnswering`].

    Args:
        loss: the answer loss (+ the span penalty when `config.adaptive_span`), when `labels` are given.
        question_answering_score (`(batch_size, num_qa_labels)`): answer logits.
        Hidden states / attentions as in [`AdaptiveLxmertModelOutput`].
        span_loss: the adaptive-span penalty included in `loss` (`None` without adaptive span or labels).
    """

    loss: torch.FloatTensor | None = None
    question_answering_score: torch.FloatTensor | None = None
    language_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    language_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    # last, so that tuple outputs keep LxmertForQuestionAnsweringOutput's positions and the Trainer's predictions
    # start with the answer scores
    span_loss: torch.FloatTensor | None = None


@dataclass
class AdaptiveLxmertForPreTrainingOutput(ModelOutput):
    """Outputs of [`AdaptiveLxmertForPreTraining`].

    Args:
        loss: sum of the objectives that received labels (+ the span penalty when `config.adaptive_span`).
        masked_lm_loss, matched_loss, visual_loss (object + attribute + feature regression), answer_loss,
            span_loss: each term alone.
        prediction_logits (`(batch_size, text_length, vocab_size)`): masked cross-modality LM scores.
        cross_relationship_score (`(batch_size, 2)`): cross-modality matching scores (index 1 = match).
        question_answering_score (`(batch_size, num_qa_labels)`): image QA scores (`None` without `task_qa`).
        Hidden states / attentions as in [`AdaptiveLxmertModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    masked_lm_loss: torch.FloatTensor | None = None
    matched_loss: torch.FloatTensor | None = None
    visual_loss: torch.FloatTensor | None = None
    answer_loss: torch.FloatTensor | None = None
    span_loss: torch.FloatTensor | None = None
    prediction_logits: torch.FloatTensor | None = None
    cross_relationship_score: torch.FloatTensor | None = None
    question_answering_score: torch.FloatTensor | None = None
    language_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    language_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None


_STREAM_FIELDS = ("language_hidden_states", "vision_hidden_states", "language_attentions", "vision_attentions",
                  "cross_encoder_attentions")


def _stream_outputs(outputs: AdaptiveLxmertModelOutput) -> dict:
    return {name: getattr(outputs, name) for name in _STREAM_FIELDS}


# ----------------------------------------------------------------------------------------------------------------------
# Sparse normalisers: sparsemax (alpha = 2), entmax15 (alpha = 1.5), alpha-entmax with a learnable alpha
# ----------------------------------------------------------------------------------------------------------------------


def _floor_scores(scores: torch.Tensor) -> torch.Tensor:
    """Raise scores more than 1000 below the row maximum to that floor. For alpha >= 1.01 such entries get exactly
    zero probability either way; the floor keeps `finfo.min` mask values from overflowing sums and powers."""
    floor = scores.amax(-1, keepdim=True).detach() - 1000.0
    return torch.maximum(scores, floor)


class _SparsemaxFunction(torch.autograd.Function):
    """Sparsemax (Martins & Astudillo 2016): Euclidean projection onto the simplex, sort-based, exact."""

    @staticmethod
    def forward(ctx, scores):
        shifted = scores - scores.amax(-1, keepdim=True)
        ordered = shifted.sort(-1, descending=True).values
        rank = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
        cumulative = ordered.cumsum(-1)
        support_size = ((1 + rank * ordered) > cumulative).sum(-1, keepdim=True)  # (..., 1), >= 1
        tau = (cumulative.gather(-1, support_size - 1) - 1) / support_size.to(scores.dtype)
        probs = (shifted - tau).clamp(min=0)
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad_output):
        (probs,) = ctx.saved_tensors
        support = probs > 0
        grad = grad_output.masked_fill(~support, 0)
        mean = grad.sum(-1, keepdim=True) / support.sum(-1, keepdim=True).to(grad.dtype)
        return torch.where(support, grad - mean, torch.zeros_like(grad))


class _Entmax15Function(torch.autograd.Function):
    """1.5-entmax (Peters et al. 2019, Algorithm 2): `p = [x / 2 - tau]_+^2`, sort-based, exact."""

    @staticmethod
    def forward(ctx, scores):
        shifted = (scores - scores.amax(-1, keepdim=True)) / 2
        ordered = shifted.sort(-1, descending=True).values
        rank = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
        mean = ordered.cumsum(-1) / rank
        mean_sq = (ordered**2).cumsum(-1) / rank
        delta = (1 - rank * (mean_sq - mean**2)) / rank
        tau = mean - delta.clamp(min=0).sqrt()
        support_size = (tau <= ordered).sum(-1, keepdim=True)
        tau_star = tau.gather(-1, support_size - 1)
        probs = (shifted - tau_star).clamp(min=0) ** 2
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad_output):
        (probs,) = ctx.saved_tensors
        slope = probs.sqrt()  # d p / d x on the support (times 2, cancelled by the 1/2 scaling)
        grad = grad_output * slope
        return grad - slope * (grad.sum(-1, keepdim=True) / slope.sum(-1, keepdim=True))


class _EntmaxBisectNewtonFunction(torch.autograd.Function):
    """alpha-entmax `p_j = [(alpha - 1) x_j - tau]_+^(1 / (alpha - 1))` with `sum(p) = 1` (Peters et al. 2019).

    The threshold `tau` is bracketed by `num_bisect` bisection steps in `[max - 1, max - (1/K)^(alpha-1)]`, then
    refined by `num_newton` Newton steps from the lower end. The mass `f(tau) = sum_j p_j(tau)` is convex and
    decreasing in `tau` for alpha in (1, 2], so Newton from a point with `f >= 1` converges monotonically (never
    overshoots) and quadratically; 6 passes (2 + 4) replace the 50 of a plain bisection. Gradients with respect to the
    scores and to alpha use the implicit function theorem (closed form, no unrolled iterations).
    """

    @staticmethod
    def forward(ctx, scores, alpha, num_bisect: int, num_newton: int):
        alpha_m1 = alpha - 1  # (..., 1)
        exponent = 1.0 / alpha_m1
        shifted = scores * alpha_m1
        shifted = shifted - shifted.amax(-1, keepdim=True)  # the maximum entry is 0: tau in [-1, -(1/K)^(a-1)]
        low = torch.full_like(alpha_m1, -1.0)
        high = -((1.0 / scores.shape[-1]) ** alpha_m1)
        for _ in range(num_bisect):
            middle = (low + high) / 2
            mass = (shifted - middle).clamp(min=0).pow(exponent).sum(-1, keepdim=True)
            above = mass >= 1
            low = torch.where(above, middle, low)
            high = torch.where(above, high, middle)
        tau = low  # mass(tau) >= 1
        for _ in range(num_newton):
            gap = (shifted - tau).clamp(min=0)
            gap_pow = torch.where(gap > 0, gap.pow(exponent - 1), torch.zeros_like(gap))  # 0^0 must count 0
            mass = (gap_pow * gap).sum(-1, keepdim=True)
            slope = exponent * gap_pow.sum(-1, keepdim=True)  # -d mass / d tau > 0 (the max entry is on the support)
            tau = tau + (mass - 1) / slope
        probs = (shifted - tau).clamp(min=0).pow(exponent)
        probs = probs / probs.sum(-1, keepdim=True)
        ctx.save_for_backward(probs, alpha)
        return probs

    @staticmethod
    def backward(ctx, grad_output):
        probs, alpha = ctx.saved_tensors
        support = probs > 0
        alpha_m1 = alpha - 1
        # d p_j / d x_k = g_j (delta_jk - g_k / sum g), g = p^(2 - alpha) on the support
        g = torch.where(support, probs.pow(2 - alpha), torch.zeros_like(probs))
        skewed = g / g.sum(-1, keepdim=True)
        grad_g = grad_output * g
        grad_scores = grad_g - skewed * grad_g.sum(-1, keepdim=True)
        # d p_j / d alpha = [-p_j log p_j + q_j S] / (alpha - 1) + (p_j - q_j) / (alpha - 1)^2, S = sum p log p
        p_log_p = torch.where(support, probs * probs.clamp(min=1e-30).log(), torch.zeros_like(probs))
        entropy_term = -p_log_p + skewed * p_log_p.sum(-1, keepdim=True)
        d_probs_d_alpha = entropy_term / alpha_m1 + (probs - skewed) / alpha_m1**2
        grad_alpha = (grad_output * d_probs_d_alpha).sum(-1, keepdim=True)
        return grad_scores, grad_alpha, None, None


def _at_least_float32(scores: torch.Tensor) -> torch.Tensor:
    """16-bit scores are normalised in float32 (thresholds and powers lose too much in half precision)."""
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Exact sparsemax over the last axis."""
    return _SparsemaxFunction.apply(_floor_scores(_at_least_float32(scores))).to(scores.dtype)


def entmax15(scores: torch.Tensor) -> torch.Tensor:
    """Exact 1.5-entmax over the last axis."""
    return _Entmax15Function.apply(_floor_scores(_at_least_float32(scores))).to(scores.dtype)


def entmax_bisect_newton(scores: torch.Tensor, alpha: torch.Tensor | float, num_bisect: int = 2,
                         num_newton: int = 4) -> torch.Tensor:
    """alpha-entmax over the last axis, alpha in (1, 2] a float or a tensor broadcastable to `scores.shape[:-1] + (1,)`
    (differentiable). Matches `entmax.entmax_bisect` (50 bisection steps) to ~1e-6 in float32.

    Example:

    ```python
    >>> probs = entmax_bisect_newton(torch.randn(2, 4, 7, 7), torch.full((1, 4, 1, 1), 1.3))
    ```
    """
    work = _at_least_float32(scores)
    if not torch.is_tensor(alpha):
        alpha = torch.tensor(float(alpha), dtype=work.dtype, device=scores.device)
    alpha = alpha.to(work.dtype).expand(*scores.shape[:-1], 1)
    return _EntmaxBisectNewtonFunction.apply(_floor_scores(work), alpha, num_bisect, num_newton).to(scores.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------------


# Copied from hf_vl.models.meter.modeling_meter.eager_attention_forward
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, Lk)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Lq, H, D)
    return attn_output, attn_weights


def adaptive_attention_forward(
    module: "AdaptiveLxmertAttention",
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Eager attention with adaptive span and / or alpha-entmax (paper Sec. 3.1, 3.2 and 4), written out as the paper
    states it. The model uses it for entmax; softmax + span goes through the attention interface as an additive
    log-mask (`AdaptiveLxmertAttention._span_as_additive_mask`, the same function).

    softmax + span: only the keys inside the largest span are computed (the FLOP saving); the probabilities are
    multiplied by the soft span mask and renormalised. entmax (+ span): entmax over all keys (its threshold depends on
    every score), then the span mask, renormalised; only the value product is truncated.

    Truncation is exact (the softmax normaliser cancels in the renormalisation) except in one degenerate case: when
    every key inside the largest span is padding, the untruncated computation returns ~0 and the truncated one the
    mean of those padded values; both are meaningless, and `torch.compile` (which cannot truncate) gives the former.
    """
    num_keys = key.shape[-2]
    keep, span_mask = num_keys, None
    if module.config.adaptive_span:
        keep, span_mask = module.span_mask(num_keys)  # (H, keep), over the keys `module.kept_keys(num_keys, keep)`
    if module.config.attention_entmax:
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, K)
        if attention_mask is not None:
            scores = scores + attention_mask
        kept = module.kept_keys(num_keys, keep)
        probs = module.normalize(scores)[..., kept]  # (B, H, Lq, keep)
    else:
        kept = module.kept_keys(num_keys, keep)
        key = key[..., kept, :]  # (B, H, keep, D): keys outside every head's span are never scored
        if attention_mask is not None:
            attention_mask = attention_mask[..., kept]
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, keep)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1)
    if span_mask is not None:
        # Sukhbaatar et al. Eq. 3: mask the probabilities, then renormalise
        probs = probs * span_mask[None, :, None, :].to(probs.dtype)
        probs = probs / (probs.sum(-1, keepdim=True) + _SPAN_RENORM_EPS)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    attn_output = torch.matmul(probs, value[..., kept, :]).transpose(1, 2).contiguous()  # (B, Lq, H, D)
    if keep < num_keys and kwargs.get("output_attentions"):
        probs = module.pad_to_all_keys(probs, num_keys)  # report every key (zeros outside the span)
    return attn_output, probs


class AdaptiveLxmertAttention(nn.Module):
    """LXMERT multi-head attention (`transformers.LxmertAttention` weights: query, key, value) with the optional
    learnable span (`span_fraction`, one per head) and entmax alpha (`entmax_alpha`, one per head)."""

    def __init__(self, config: AdaptiveLxmertConfig, ctx_dim: int | None = None):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.head_size = self.num_attention_heads * self.attention_head_size
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False
        ctx_dim = config.hidden_size if ctx_dim is None else ctx_dim
        self.query = nn.Linear(config.hidden_size, self.head_size)
        self.key = nn.Linear(ctx_dim, self.head_size)
        self.value = nn.Linear(ctx_dim, self.head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        if config.adaptive_span:
            self.span_fraction = nn.Parameter(torch.full((self.num_attention_heads,), config.adaptive_span_init))
        if config.attention_entmax and config.entmax_learn_alpha:
            self.entmax_alpha = nn.Parameter(torch.full((self.num_attention_heads,), config.entmax_alpha_init))

    def kept_keys(self, num_keys: int, keep: int) -> slice:
        """The keys a span of `keep` keys lets through: the last ones (`adaptive_span_anchor="last"`) or the first."""
        return slice(num_keys - keep, num_keys) if self.config.adaptive_span_anchor == "last" else slice(0, keep)

    def pad_to_all_keys(self, probs: torch.Tensor, num_keys: int) -> torch.Tensor:
        """Attention weights over the kept keys -> over all `num_keys` keys (zeros outside the span)."""
        missing = num_keys - probs.shape[-1]
        return F.pad(probs, (missing, 0) if self.config.adaptive_span_anchor == "last" else (0, missing))

    def span_mask(self, num_keys: int) -> tuple[int, torch.Tensor]:
        """`(keep, mask)`: the number of keys any head can see and the soft mask `(heads, keep)` over them (the keys
        `kept_keys(num_keys, keep)`, in order).

        Key `j` of `num_keys` is at distance `x = num_keys - 1 - j` from the last key (`adaptive_span_anchor="last"`,
        the released code) or `x = j` from the first; the span in keys is `z = span * min(num_keys, max_span)`;
        `m(x) = clamp((R + z - x) / R, 0, 1)` is zero for `x >= z + R`, so only `ceil(max z + R)` keys are kept (all
        keys under `torch.compile`, which cannot read the span value).
        """
        ramp = float(self.config.adaptive_span_ramp)
        limit = min(num_keys, self.config.adaptive_span_max_span)
        spans = self.span_fraction.clamp(0.0, 1.0) * limit  # (H,) in keys
        if torch.compiler.is_compiling():
            keep = min(num_keys, math.ceil(limit + ramp))
        else:
            keep = min(num_keys, max(1, math.ceil(float(spans.detach().max()) + ramp)))
        distance = torch.arange(keep, device=spans.device, dtype=spans.dtype)  # (keep,) distance of each kept key
        if self.config.adaptive_span_anchor == "last":
            distance = distance.flip(0)
        mask = ((ramp + spans[:, None] - distance[None, :]) / ramp).clamp(0.0, 1.0)  # (H, keep)
        return keep, mask

    def alpha(self) -> torch.Tensor | None:
        """The entmax alpha of each head, `(heads,)`, clamped to [1.01, 2]; `None` for a fixed alpha."""
        if not hasattr(self, "entmax_alpha"):
            return None
        return self.entmax_alpha.clamp(ENTMAX_ALPHA_MIN, ENTMAX_ALPHA_MAX)

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """alpha-entmax of `(B, H, Lq, K)` scores over the keys (a fixed 1.5 or 2 uses the exact sort-based forms)."""
        alpha = self.alpha()
        if alpha is not None:
            return entmax_bisect_newton(scores, alpha.view(1, -1, 1, 1), self.config.entmax_bisect_iter,
                                        self.config.entmax_newton_iter)
        fixed = float(self.config.entmax_alpha_init)
        if fixed == 1.5:
            return entmax15(scores)
        if fixed == 2.0:
            return sparsemax(scores)
        return entmax_bisect_newton(scores, fixed, self.config.entmax_bisect_iter, self.config.entmax_newton_iter)

    def span_loss(self) -> torch.Tensor | None:
        """Sukhbaatar et al. Eq. 4: `coeff * max_span * mean(span)` (the fraction is learned, so times max_span)."""
        if not hasattr(self, "span_fraction"):
            return None
        config = self.config
        return config.adaptive_span_loss_coeff * config.adaptive_span_max_span * self.span_fraction.mean()

    def forward(self, hidden_states, context, attention_mask=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        query = self.query(hidden_states).view(*input_shape, -1, self.attention_head_size).transpose(1, 2)
        kv_shape = (*context.shape[:-1], -1, self.attention_head_size)
        key = self.key(context).view(kv_shape).transpose(1, 2)  # (B, H, K, D)
        value = self.value(context).view(kv_shape).transpose(1, 2)
        num_keys = key.shape[-2]
        if self.config.attention_entmax:  # entmax (with or without the span) is eager-only
            attention_interface: Callable = adaptive_attention_forward
        else:
            # attention weights exist only on the eager path: fall back to it when they are requested
            implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
            if self.config.adaptive_span:
                key, value, attention_mask = self._span_as_additive_mask(key, value, attention_mask)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        if attn_weights is not None and attn_weights.shape[-1] < num_keys:
            attn_weights = self.pad_to_all_keys(attn_weights, num_keys)  # zeros outside the span
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights

    def _span_as_additive_mask(self, key, value, attention_mask):
        """Adaptive span with softmax through any attention backend: the masked, renormalised probabilities
        `p m / sum(p m)` are `softmax(scores + log m)` (Sukhbaatar et al.'s 1e-8 guard aside), so the span becomes an
        additive `(1, heads, 1, keep)` mask over the `keep` keys it lets through (the others are dropped)."""
        num_keys = key.shape[-2]
        keep, span_mask = self.span_mask(num_keys)  # (H, keep)
        min_value = torch.finfo(key.dtype).min
        # clamp before the log: no inf (and no NaN gradient through `where`) where the mask is 0
        log_mask = torch.where(span_mask > 0, span_mask.clamp(min=1e-30).log(), min_value).to(key.dtype)
        additive = log_mask[None, :, None, :]  # (1, H, 1, keep)
        kept = self.kept_keys(num_keys, keep)
        if attention_mask is not None:
            # both terms can be finfo.min: clamp so the sum stays finite (the key at distance 0 always has m = 1)
            additive = (attention_mask[..., kept] + additive).clamp(min=min_value)
        return key[..., kept, :], value[..., kept, :], additive


class AdaptiveLxmertAttentionOutput(nn.Module):
    """`LayerNorm(dropout(W x) + residual)` (`transformers.LxmertAttentionOutput` / `LxmertOutput`)."""

    def __init__(self, config: AdaptiveLxmertConfig, in_size: int):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class AdaptiveLxmertSelfAttentionLayer(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.self = AdaptiveLxmertAttention(config)
        self.output = AdaptiveLxmertAttentionOutput(config, config.hidden_size)

    def forward(self, input_tensor, attention_mask=None, **kwargs):
        attn_output, attn_weights = self.self(input_tensor, input_tensor, attention_mask, **kwargs)
        return self.output(attn_output, input_tensor), attn_weights


class AdaptiveLxmertCrossAttentionLayer(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.att = AdaptiveLxmertAttention(config)
        self.output = AdaptiveLxmertAttentionOutput(config, config.hidden_size)

    def forward(self, input_tensor, ctx_tensor, ctx_att_mask=None, **kwargs):
        attn_output, attn_weights = self.att(input_tensor, ctx_tensor, ctx_att_mask, **kwargs)
        return self.output(attn_output, input_tensor), attn_weights


class AdaptiveLxmertIntermediate(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class AdaptiveLxmertLayer(GradientCheckpointingLayer):
    """A language or vision layer (BERT post-LN: self-attention, FFN)."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.attention = AdaptiveLxmertSelfAttentionLayer(config)
        self.intermediate = AdaptiveLxmertIntermediate(config)
        self.output = AdaptiveLxmertAttentionOutput(config, config.intermediate_size)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        return self.output(self.intermediate(attention_output), attention_output), attn_weights


class AdaptiveLxmertXLayer(GradientCheckpointingLayer):
    """A cross-modality layer: one cross-attention module used in both directions (both read the layer inputs), then
    a self-attention and an FFN per stream."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.visual_attention = AdaptiveLxmertCrossAttentionLayer(config)
        self.lang_self_att = AdaptiveLxmertSelfAttentionLayer(config)
        self.visn_self_att = AdaptiveLxmertSelfAttentionLayer(config)
        self.lang_inter = AdaptiveLxmertIntermediate(config)
        self.lang_output = AdaptiveLxmertAttentionOutput(config, config.intermediate_size)
        self.visn_inter = AdaptiveLxmertIntermediate(config)
        self.visn_output = AdaptiveLxmertAttentionOutput(config, config.intermediate_size)

    def forward(self, lang_feats, lang_attention_mask, visual_feats, visual_attention_mask, **kwargs):
        lang_att, cross_weights = self.visual_attention(lang_feats, visual_feats, visual_attention_mask, **kwargs)
        visn_att, _ = self.visual_attention(visual_feats, lang_feats, lang_attention_mask, **kwargs)
        lang_att, _ = self.lang_self_att(lang_att, lang_attention_mask, **kwargs)
        visn_att, _ = self.visn_self_att(visn_att, visual_attention_mask, **kwargs)
        lang_output = self.lang_output(self.lang_inter(lang_att), lang_att)
        visual_output = self.visn_output(self.visn_inter(visn_att), visn_att)
        return lang_output, visual_output, cross_weights


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings, encoder, pooler
# ----------------------------------------------------------------------------------------------------------------------


class AdaptiveLxmertEmbeddings(nn.Module):
    """BERT text embeddings (word + position + token type, LayerNorm, dropout); LXMERT pads row 0 of all three."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]  # (1, L)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class AdaptiveLxmertVisualFeatureEncoder(nn.Module):
    """Region embedding: `(LayerNorm(W_f visual_feats) + LayerNorm(W_b visual_pos)) / 2`, dropout."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.visn_fc = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.box_fc = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, visual_feats, visual_pos):
        features = self.visn_layer_norm(self.visn_fc(visual_feats))
        boxes = self.box_layer_norm(self.box_fc(visual_pos))
        return self.dropout((features + boxes) / 2)


class AdaptiveLxmertEncoder(nn.Module):
    """Language layers (`layer`, named as in BERT so BERT weights load), vision layers (`r_layers`), cross layers
    (`x_layers`), each stack with its LayerDrop rate."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.config = config
        self.visn_fc = AdaptiveLxmertVisualFeatureEncoder(config)
        self.layer = nn.ModuleList([AdaptiveLxmertLayer(config) for _ in range(config.l_layers)])
        self.x_layers = nn.ModuleList([AdaptiveLxmertXLayer(config) for _ in range(config.x_layers)])
        self.r_layers = nn.ModuleList([AdaptiveLxmertLayer(config) for _ in range(config.r_layers)])

    def _skipped(self, rate: float) -> bool:
        """LayerDrop (Fan et al. 2019): skip a layer with probability `rate` in training (and in eval when
        `config.layerdrop_in_eval`)."""
        if rate <= 0.0 or not (self.training or self.config.layerdrop_in_eval):
            return False
        return bool(torch.rand(()) < rate)

    def forward(self, lang_feats, lang_attention_mask, visual_feats, visual_pos, visual_attention_mask=None,
                **kwargs):
        config = self.config
        visual = self.visn_fc(visual_feats, visual_pos)
        language_hidden, vision_hidden = [], []
        language_attentions, vision_attentions, cross_attentions = [], [], []
        for layer in self.layer:
            if not self._skipped(config.language_layerdrop):
                lang_feats, weights = layer(lang_feats, lang_attention_mask, **kwargs)
            else:
                weights = None
            language_hidden.append(lang_feats)
            language_attentions.append(weights)
        for layer in self.r_layers:
            if not self._skipped(config.vision_layerdrop):
                visual, weights = layer(visual, visual_attention_mask, **kwargs)
            else:
                weights = None
            vision_hidden.append(visual)
            vision_attentions.append(weights)
        for layer in self.x_layers:
            if not self._skipped(config.cross_layerdrop):
                lang_feats, visual, weights = layer(lang_feats, lang_attention_mask, visual, visual_attention_mask,
                                                    **kwargs)
            else:
                weights = None
            language_hidden.append(lang_feats)
            vision_hidden.append(visual)
            cross_attentions.append(weights)
        return lang_feats, visual, language_hidden, vision_hidden, language_attentions, vision_attentions, \
            cross_attentions


class AdaptiveLxmertPooler(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


# ----------------------------------------------------------------------------------------------------------------------
# Heads (the `transformers.Lxmert*Head` layouts)
# ----------------------------------------------------------------------------------------------------------------------


class AdaptiveLxmertPredictionHeadTransform(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class AdaptiveLxmertLMPredictionHead(nn.Module):
    """Masked-LM decoder, tied to the word embeddings (`config.tie_word_embeddings`), plus an output bias."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.transform = AdaptiveLxmertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class AdaptiveLxmertPreTrainingHeads(nn.Module):
    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.predictions = AdaptiveLxmertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output, pooled_output):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


class AdaptiveLxmertVisualAnswerHead(nn.Module):
    """LXMERT's answer head: Linear(H, 2H), GELU, LayerNorm(2H, eps 1e-12), Linear(2H, answers)."""

    def __init__(self, config: AdaptiveLxmertConfig, num_labels: int):
        super().__init__()
        hidden = config.hidden_size
        self.logit_fc = nn.Sequential(
            nn.Linear(hidden, hidden * 2), nn.GELU(), nn.LayerNorm(hidden * 2, eps=1e-12),
            nn.Linear(hidden * 2, num_labels),
        )

    def forward(self, hidden_states):
        return self.logit_fc(hidden_states)


def _visual_losses(config: AdaptiveLxmertConfig) -> dict[str, int]:
    """Masked object prediction targets and their output sizes (LXMERT Sec. 3.1.2)."""
    losses = {}
    if config.visual_obj_loss:
        losses["obj"] = config.num_object_labels
    if config.visual_attr_loss:
        losses["attr"] = config.num_attr_labels
    if config.visual_feat_loss:
        losses["feat"] = config.visual_feat_dim
    return losses


class AdaptiveLxmertVisualObjHead(nn.Module):
    """Masked object prediction: detector object / attribute classes and RoI feature regression per region."""

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__()
        self.transform = AdaptiveLxmertPredictionHeadTransform(config)
        self.decoder_dict = nn.ModuleDict(
            {key: nn.Linear(config.hidden_size, size) for key, size in _visual_losses(config).items()}
        )

    def forward(self, hidden_states):
        hidden_states = self.transform(hidden_states)
        return {key: decoder(hidden_states) for key, decoder in self.decoder_dict.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Pre-trained model: init, validators, mechanism utilities
# ----------------------------------------------------------------------------------------------------------------------

# Keyword arguments the transformers runtime may pass to any forward (`**kwargs: Unpack[TransformersKwargs]`).
_RUNTIME_KWARGS = frozenset(TransformersKwargs.__annotations__)
_FORWARD_PARAMETERS: dict[type, frozenset] = {}


# Copied from hf_vl.models.meter.modeling_meter._reject_unknown_kwargs
def _reject_unknown_kwargs(model: nn.Module, kwargs: dict) -> None:
    """`forward(**kwargs)` accepts only the transformers runtime kwargs: a misspelt argument (`label=`,
    `pixel_valuez=`) raises instead of being silently dropped."""
    unknown = [name for name in kwargs if name not in _RUNTIME_KWARGS]
    if not unknown or torch.compiler.is_compiling():
        return
    cls = type(model)
    if cls not in _FORWARD_PARAMETERS:
        _FORWARD_PARAMETERS[cls] = frozenset(inspect.signature(cls.forward).parameters) - {"self", "kwargs"}
    known = sorted(_FORWARD_PARAMETERS[cls] | _RUNTIME_KWARGS)
    hints = [f"{name!r} (did you mean {difflib.get_close_matches(name, known, n=1)[0]!r}?)"
             if difflib.get_close_matches(name, known, n=1) else repr(name) for name in unknown]
    raise TypeError(f"{cls.__name__}.forward() got unexpected keyword argument(s): {', '.join(hints)}.")


# Copied from hf_vl.models.meter.modeling_meter._extended_attention_mask
def _extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> additive (B, 1, 1, L) mask for every query."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _check_integer(name: str, tensor: torch.Tensor | None) -> None:
    if tensor is not None and (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"`{name}` must be an integer (or bool) tensor, got dtype {tensor.dtype}.")


def _every_other(num_layers: int, num_dropped: int) -> list[int]:
    """Fan et al. 2019 Sec. 4 "every other": drop `num_dropped` evenly spaced layers, the k-th at
    `floor((k + 1/2) * N / p)` (9 layers, drop 4 -> [1, 3, 5, 7]; 4 layers, drop 2 -> [1, 3])."""
    return [int((k + 0.5) * num_layers / num_dropped) for k in range(num_dropped)]


class AdaptiveLxmertPreTrainedModel(PreTrainedModel):
    config_class = AdaptiveLxmertConfig
    config: AdaptiveLxmertConfig
    base_model_prefix = "lxmert"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["AdaptiveLxmertLayer", "AdaptiveLxmertXLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """`_init_weights` only uses the flag-aware `transformers.initialization` functions, so weights missing from a
        checkpoint get exactly the init of a fresh model (also when loaded as remote code)."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Embedding / LayerNorm with `config.initializer_range`
        if isinstance(module, AdaptiveLxmertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, AdaptiveLxmertAttention):
            if hasattr(module, "span_fraction"):
                init.constant_(module.span_fraction, self.config.adaptive_span_init)
            if hasattr(module, "entmax_alpha"):
                init.constant_(module.entmax_alpha, self.config.entmax_alpha_init)

    # -- adaptive mechanisms ------------------------------------------------------------------------------------------

    def _attention_modules(self) -> dict[str, AdaptiveLxmertAttention]:
        return {name: module for name, module in self.named_modules() if isinstance(module, AdaptiveLxmertAttention)}

    def adaptive_span_loss(self) -> torch.Tensor | None:
        """The span penalty summed over every attention module (`None` without `config.adaptive_span`)."""
        losses = [module.span_loss() for module in self._attention_modules().values()]
        losses = [loss for loss in losses if loss is not None]
        return torch.stack(losses).sum() if losses else None

    @torch.no_grad()
    def clamp_adaptive_parameters(self) -> None:
        """Clamp every span fraction to [0, 1] and every entmax alpha to [1.01, 2] (call after each optimiser step;
        `hf_vl.training.AdaptiveLxmertClampCallback` does it for the `Trainer`)."""
        for module in self._attention_modules().values():
            if hasattr(module, "span_fraction"):
                module.span_fraction.clamp_(0.0, 1.0)
            if hasattr(module, "entmax_alpha"):
                module.entmax_alpha.clamp_(ENTMAX_ALPHA_MIN, ENTMAX_ALPHA_MAX)

    def learned_spans(self, num_keys: int | None = None) -> dict[str, torch.Tensor]:
        """`{attention module: (heads,) span}`: fractions in [0, 1], or spans in keys for `num_keys` keys."""
        spans = {}
        for name, module in self._attention_modules().items():
            if hasattr(module, "span_fraction"):
                value = module.span_fraction.detach().clamp(0.0, 1.0)
                if num_keys is not None:
                    value = value * min(num_keys, self.config.adaptive_span_max_span)
                spans[name] = value.clone()
        return spans

    def learned_alphas(self) -> dict[str, torch.Tensor]:
        """`{attention module: (heads,) entmax alpha}` (learnable alphas only)."""
        return {name: module.alpha().detach().clone() for name, module in self._attention_modules().items()
                if module.alpha() is not None}

    def attention_flops(self, text_length: int, num_regions: int, batch_size: int = 1) -> dict[str, float]:
        """Multiply-adds of the attention score and value products (`QK^T` and `PV`) of one forward, with the keys
        the current spans keep (`effective`) and with every key (`dense`)."""
        base = self.base_model
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        heads = self.config.num_attention_heads
        total = {"dense": 0.0, "effective": 0.0}

        def add(module, num_queries, num_keys):
            keep = module.span_mask(num_keys)[0] if hasattr(module, "span_fraction") else num_keys
            dense = 2.0 * batch_size * heads * num_queries * num_keys * head_dim
            qk_keys = num_keys if self.config.attention_entmax else keep  # entmax needs every score
            total["dense"] += dense
            total["effective"] += batch_size * heads * num_queries * head_dim * (qk_keys + keep)

        encoder = base.encoder
        for layer in encoder.layer:
            add(layer.attention.self, text_length, text_length)
        for layer in encoder.r_layers:
            add(layer.attention.self, num_regions, num_regions)
        for layer in encoder.x_layers:
            add(layer.visual_attention.att, text_length, num_regions)
            add(layer.visual_attention.att, num_regions, text_length)
            add(layer.lang_self_att.self, text_length, text_length)
            add(layer.visn_self_att.self, num_regions, num_regions)
        return total

    def prune_layers(self, language: int | list[int] | None = None, vision: int | list[int] | None = None,
                     cross: int | list[int] | None = None) -> dict[str, list[int]]:
        """Remove layers for inference (LayerDrop pruning, Fan et al. 2019 Sec. 4): an int `p` drops `p` layers of that
        stack chosen "every other" (keeping N - p), a list drops those indices. Updates the config
        (`l_layers`, `r_layers`, `x_layers`), so `save_pretrained` writes the pruned model. Returns the dropped indices.

        Example:

        ```python
        >>> model.prune_layers(language=4, cross=2)  # 9 -> 5 language layers ([1, 3, 5, 7] dropped), 5 -> 3 cross
        ```
        """
        encoder = self.base_model.encoder
        dropped = {}
        for stack, attribute, field, request in (("language", "layer", "l_layers", language),
                                                 ("vision", "r_layers", "r_layers", vision),
                                                 ("cross", "x_layers", "x_layers", cross)):
            if request is None:
                continue
            layers = getattr(encoder, attribute)
            if isinstance(request, bool) or not isinstance(request, (int, list, tuple)):
                raise TypeError(f"`{stack}` must be a number of layers or a list of layer indices, got {request!r}.")
            if isinstance(request, int):
                if not 0 <= request < len(layers):
                    raise ValueError(f"`{stack}` must drop between 0 and {len(layers) - 1} of its {len(layers)} "
                                     f"layers, got {request}.")
                indices = _every_other(len(layers), request)
            else:
                indices = sorted(set(request))
                if any(not isinstance(i, int) or not 0 <= i < len(layers) for i in indices) or \
                        len(indices) >= len(layers):
                    raise ValueError(f"`{stack}` indices must be distinct layers in [0, {len(layers)}) keeping at "
                                     f"least one, got {list(request)}.")
            setattr(encoder, attribute, nn.ModuleList([m for i, m in enumerate(layers) if i not in indices]))
            setattr(self.config, field, len(layers) - len(indices))
            dropped[stack] = indices
        self.config.num_hidden_layers = {"vision": self.config.r_layers, "cross_encoder": self.config.x_layers,
                                         "language": self.config.l_layers}
        return dropped

    # -- input values -------------------------------------------------------------------------------------------------

    def validate_input_values(self, input_ids=None, attention_mask=None, token_type_ids=None, visual_feats=None,
                              visual_pos=None, visual_attention_mask=None, **unused) -> None:
        """Value checks: ids in the vocabulary, 0/1 masks with at least one token / region per row, finite
        features, boxes in [0, 1]. They read tensor values (a device sync), so `forward` runs them only in eager
        mode and only while `config.check_input_values` is True. Raises `ValueError` naming the argument."""
        config = self.config
        for name, tensor, high in (("input_ids", input_ids, config.vocab_size),
                                   ("token_type_ids", token_type_ids, config.type_vocab_size)):
            if tensor is not None and tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= high):
                raise ValueError(
                    f"`{name}` must be in [0, {high}), got values in [{int(tensor.min())}, {int(tensor.max())}]."
                )
        for name, mask in (("attention_mask", attention_mask), ("visual_attention_mask", visual_attention_mask)):
            if mask is None or not mask.numel():
                continue
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"`{name}` must hold only 0 and 1, got values {sorted(mask.unique().tolist())[:6]}.")
            if not bool((mask.sum(-1) > 0).all()):
                rows = (mask.sum(-1) == 0).nonzero().flatten().tolist()
                raise ValueError(f"`{name}` rows {rows} are all zeros: every example needs a token and a region.")
        if visual_feats is not None and not bool(torch.isfinite(visual_feats).all()):
            raise ValueError("`visual_feats` contains NaN or inf values.")
        if visual_pos is not None and visual_pos.numel():
            eps = 1e-5
            if not bool(torch.isfinite(visual_pos).all()) or float(visual_pos.min()) < -eps or \
                    float(visual_pos.max()) > 1 + eps:
                raise ValueError(
                    "`visual_pos` must hold boxes normalised to [0, 1] (divide by the image width and height), got "
                    f"values in [{float(visual_pos.min())}, {float(visual_pos.max())}]."
                )

    def _check_inputs(self, **inputs) -> None:
        if self.config.check_input_values and not torch.compiler.is_compiling():
            self.validate_input_values(**inputs)


# ----------------------------------------------------------------------------------------------------------------------
# Base model
# ----------------------------------------------------------------------------------------------------------------------


class AdaptiveLxmertModel(AdaptiveLxmertPreTrainedModel):
    """LXMERT encoder with adaptive span / entmax attention / LayerDrop; loads `transformers.LxmertModel` weights.

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertModel
    >>> model = AdaptiveLxmertModel(AdaptiveLxmertConfig(visual_feat_dim=16))
    >>> outputs = model(input_ids=torch.tensor([[101, 2054, 102]]), visual_feats=torch.rand(1, 5, 16),
    ...                 visual_pos=torch.tensor([[[0.1, 0.1, 0.5, 0.5]]]).expand(1, 5, 4))
    >>> outputs.pooled_output.shape
    torch.Size([1, 768])
    ```
    """

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__(config)
        self.embeddings = AdaptiveLxmertEmbeddings(config)
        self.encoder = AdaptiveLxmertEncoder(config)
        self.pooler = AdaptiveLxmertPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AdaptiveLxmertModelOutput:
        r"""`transformers.LxmertModel.forward`'s arguments, in its order.

        Args:
            input_ids (`(batch_size, text_length)`): WordPiece ids ([CLS] first: the pooler reads token 0).
            visual_feats (`(batch_size, num_regions, visual_feat_dim)`): region features.
            visual_pos (`(batch_size, num_regions, visual_pos_dim)`): boxes `x1, y1, x2, y2` normalised to [0, 1].
            attention_mask (`(batch_size, text_length)`, *optional*): 1 for real tokens, 0 for padding.
            visual_attention_mask (`(batch_size, num_regions)`, *optional*): 1 for real regions, 0 for padding.
            token_type_ids (`(batch_size, text_length)`, *optional*): segment ids.
            inputs_embeds (`(batch_size, text_length, hidden_size)`, *optional*): instead of `input_ids`.
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions = kwargs.get("output_attentions")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = kwargs.get("output_hidden_states")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        self._validate_input_shapes(input_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask,
                                    token_type_ids, inputs_embeds)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           visual_feats=visual_feats, visual_pos=visual_pos,
                           visual_attention_mask=visual_attention_mask)
        embeddings = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, L, H)
        dtype = embeddings.dtype
        if attention_mask is None:
            attention_mask = torch.ones(embeddings.shape[:2], dtype=torch.long, device=embeddings.device)
        lang_mask = _extended_attention_mask(attention_mask, dtype)
        visual_mask = None if visual_attention_mask is None else _extended_attention_mask(visual_attention_mask, dtype)
        layer_kwargs = {"output_attentions": output_attentions}
        language, vision, language_hidden, vision_hidden, language_attn, vision_attn, cross_attn = self.encoder(
            embeddings, lang_mask, visual_feats.to(dtype), visual_pos.to(dtype), visual_mask, **layer_kwargs
        )
        return AdaptiveLxmertModelOutput(
            language_output=language,
            vision_output=vision,
            pooled_output=self.pooler(language),
            language_hidden_states=tuple(language_hidden) if output_hidden_states else None,
            vision_hidden_states=tuple(vision_hidden) if output_hidden_states else None,
            language_attentions=tuple(language_attn) if output_attentions else None,
            vision_attentions=tuple(vision_attn) if output_attentions else None,
            cross_encoder_attentions=tuple(cross_attn) if output_attentions else None,
        )

    def _validate_input_shapes(self, input_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask,
                               token_type_ids, inputs_embeds):
        """Shape and type checks only (no tensor values are read: `torch.compile(fullgraph=True)` traces them)."""
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds` (the text).")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch_size, text_length), got shape {tuple(input_ids.shape)}.")
            _check_integer("input_ids", input_ids)
            batch_size, text_length = input_ids.shape
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
                raise ValueError(f"`inputs_embeds` must be (batch_size, text_length, hidden_size={config.hidden_size}),"
                                 f" got shape {tuple(inputs_embeds.shape)}.")
            batch_size, text_length = inputs_embeds.shape[:2]
        if text_length == 0:
            raise ValueError("The text is empty (text_length 0): every example needs at least one token.")
        if text_length > config.max_position_embeddings:
            raise ValueError(f"The text has {text_length} tokens but the position table holds "
                             f"{config.max_position_embeddings} (tokenise with truncation=True, max_length=...).")
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and tuple(tensor.shape) != (batch_size, text_length):
                raise ValueError(
                    f"`{name}` shape {tuple(tensor.shape)} must equal the text shape {(batch_size, text_length)}."
                )
            _check_integer(name, tensor)
        if visual_feats is None or visual_pos is None:
            raise ValueError(f"LXMERT needs regions: `visual_feats` and `visual_pos` are required (got "
                             f"visual_feats={None if visual_feats is None else tuple(visual_feats.shape)}, "
                             f"visual_pos={None if visual_pos is None else tuple(visual_pos.shape)}).")
        if visual_feats.dim() != 3 or visual_feats.shape[2] != config.visual_feat_dim:
            raise ValueError(f"`visual_feats` must be (batch_size, num_regions, visual_feat_dim={config.visual_feat_dim})"
                             f", got shape {tuple(visual_feats.shape)}.")
        if visual_feats.shape[0] != batch_size:
            raise ValueError(f"`visual_feats` has {visual_feats.shape[0]} examples but the text {batch_size}.")
        if not visual_feats.is_floating_point():
            raise TypeError(f"`visual_feats` must be a floating point tensor, got {visual_feats.dtype}.")
        if visual_feats.shape[1] == 0:
            raise ValueError("`visual_feats` has 0 regions: every example needs at least one region.")
        expected = (batch_size, visual_feats.shape[1])
        if tuple(visual_pos.shape) != (*expected, config.visual_pos_dim):
            raise ValueError(f"`visual_pos` must be (batch_size, num_regions, visual_pos_dim) = "
                             f"{(*expected, config.visual_pos_dim)}, got shape {tuple(visual_pos.shape)}.")
        if not visual_pos.is_floating_point():
            raise TypeError(f"`visual_pos` must be a floating point tensor, got {visual_pos.dtype}.")
        if visual_attention_mask is not None:
            if tuple(visual_attention_mask.shape) != expected:
                raise ValueError(f"`visual_attention_mask` must be (batch_size, num_regions) = {expected}, got shape "
                                 f"{tuple(visual_attention_mask.shape)}.")
            _check_integer("visual_attention_mask", visual_attention_mask)


# ----------------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------------


def _with_span_loss(model: AdaptiveLxmertPreTrainedModel, loss: torch.Tensor | None):
    """`(loss + span penalty, span penalty)` when a loss was computed and adaptive span is on."""
    if loss is None:
        return None, None
    span_loss = model.adaptive_span_loss()
    if span_loss is None:
        return loss, None
    return loss + span_loss.to(loss.dtype), span_loss


class AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertPreTrainedModel):
    """Adaptive LXMERT with LXMERT's answer head on the pooled output (VQA: 3129 answers, GQA: 1842).

    `labels` are either class indices `(batch_size,)` (cross-entropy, as `transformers.LxmertForQuestionAnswering`)
    or soft VQA scores `(batch_size, num_qa_labels)` (binary cross-entropy times the number of answers, as LXMERT's
    VQA fine-tuning). With adaptive span the span penalty is added to the loss.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__(config)
        self.lxmert = AdaptiveLxmertModel(config)
        self.answer_head = AdaptiveLxmertVisualAnswerHead(config, config.num_qa_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AdaptiveLxmertForQuestionAnsweringOutput:
        r"""
        Args:
            labels: `(batch_size,)` answer indices or `(batch_size, num_qa_labels)` soft scores in [0, 1].
            Other arguments as in [`AdaptiveLxmertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        outputs = self.lxmert(input_ids=input_ids, visual_feats=visual_feats, visual_pos=visual_pos,
                              attention_mask=attention_mask, visual_attention_mask=visual_attention_mask,
                              token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, **kwargs)
        logits = self.answer_head(outputs.pooled_output)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.is_floating_point() and tuple(labels.shape) == tuple(logits.shape):
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * logits.shape[1]
            elif not labels.is_floating_point() and tuple(labels.shape) == tuple(logits.shape[:1]):
                loss = F.cross_entropy(logits, labels.long())
            else:
                raise ValueError(f"`labels` must be answer indices (batch_size,) = {tuple(logits.shape[:1])} (integer)"
                                 f" or soft scores (batch_size, num_qa_labels) = {tuple(logits.shape)} (float), got "
                                 f"{tuple(labels.shape)} {labels.dtype}.")
        loss, span_loss = _with_span_loss(self, loss)
        return AdaptiveLxmertForQuestionAnsweringOutput(loss=loss, span_loss=span_loss,
                                                        question_answering_score=logits, **_stream_outputs(outputs))

    def get_qa_logit_layer(self) -> nn.Linear:
        return self.answer_head.logit_fc[-1]


class AdaptiveLxmertForPreTraining(AdaptiveLxmertPreTrainedModel):
    """Adaptive LXMERT with LXMERT's pre-training heads (LXMERT Sec. 3.1): masked cross-modality LM (`labels`),
    masked object prediction (`obj_labels`: object / attribute classification and RoI feature regression), cross-
    modality matching (`matched_label`) and image QA (`ans`); `transformers.LxmertForPreTraining`'s signature and
    losses. With adaptive span the span penalty is added to the loss.
    """

    accepts_loss_kwargs = False
    _tied_weights_keys = {"cls.predictions.decoder.weight": "lxmert.embeddings.word_embeddings.weight"}

    def __init__(self, config: AdaptiveLxmertConfig):
        super().__init__(config)
        self.lxmert = AdaptiveLxmertModel(config)
        self.cls = AdaptiveLxmertPreTrainingHeads(config)
        if config.task_obj_predict:
            self.obj_predict_head = AdaptiveLxmertVisualObjHead(config)
        if config.task_qa:
            self.answer_head = AdaptiveLxmertVisualAnswerHead(config, config.num_qa_labels)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Installs a new masked-LM decoder (e.g. from `resize_token_embeddings`) and resizes its bias (new rows 0)."""
        predictions = self.cls.predictions
        predictions.decoder = new_embeddings
        old_bias = predictions.bias.data
        new_size = new_embeddings.out_features
        if new_size != old_bias.shape[0]:
            bias = torch.zeros(new_size, device=old_bias.device, dtype=old_bias.dtype)
            keep = min(new_size, old_bias.shape[0])
            bias[:keep] = old_bias[:keep]
            predictions.bias = nn.Parameter(bias)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        obj_labels: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        matched_label: torch.LongTensor | None = None,
        ans: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> AdaptiveLxmertForPreTrainingOutput:
        r"""
        Args:
            labels (`(batch_size, text_length)`): masked-LM targets, -100 where not masked.
            obj_labels (`dict`): for each visual loss (`"obj"`, `"attr"`, `"feat"`) a pair `(label, mask_conf)`:
                `(batch_size, num_regions)` class ids (`(batch_size, num_regions, visual_feat_dim)` features for
                `"feat"`) and `(batch_size, num_regions)` weights (1 for masked regions, 0 elsewhere).
            matched_label (`(batch_size,)`): 1 when the text matches the image.
            ans (`(batch_size,)`): answer indices for image QA.
            Other arguments as in [`AdaptiveLxmertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        config = self.config
        outputs = self.lxmert(input_ids=input_ids, visual_feats=visual_feats, visual_pos=visual_pos,
                              attention_mask=attention_mask, visual_attention_mask=visual_attention_mask,
                              token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, **kwargs)
        prediction_logits, matched_logits = self.cls(outputs.language_output, outputs.pooled_output)
        answer_logits = self.answer_head(outputs.pooled_output) if config.task_qa else None
        losses = {}
        if labels is not None and config.task_mask_lm:
            if tuple(labels.shape) != tuple(prediction_logits.shape[:2]):
                raise ValueError(f"`labels` must be (batch_size, text_length) = {tuple(prediction_logits.shape[:2])}, "
                                 f"got {tuple(labels.shape)}.")
            losses["masked_lm_loss"] = F.cross_entropy(prediction_logits.flatten(0, 1),
                                                       labels.to(prediction_logits.device).flatten())
        if matched_label is not None and config.task_matched:
            losses["matched_loss"] = F.cross_entropy(matched_logits, matched_label.to(matched_logits.device).view(-1))
        if obj_labels is not None and config.task_obj_predict:
            losses["visual_loss"] = self._visual_loss(self.obj_predict_head(outputs.vision_output), obj_labels)
        if ans is not None and config.task_qa:
            losses["answer_loss"] = F.cross_entropy(answer_logits, ans.to(answer_logits.device).view(-1))
        loss = sum(losses.values()) if losses else None
        loss, span_loss = _with_span_loss(self, loss)
        return AdaptiveLxmertForPreTrainingOutput(
            loss=loss, span_loss=span_loss, prediction_logits=prediction_logits,
            cross_relationship_score=matched_logits, question_answering_score=answer_logits,
            **losses, **_stream_outputs(outputs),
        )

    def _visual_loss(self, predictions: dict[str, torch.Tensor], obj_labels: dict) -> torch.Tensor:
        """LXMERT's masked object prediction: per-region CE (obj, attr) and smooth-L1 (feat), weighted by
        `mask_conf`, averaged, times `visual_loss_normalizer`."""
        if not isinstance(obj_labels, dict) or set(obj_labels) != set(predictions):
            raise ValueError(f"`obj_labels` must be a dict with the keys {sorted(predictions)} "
                             f"(config.visual_*_loss), got {sorted(obj_labels) if isinstance(obj_labels, dict) else type(obj_labels)}.")
        total = 0.0
        for key, scores in predictions.items():
            label, mask_conf = obj_labels[key]
            label, mask_conf = label.to(scores.device), mask_conf.to(scores.device)
            if tuple(mask_conf.shape) != tuple(scores.shape[:2]):
                raise ValueError(f"`obj_labels[{key!r}]` mask_conf must be (batch_size, num_regions) = "
                                 f"{tuple(scores.shape[:2])}, got {tuple(mask_conf.shape)}.")
            if key == "feat":
                if tuple(label.shape) != tuple(scores.shape):
                    raise ValueError(f"`obj_labels['feat']` label must be {tuple(scores.shape)}, got "
                                     f"{tuple(label.shape)}.")
                loss = F.smooth_l1_loss(scores, label.to(scores.dtype), reduction="none").mean(-1)  # (B, N)
            else:
                if tuple(label.shape) != tuple(scores.shape[:2]):
                    raise ValueError(f"`obj_labels[{key!r}]` label must be (batch_size, num_regions) = "
                                     f"{tuple(scores.shape[:2])}, got {tuple(label.shape)}.")
                loss = F.cross_entropy(scores.flatten(0, 1), label.flatten().long(), reduction="none")
                loss = loss.view(scores.shape[:2])
            total = total + (loss * mask_conf.to(loss.dtype)).mean() * self.config.visual_loss_normalizer
        return total


__all__ = [
    "AdaptiveLxmertForPreTraining",
    "AdaptiveLxmertForPreTrainingOutput",
    "AdaptiveLxmertForQuestionAnswering",
    "AdaptiveLxmertForQuestionAnsweringOutput",
    "AdaptiveLxmertModel",
    "AdaptiveLxmertModelOutput",
    "AdaptiveLxmertPreTrainedModel",
    "entmax15",
    "entmax_bisect_newton",
    "sparsemax",
]
