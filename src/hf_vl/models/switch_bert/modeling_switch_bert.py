"""PyTorch Switch-BERT model.

Paper: Guo, Yao and Chu, "Switch-BERT: Learning to Model Multimodal Interactions by Switching Attention and Input",
ECCV 2022, https://arxiv.org/abs/2306.14182. No code was released; this implementation follows the paper. Weights
can come from a BERT checkpoint ([`SwitchBertPreTrainedModel.from_bert_pretrained`]) or from a VOLTA UNITER-CTRL
checkpoint (`conversion/convert_switch_bert_volta_to_hf.py`; e-bug/volta, MIT).

Switch-BERT = BERT text embeddings + UNITER region embeddings (with an [IMG] token, the global region) -> L layers
over the concatenation `[text; regions]` sharing one set of BERT weights for both modalities -> a text pooler (token
0 = [CLS]) and an image pooler (the [IMG] token), fused by an element-wise product. Every layer is a BERT layer with:

- a Switch-Attention Block (SAB, Sec. 2.3): four interaction modes (Table 1; text queries / image queries attend)
  M0 self-self (own modality / own modality), M1 self-cross (text / text), M2 cross-self (image / image) and
  M3 joint (everything / everything) share the query, key, value and output weights and differ only in the attention
  mask. A switcher averages the text tokens and the image tokens (`z_txt`, `z_img`), takes the alignment degree
  `d = z_img * z_txt`, and an MLP + softmax gives the mode probabilities; training samples the modes with a
  Gumbel-softmax at temperature tau (Eq. 7) and weights them (soft), inference takes the argmax (Eq. 8; hard).
  Top-K routing (Table 7) keeps the K most probable modes.
- a Switch-Input Block (SIB, layers l >= 2): each modality's input is the output of layer l-1 or of layer l-2,
  chosen per sample by its own switcher of the same form (four combinations).

Implementation notes (this library's choices where the paper gives no detail):
- the modes are mixed at the attention probabilities, before the shared output projection (the modes "share one
  set of attention weights"). Because the modes are block masks over `[text; regions]`, each query reads, in every
  mode, its own modality (self), the other one (cross) or both (joint): the mixture of the four modes is a per-query
  mix of three softmaxes of ONE score matrix. Soft routing therefore costs one score matrix and one value product for
  all four modes (plus two extra softmaxes); hard routing is one attention pass with a per-sample mask through the
  attention interface (sdpa / eager).
- the switchers of a layer read that layer's input (the SAB switcher reads the input chosen by the SIB; the SIB
  switchers read the output of layer l-1); every switcher is `Linear -> act -> Linear`.
- with the SAB and SIB off and joint attention (`use_switch_attention=False, use_switch_input=False`) the model is
  a plain single-stream BERT over `[text; regions]`, i.e. VOLTA's controlled UNITER, which it reproduces to 1e-5.
"""

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_switch_bert import SWITCH_BERT_ATTENTION_MODES, SwitchBertConfig


NUM_ATTENTION_MODES = len(SWITCH_BERT_ATTENTION_MODES)

# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SwitchBertModelOutput(ModelOutput):
    """Outputs of [`SwitchBertModel`].

    Args:
        text_features (`(batch_size, text_length, hidden_size)`): the text tokens after the last layer.
        image_features (`(batch_size, num_regions, hidden_size)`): the regions after the last layer; row 0 is the
            [IMG] token (the prepended global region when `config.prepend_global_region`).
        text_pooler_output, image_pooler_output (`(batch_size, pooler_size)`): `ReLU(W x[0])` of each stream.
        pooler_output (`(batch_size, pooler_size)`): `text_pooler_output * image_pooler_output`.
        attention_modes (`(batch_size, num_hidden_layers)` long): the mode each layer ran (or weighted most), as a
            mode id (0 self-self, 1 self-cross, 2 cross-self, 3 joint).
        attention_mode_probs (`(batch_size, num_hidden_layers, 4)`): the switcher's softmax over the modes (0 for
            modes outside `config.allowed_modes`); `None` without the SAB.
        attention_mode_weights (`(batch_size, num_hidden_layers, 4)`): the weights the layer applied (Gumbel-softmax
            and top-K in training, one-hot in hard routing); `None` without the SAB.
        input_choices (`(batch_size, num_hidden_layers, 2)` long): per layer and modality (text, image) the input
            it read: 0 = the output of the previous layer, 1 = the one before (always 0 in layer 1 and without SIB).
        input_probs, input_weights (`(batch_size, num_hidden_layers, 2, 2)`): the SIB switchers' probabilities and
            applied weights over (previous, one before) per modality; layer 1 reads `[1, 0]`. `None` without SIB.
        hidden_states (`tuple` of `num_hidden_layers + 1` tensors `(batch_size, text_length + num_regions,
            hidden_size)`): `[text; regions]` after the embeddings and after every layer.
        attentions (`tuple` of `num_hidden_layers` tensors `(batch_size, num_attention_heads, L, L)`): the applied
            attention probabilities (the mixture of the modes in soft routing).
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_pooler_output: torch.FloatTensor | None = None
    image_pooler_output: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    attention_modes: torch.LongTensor | None = None
    attention_mode_probs: torch.FloatTensor | None = None
    attention_mode_weights: torch.FloatTensor | None = None
    input_choices: torch.LongTensor | None = None
    input_probs: torch.FloatTensor | None = None
    input_weights: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SwitchBertForPreTrainingOutput(ModelOutput):
    """Outputs of [`SwitchBertForPreTraining`].

    Args:
        loss: weighted sum of the objectives that received labels; mlm_loss, mrm_loss, itm_loss: each one alone.
        mlm_logits (`(batch_size, text_length, vocab_size)`), mrm_logits (`(batch_size, num_input_regions,
        num_region_classes)`, the prepended [IMG] token left out), itm_logits (`(batch_size, 2)`, index 1 = match).
        pooler_output, routing, hidden states and attentions as in [`SwitchBertModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mrm_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mrm_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    attention_modes: torch.LongTensor | None = None
    attention_mode_probs: torch.FloatTensor | None = None
    attention_mode_weights: torch.FloatTensor | None = None
    input_choices: torch.LongTensor | None = None
    input_probs: torch.FloatTensor | None = None
    input_weights: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SwitchBertClassifierOutput(ModelOutput):
    """Outputs of Switch-BERT's task heads (VQA, retrieval, referring expressions).

    Args:
        loss: the task loss when `labels` are given.
        logits: VQA `(batch_size, num_labels)`; retrieval `(batch_size, 1)` for pairs or `(batch_size,
            num_candidates)` when ranking; referring expressions `(batch_size, num_input_regions)` (padded regions
            at the dtype's minimum).
        pooler_output: the fused vector the head read (referring expressions: the fused vector too).
        Routing, hidden states and attentions as in [`SwitchBertModelOutput`] (ranking: `(batch_size,
        num_candidates, ...)`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    attention_modes: torch.LongTensor | None = None
    attention_mode_probs: torch.FloatTensor | None = None
    attention_mode_weights: torch.FloatTensor | None = None
    input_choices: torch.LongTensor | None = None
    input_probs: torch.FloatTensor | None = None
    input_weights: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


_ROUTING_FIELDS = ("attention_modes", "attention_mode_probs", "attention_mode_weights", "input_choices",
                   "input_probs", "input_weights")
_PASS_THROUGH_FIELDS = _ROUTING_FIELDS + ("hidden_states", "attentions")


def _pass_through(outputs: SwitchBertModelOutput, num_candidates: int | None = None) -> dict:
    """Routing, hidden states and attentions of `outputs`; `(B * K, ...)` become `(B, K, ...)` for K candidates."""
    result = {}
    for name in _PASS_THROUGH_FIELDS:
        value = getattr(outputs, name)
        if value is not None and num_candidates is not None:
            if isinstance(value, tuple):
                value = tuple(tensor.unflatten(0, (-1, num_candidates)) for tensor in value)
            else:
                value = value.unflatten(0, (-1, num_candidates))
        result[name] = value
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Switching: the switcher, Gumbel-softmax routing, the four modes as block masks
# ----------------------------------------------------------------------------------------------------------------------


def modality_alignment(hidden_states: torch.Tensor, text_length: int, key_valid: torch.Tensor) -> torch.Tensor:
    """Switch-BERT Sec. 2.3: `d = z_img * z_txt`, the product of the mean image token and the mean text token (padding
    left out). `(B, T + N, H)`, `(B, T + N)` bool -> `(B, H)`."""
    weights = key_valid.to(hidden_states.dtype).unsqueeze(-1)  # (B, L, 1)
    text, image = hidden_states[:, :text_length], hidden_states[:, text_length:]
    text_weights, image_weights = weights[:, :text_length], weights[:, text_length:]
    z_txt = (text * text_weights).sum(1) / text_weights.sum(1).clamp(min=1.0)
    z_img = (image * image_weights).sum(1) / image_weights.sum(1).clamp(min=1.0)
    return z_img * z_txt


class SwitchBertSwitcher(nn.Module):
    """`MLP(d)`: logits over `num_choices` options (attention modes, or the two candidate inputs)."""

    def __init__(self, config: SwitchBertConfig, num_choices: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.switcher_hidden_size)
        self.activation = ACT2FN[config.switcher_act]
        self.classifier = nn.Linear(config.switcher_hidden_size, num_choices)

    def forward(self, alignment: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(self.dense(alignment)))  # (B, num_choices)


def route(logits: torch.Tensor, routing: str, training: bool, temperature: float, top_k: int):
    """Mode / input selection from switcher logits `(B, C)`. Returns `(probs, weights, choice)`:

    - `probs = softmax(logits)` (the switcher's distribution);
    - soft (training): `weights` = Gumbel-softmax sample at `temperature` (Eq. 7), reduced to its `top_k` largest
      entries and renormalised; `top_k == 1` is a straight-through one-hot sample (one-hot forward, soft gradient);
    - soft (eval, `routing="soft"`): `softmax(logits)` reduced to its top-K, without noise;
    - hard: one-hot argmax (Eq. 8): the noisy sample's argmax in training (straight-through), `argmax(logits)` in eval.

    `choice` = `argmax(weights)`. The routing runs in float32 whatever the model's dtype (a bf16 softmax rounds
    near-equal probabilities into exact ties, which the argmax then breaks towards the first choice); `probs` and
    `weights` come back in the logits' dtype.
    """
    dtype = logits.dtype
    logits = logits.float()
    probs = logits.softmax(-1)
    num_choices = logits.shape[-1]
    hard = routing == "hard" or (routing == "auto" and not training)
    if training:
        # Gumbel(0, 1) noise: -log(-log U); `exponential_` draws -log U
        gumbel = -torch.empty_like(logits).exponential_().log()
        soft = ((logits + gumbel) / temperature).softmax(-1)
    else:
        soft = probs
    if hard or top_k == 1:
        one_hot = F.one_hot(soft.argmax(-1), num_choices).to(soft.dtype)
        weights = one_hot - soft.detach() + soft if training else one_hot  # straight-through in training
    elif top_k < num_choices:
        keep = torch.zeros_like(soft).scatter(-1, soft.topk(top_k, dim=-1).indices, 1.0)
        kept = soft * keep
        weights = kept / kept.sum(-1, keepdim=True)
    else:
        weights = soft
    return probs.to(dtype), weights.to(dtype), weights.argmax(-1)


def attention_mode_table(text_length: int, total_length: int, device) -> torch.Tensor:
    """`(4, L, L)` bool: for each mode (Table 1), which keys each query of `[text; regions]` may attend."""
    is_text = torch.arange(total_length, device=device) < text_length  # (L,)
    modality = (~is_text).to(torch.int8)  # 0 text, 1 image (an int compare: inductor mis-compiles bool == bool)
    same = modality[:, None] == modality[None, :]  # (L, L): query and key in the same modality
    key_text = is_text[None, :].expand(total_length, total_length)
    return torch.stack([same, key_text, ~key_text, torch.ones_like(same)])  # M0, M1, M2, M3


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool "may attend" mask -> additive attention mask: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def attention_mode_bias(mode_table: torch.Tensor, key_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(4, B, 1, L, L)` additive attention masks, one per mode and sample: built once per forward for hard routing,
    so that each layer only gathers every sample's mask for the mode it chose."""
    return additive_mask(mode_table[:, None, None] & key_valid[None, :, None, None, :], dtype)


def mode_coefficients(mode_weights: torch.Tensor, text_length: int, total_length: int):
    """Per-query weights of the three key sets the modes combine. `mode_weights (B, 4)` ->
    `(self, cross, joint)`, each `(B, 1, L, 1)`: text queries read self in M0/M1, cross in M2; image queries read self
    in M0/M2, cross in M1; everyone reads joint in M3."""
    w0, w1, w2, w3 = mode_weights.unbind(-1)  # (B,)
    is_text = (torch.arange(total_length, device=mode_weights.device) < text_length)[None, :]  # (1, L)
    self_weight = torch.where(is_text, (w0 + w1)[:, None], (w0 + w2)[:, None])  # (B, L)
    cross_weight = torch.where(is_text, w2[:, None], w1[:, None])
    joint_weight = w3[:, None].expand_as(self_weight)
    return tuple(weight[:, None, :, None] for weight in (self_weight, cross_weight, joint_weight))


def switch_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_valid: torch.Tensor,
    same_modality: torch.Tensor,
    coefficients: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scaling: float,
    dropout: float = 0.0,
):
    """Soft Switch-Attention: the weighted sum of the four modes' attention probabilities from ONE score matrix.

    Each mode lets a query read its own modality (self), the other one (cross) or both (joint), so the mixture of the
    modes is, per query, `w_self * softmax_same + w_cross * softmax_other + w_joint * softmax_all` over the same
    scores: three fused softmaxes of masked copies of one score matrix and one product with the values, instead of
    four attention passes. Masked entries use the dtype's minimum (never a value whose `exp` is a denormal, which
    is slow on CPUs).

    `query/key/value (B, H, L, D)`, `key_valid (B, L)` bool, `same_modality (L, L)` bool, `coefficients` from
    [`mode_coefficients`]. Returns `(attn_output (B, L, H, D), attn_weights (B, H, L, L))`.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, L, L)
    minimum = torch.finfo(scores.dtype).min
    scores = scores.masked_fill(~key_valid[:, None, None, :], minimum)
    self_weight, cross_weight, joint_weight = coefficients  # (B, 1, L, 1) each
    probs_same = scores.masked_fill(~same_modality, minimum).softmax(-1)  # over the query's own modality
    probs_other = scores.masked_fill(same_modality, minimum).softmax(-1)  # over the other modality
    attn_weights = self_weight * probs_same + cross_weight * probs_other + joint_weight * scores.softmax(-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, L, H, D)
    return attn_output, attn_weights


# ----------------------------------------------------------------------------------------------------------------------
# Layers (BERT post-LN, HF BERT module names so BERT checkpoints load key for key)
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


class SwitchBertSelfAttention(nn.Module):
    """Multi-head attention shared by the four modes. A single mask (the plain model, a fixed mode, or hard routing's
    per-sample mode mask) goes through the attention interface (sdpa / eager); soft routing runs
    [`switch_attention_forward`] (eager: it mixes block softmaxes)."""

    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, soft_routing=None, output_attentions=False):
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(head_shape).transpose(1, 2)  # (B, H, L, D)
        key = self.key(hidden_states).view(head_shape).transpose(1, 2)
        value = self.value(hidden_states).view(head_shape).transpose(1, 2)
        dropout = self.dropout.p if self.training else 0.0
        if soft_routing is not None:
            key_valid, same_modality, coefficients = soft_routing
            attn_output, attn_weights = switch_attention_forward(
                self, query, key, value, key_valid, same_modality, coefficients, scaling=self.scaling, dropout=dropout
            )
        else:
            # attention weights exist only on the eager path: fall back to it when they are requested
            implementation = "eager" if output_attentions else self.config._attn_implementation
            attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
                implementation, eager_attention_forward
            )
            attn_output, attn_weights = attention_interface(
                self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling
            )
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


class SwitchBertSelfOutput(nn.Module):
    """`LayerNorm(dropout(W x) + residual)` (BERT's SelfOutput / Output, `in_size` = hidden or FFN width)."""

    def __init__(self, config: SwitchBertConfig, in_size: int):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class SwitchBertAttention(nn.Module):
    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.self = SwitchBertSelfAttention(config)
        self.output = SwitchBertSelfOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, soft_routing=None, output_attentions=False):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, soft_routing, output_attentions)
        return self.output(attn_output, hidden_states), attn_weights


# Copied from hf_vl.models.meter.modeling_meter.MeterIntermediate with Meter->SwitchBert
class SwitchBertIntermediate(nn.Module):
    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class SwitchBertLayer(GradientCheckpointingLayer):
    """One Switch-BERT layer: [Switch-Input Block] -> Switch-Attention Block -> FFN (BERT post-LN).

    `forward(hidden_states, previous_hidden_states, key_valid, mode_table, text_length, mode_bias=None)` returns
    `(hidden_states, attn_weights, mode_probs (B, 4) | None, mode_weights (B, 4) | None, modes (B,), input_probs (B, 2, 2) | None,
    input_weights (B, 2, 2) | None)`.
    """

    def __init__(self, config: SwitchBertConfig, layer_index: int):
        super().__init__()
        self.config = config
        self.layer_index = layer_index
        self.attention = SwitchBertAttention(config)
        self.intermediate = SwitchBertIntermediate(config)
        self.output = SwitchBertSelfOutput(config, config.intermediate_size)
        switching = config.use_switch_attention and len(config.allowed_modes) > 1
        self.attention_switcher = SwitchBertSwitcher(config, len(config.allowed_modes)) if switching else None
        # Switch-Input Block: layers l >= 2 (index >= 1), one switcher per modality over (X_{l-1}, X_{l-2})
        has_input_switch = config.use_switch_input and layer_index >= 1
        self.text_input_switcher = SwitchBertSwitcher(config, 2) if has_input_switch else None
        self.image_input_switcher = SwitchBertSwitcher(config, 2) if has_input_switch else None

    def _route(self, logits, top_k):
        config = self.config
        return route(logits, config.switch_routing, self.training, config.gumbel_temperature, min(top_k, logits.shape[-1]))

    def _switch_input(self, hidden_states, previous_hidden_states, key_valid, text_length):
        """Switch-Input Block: each modality's input is a (soft or one-hot) mix of X_{l-1} and X_{l-2}."""
        alignment = modality_alignment(hidden_states, text_length, key_valid)
        text_probs, text_weights, _ = self._route(self.text_input_switcher(alignment), self.config.switch_top_k)
        image_probs, image_weights, _ = self._route(self.image_input_switcher(alignment), self.config.switch_top_k)
        is_text = (torch.arange(hidden_states.shape[1], device=hidden_states.device) < text_length)[None, :, None]
        earlier_weight = torch.where(is_text, text_weights[:, None, 1:], image_weights[:, None, 1:])  # (B, L, 1)
        if self.training or self.config.switch_routing == "soft":  # soft weights: mix the two candidate inputs
            current_weight = torch.where(is_text, text_weights[:, None, :1], image_weights[:, None, :1])
            mixed = current_weight * hidden_states + earlier_weight * previous_hidden_states
        else:  # one-hot weights: pick (one pass over the states instead of two products and a sum)
            mixed = torch.where(earlier_weight > 0.5, previous_hidden_states, hidden_states)
        return mixed, torch.stack([text_probs, image_probs], 1), torch.stack([text_weights, image_weights], 1)

    def forward(self, hidden_states, previous_hidden_states, key_valid, mode_table, text_length,
                output_attentions=False, mode_bias=None):
        config = self.config
        batch_size, total_length = hidden_states.shape[:2]
        input_probs = input_weights = None
        if self.text_input_switcher is not None:
            hidden_states, input_probs, input_weights = self._switch_input(
                hidden_states, previous_hidden_states, key_valid, text_length
            )
        mode_probs = mode_weights = None
        soft_routing = attention_mask = None
        if self.attention_switcher is None:
            mode = config.fixed_attention_mode if not config.use_switch_attention else config.allowed_modes[0]
            modes = torch.full((batch_size,), mode, dtype=torch.long, device=hidden_states.device)
            # joint attention (the plain model) only masks padded keys: a broadcast (B, 1, 1, L) mask
            allowed = key_valid[:, None, None, :] if mode == 3 else mode_table[mode][None, None] & key_valid[:, None, None, :]
            attention_mask = additive_mask(allowed, hidden_states.dtype)
        else:
            alignment = modality_alignment(hidden_states, text_length, key_valid)
            logits = self.attention_switcher(alignment)  # (B, len(allowed_modes))
            probs, weights, choice = self._route(logits, config.switch_top_k)
            if tuple(config.allowed_modes) == tuple(range(NUM_ATTENTION_MODES)):  # every mode: already (B, 4)
                mode_probs, mode_weights, modes = probs, weights, choice
            else:  # (B, C) over the allowed modes -> (B, 4) over every mode
                selector = torch.eye(NUM_ATTENTION_MODES, device=logits.device, dtype=logits.dtype)[config.allowed_modes]
                mode_probs, mode_weights = probs @ selector, weights @ selector
                modes = torch.tensor(config.allowed_modes, device=logits.device)[choice]
            if self.training or config.switch_routing == "soft":
                coefficients = mode_coefficients(mode_weights, text_length, total_length)
                soft_routing = (key_valid, mode_table[0], coefficients)  # mode_table[0]: same-modality mask
            else:  # hard routing: one pass with each sample's mode mask, gathered from the per-mode masks
                if mode_bias is None:  # the layer called on its own (the model builds them once per forward)
                    mode_bias = attention_mode_bias(mode_table, key_valid, hidden_states.dtype)
                attention_mask = mode_bias[modes, torch.arange(batch_size, device=modes.device)]  # (B, 1, L, L)
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, soft_routing, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attn_weights, mode_probs, mode_weights, modes, input_probs, input_weights


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings and poolers
# ----------------------------------------------------------------------------------------------------------------------


class SwitchBertEmbeddings(nn.Module):
    """BERT text embeddings and UNITER region embeddings (VOLTA's `UniterEmbeddings` names).

    Text: `LayerNorm(word + position + token_type)`. Regions: `v_LayerNorm(image_layer_norm(W_f feat) +
    image_location_layer_norm(W_l box) + token_type[region_token_type_id])`; the token-type table is shared.
    """

    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.image_embeddings = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.image_location_embeddings = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.image_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.image_location_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.v_LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def embed_text(self, input_ids, token_type_ids=None):
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))

    def embed_regions(self, visual_feats, visual_pos):
        region_type = self.token_type_embeddings.weight[self.config.region_token_type_id]  # (H,)
        embeddings = (
            self.image_layer_norm(self.image_embeddings(visual_feats))
            + self.image_location_layer_norm(self.image_location_embeddings(visual_pos))
            + region_type
        )
        return self.dropout(self.v_LayerNorm(embeddings))


class SwitchBertPooler(nn.Module):
    """`activation(W x[:, 0])` projecting to `config.pooler_size` (VOLTA: ReLU)."""

    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_size)
        self.activation = ACT2FN[config.pooler_act]

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


# Copied from hf_vl.models.interbert.modeling_interbert.prepend_global_region
def prepend_global_region(visual_feats, visual_pos, visual_attention_mask):
    """Prepends the global image region: the mean of the unmasked regions' features, the whole-image box
    (`[0, 0, 1, 1]` plus area 1 for 5-d locations) and mask 1. `(B, N, D), (B, N, P), (B, N)` -> `N + 1` rows."""
    weights = visual_attention_mask.to(visual_feats.dtype).unsqueeze(-1)  # (B, N, 1)
    global_feat = (visual_feats * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
    global_pos = torch.ones_like(visual_pos[:, :1])  # (B, 1, P): x2 = y2 = area = 1 ...
    global_pos[..., :2] = 0.0  # ... x1 = y1 = 0
    global_mask = torch.ones_like(visual_attention_mask[:, :1])
    return (
        torch.cat([global_feat, visual_feats], dim=1),
        torch.cat([global_pos, visual_pos], dim=1),
        torch.cat([global_mask, visual_attention_mask], dim=1),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------------


# Copied from hf_vl.models.meter.modeling_meter.MeterPredictionHeadTransform with Meter->SwitchBert
class SwitchBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class SwitchBertMLMHead(nn.Module):
    """Masked language modelling head; the decoder is tied to the word embeddings (`config.tie_word_embeddings`)."""

    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.transform = SwitchBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class SwitchBertRegionHead(nn.Module):
    """Transform + linear decoder per region: masked region classification (`num_region_classes` outputs) and the
    referring-expression score (1 output)."""

    def __init__(self, config: SwitchBertConfig, num_outputs: int):
        super().__init__()
        self.transform = SwitchBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, num_outputs)

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class SwitchBertVQAHead(nn.Module):
    """Paper Sec. 3 (VQA): two FC layers on the fused vector, `Linear -> GELU -> LayerNorm -> Linear`."""

    def __init__(self, config: SwitchBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.pooler_size, config.qa_hidden_size)
        self.activation = ACT2FN["gelu"]
        self.LayerNorm = nn.LayerNorm(config.qa_hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.qa_hidden_size, config.num_labels)

    def forward(self, pooled_output):
        return self.classifier(self.LayerNorm(self.activation(self.dense(pooled_output))))


# ----------------------------------------------------------------------------------------------------------------------
# Base model
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


# Copied from hf_vl.models.interbert.modeling_interbert._check_integer with InterBert->SwitchBert
def _check_integer(name: str, tensor: torch.Tensor | None) -> None:
    if tensor is not None and (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"`{name}` must be an integer (or bool) tensor, got dtype {tensor.dtype}.")


class SwitchBertPreTrainedModel(PreTrainedModel):
    config_class = SwitchBertConfig
    config: SwitchBertConfig
    base_model_prefix = "switch_bert"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["SwitchBertLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """`_init_weights` only uses the flag-aware `transformers.initialization` functions, so weights missing from a
        checkpoint get exactly the init of a fresh model (also when loaded as remote code)."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Embedding / LayerNorm with `config.initializer_range`
        if isinstance(module, SwitchBertMLMHead):
            init.zeros_(module.bias)

    def set_gumbel_temperature(self, temperature: float) -> None:
        """Sets tau of the Gumbel-softmax (paper Eq. 7) for every layer (`config.gumbel_temperature`)."""
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` must be a float > 0, got {temperature!r}.")
        self.config.gumbel_temperature = float(temperature)

    def validate_input_values(self, input_ids=None, attention_mask=None, token_type_ids=None, visual_feats=None,
                              visual_pos=None, visual_attention_mask=None, labels=None, **unused) -> None:
        """Value checks: ids in range, 0/1 masks with a token and a region per row, finite features, boxes in [0, 1].
        They read tensor values (a device sync), so `forward` runs them only in eager mode and only while
        `config.check_input_values` is True. Raises `ValueError` naming the argument and the offending value."""
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
            empty = mask.flatten(0, -2).sum(-1) == 0
            if bool(empty.any()) and not (name == "visual_attention_mask" and config.prepend_global_region):
                rows = empty.nonzero().flatten().tolist()
                raise ValueError(f"`{name}` rows {rows} are all zeros: every example needs a token and a region.")
        if visual_feats is not None and not bool(torch.isfinite(visual_feats).all()):
            raise ValueError("`visual_feats` contains NaN or inf values.")
        if visual_pos is not None and visual_pos.numel():
            eps = 1e-5
            if (not bool(torch.isfinite(visual_pos).all()) or float(visual_pos.min()) < -eps
                    or float(visual_pos.max()) > 1 + eps):
                raise ValueError(
                    "`visual_pos` must hold boxes normalised to [0, 1], got values in "
                    f"[{float(visual_pos.min())}, {float(visual_pos.max())}]."
                )
        if labels is not None:
            self._validate_label_values(labels)

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
            raise ValueError("`labels` contains NaN or inf.")

    def _check_inputs(self, **inputs) -> None:
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self.validate_input_values(**inputs)

    @classmethod
    def from_bert_pretrained(cls, bert_model_name_or_path, **config_kwargs) -> "SwitchBertPreTrainedModel":
        """Builds Switch-BERT from a BERT checkpoint (the paper initialises from BERT-base): word, position and
        segment embeddings and the first `num_hidden_layers` BERT layers are copied; `v_LayerNorm` starts as the text
        LayerNorm (as VOLTA's UNITER); region embeddings, switchers, poolers and heads are new.

        Args:
            bert_model_name_or_path: a BERT-layout checkpoint (path, Hub id or a loaded `BertModel`), e.g. the shipped
                all-MiniLM-L6-v2 (`hf_vl.training.local_pretrained_path("all-MiniLM-L6-v2")`).
            config_kwargs: [`SwitchBertConfig`] fields; the BERT sizes are taken from the checkpoint, and
                `num_hidden_layers` defaults to all its layers.

        Called on a head class it returns that head.

        Example:

        ```python
        >>> from hf_vl import SwitchBertForQuestionAnswering
        >>> from hf_vl.training import local_pretrained_path
        >>> model = SwitchBertForQuestionAnswering.from_bert_pretrained(
        ...     local_pretrained_path("all-MiniLM-L6-v2"), visual_feat_dim=31, visual_pos_dim=4, num_labels=13
        ... )
        ```
        """
        bert = bert_model_name_or_path
        if not isinstance(bert, PreTrainedModel):
            bert = AutoModel.from_pretrained(bert_model_name_or_path, add_pooling_layer=False)
        if not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
            raise ValueError(
                "`bert_model_name_or_path` must be a BERT-layout encoder (embeddings + encoder.layer), got "
                f"{type(bert).__name__}."
            )
        bert_config = bert.config
        shared = ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act",
                  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range")
        defaults = {name: getattr(bert_config, name) for name in shared}
        defaults.update(pad_token_id=bert_config.pad_token_id or 0, num_hidden_layers=bert_config.num_hidden_layers,
                        qa_hidden_size=2 * bert_config.hidden_size)
        config = SwitchBertConfig(**{**defaults, **config_kwargs})
        if config.num_hidden_layers > bert_config.num_hidden_layers:
            raise ValueError(
                f"`num_hidden_layers` ({config.num_hidden_layers}) exceeds the {bert_config.num_hidden_layers} layers "
                "of the BERT checkpoint they are initialised from."
            )
        for name in shared[:7]:
            if getattr(config, name) != getattr(bert_config, name):
                raise ValueError(f"`{name}` ({getattr(config, name)}) must equal the BERT checkpoint's "
                                 f"({getattr(bert_config, name)}).")
        model = cls(config)
        own_state = model.base_model.state_dict()
        target = {}
        for key, tensor in bert.state_dict().items():
            if key.startswith("embeddings.") and "position_ids" not in key:
                target[key] = tensor
            elif key.startswith("encoder.layer."):
                index, rest = key[len("encoder.layer."):].split(".", 1)
                if int(index) < config.num_hidden_layers:
                    target[f"layers.{index}.{rest}"] = tensor
        target["embeddings.v_LayerNorm.weight"] = target["embeddings.LayerNorm.weight"]
        target["embeddings.v_LayerNorm.bias"] = target["embeddings.LayerNorm.bias"]
        unknown = [key for key in target if key not in own_state]
        if unknown:
            raise ValueError(f"BERT weights without a Switch-BERT parameter: {unknown[:5]}")
        with torch.no_grad():
            for key, tensor in target.items():
                own_state[key].copy_(tensor)
        model.tie_weights()
        return model


class SwitchBertModel(SwitchBertPreTrainedModel):
    """Switch-BERT: text + region embeddings -> Switch-BERT layers over `[text; regions]` -> poolers and their product.

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import SwitchBertConfig, SwitchBertModel
    >>> model = SwitchBertModel(SwitchBertConfig(num_hidden_layers=2, visual_feat_dim=16)).eval()
    >>> outputs = model(input_ids=torch.tensor([[101, 2003, 102]]), visual_feats=torch.randn(1, 5, 16),
    ...                 visual_pos=torch.rand(1, 5, 5).sort(-1).values)
    >>> outputs.attention_modes.shape  # the mode each layer ran for each sample
    torch.Size([1, 2])
    ```
    """

    def __init__(self, config: SwitchBertConfig):
        super().__init__(config)
        self.embeddings = SwitchBertEmbeddings(config)
        self.layers = nn.ModuleList([SwitchBertLayer(config, index) for index in range(config.num_hidden_layers)])
        self.text_pooler = SwitchBertPooler(config)
        self.image_pooler = SwitchBertPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    def region_inputs(self, visual_feats, visual_pos, visual_attention_mask=None):
        """The regions the layers see: the [IMG] (global) region prepended (`config.prepend_global_region`), a mask
        of ones when none is given. Returns `(visual_feats, visual_pos, visual_attention_mask)`."""
        if visual_attention_mask is None:
            visual_attention_mask = torch.ones(visual_feats.shape[:2], dtype=torch.long, device=visual_feats.device)
        if self.config.prepend_global_region:
            return prepend_global_region(visual_feats, visual_pos, visual_attention_mask)
        return visual_feats, visual_pos, visual_attention_mask

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SwitchBertModelOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)`): WordPiece ids ([CLS] first: the text pooler reads token 0).
            attention_mask (`(batch_size, text_length)`): 1 for real tokens, 0 for padding.
            token_type_ids (`(batch_size, text_length)`, *optional*): segment ids.
            visual_feats (`(batch_size, num_regions, visual_feat_dim)`): region features (LXMERT's input).
            visual_pos (`(batch_size, num_regions, visual_pos_dim)`): boxes normalised to [0, 1] (`x1, y1, x2, y2`
                and, for `visual_pos_dim=5`, the area).
            visual_attention_mask (`(batch_size, num_regions)`, *optional*): 1 for real regions, 0 for padding.
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions = kwargs.get("output_attentions")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = kwargs.get("output_hidden_states")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        self._validate_input_shapes(input_ids, attention_mask, token_type_ids, visual_feats, visual_pos,
                                    visual_attention_mask)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           visual_feats=visual_feats, visual_pos=visual_pos,
                           visual_attention_mask=visual_attention_mask)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.embeddings.embed_text(input_ids, token_type_ids)  # (B, T, H)
        visual_feats, visual_pos, image_mask = self.region_inputs(visual_feats, visual_pos, visual_attention_mask)
        image = self.embeddings.embed_regions(visual_feats, visual_pos)  # (B, N, H)
        text_length = text.shape[1]
        hidden_states = torch.cat([text, image], dim=1)  # (B, T + N, H): VOLTA's order, text first
        key_valid = torch.cat([attention_mask.bool(), image_mask.bool()], dim=1)  # (B, T + N)
        mode_table = attention_mode_table(text_length, hidden_states.shape[1], hidden_states.device)  # (4, L, L)
        config = self.config
        hard_routing = (not self.training and config.switch_routing != "soft"  # the layers' hard-mask path
                        and config.use_switch_attention and len(config.allowed_modes) > 1)  # fmt: skip
        mode_bias = attention_mode_bias(mode_table, key_valid, hidden_states.dtype) if hard_routing else None

        all_hidden, all_attentions, routing = [hidden_states], [], []
        previous = hidden_states  # X_{l-2}; layer 1 has no SIB
        for layer in self.layers:
            layer_outputs = layer(hidden_states, previous, key_valid, mode_table, text_length,
                                  output_attentions=output_attentions, mode_bias=mode_bias)
            previous, hidden_states = hidden_states, layer_outputs[0]
            all_hidden.append(hidden_states)
            all_attentions.append(layer_outputs[1])
            routing.append(layer_outputs[2:])

        text_features, image_features = hidden_states[:, :text_length], hidden_states[:, text_length:]
        text_pooled = self.text_pooler(text_features)
        image_pooled = self.image_pooler(image_features)
        return SwitchBertModelOutput(
            text_features=text_features,
            image_features=image_features,
            text_pooler_output=text_pooled,
            image_pooler_output=image_pooled,
            pooler_output=text_pooled * image_pooled,  # VOLTA `fusion_method="mul"`
            **self._stack_routing(routing, hidden_states),
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )

    def _stack_routing(self, routing, hidden_states) -> dict:
        """Per-layer routing tuples -> `(B, num_layers, ...)` tensors (see [`SwitchBertModelOutput`])."""
        batch_size, device, dtype = hidden_states.shape[0], hidden_states.device, hidden_states.dtype
        mode_probs, mode_weights, modes, input_probs, input_weights = zip(*routing)
        result = {"attention_modes": torch.stack(modes, 1)}
        if self.config.use_switch_attention and len(self.config.allowed_modes) > 1:
            result["attention_mode_probs"] = torch.stack(mode_probs, 1)
            result["attention_mode_weights"] = torch.stack(mode_weights, 1)
        first_layer = torch.tensor([[1.0, 0.0], [1.0, 0.0]], device=device, dtype=dtype).expand(batch_size, 2, 2)
        if self.config.use_switch_input:
            probs = [first_layer if p is None else p for p in input_probs]
            weights = [first_layer if w is None else w for w in input_weights]
            result["input_probs"], result["input_weights"] = torch.stack(probs, 1), torch.stack(weights, 1)
            result["input_choices"] = result["input_weights"].argmax(-1)
        else:
            result["input_choices"] = torch.zeros(batch_size, len(routing), 2, dtype=torch.long, device=device)
        return result

    def _validate_input_shapes(self, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos,
                               visual_attention_mask):
        """Shape and type checks only (no tensor values are read: `torch.compile(fullgraph=True)` traces them)."""
        config = self.config
        if input_ids is None:
            raise ValueError("Switch-BERT needs text: `input_ids` is None (tokenise the text with the processor).")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch_size, text_length), got shape {tuple(input_ids.shape)}.")
        _check_integer("input_ids", input_ids)
        batch_size, text_length = input_ids.shape
        if text_length == 0:
            raise ValueError("`input_ids` is empty (text_length 0): every example needs at least one token.")
        if text_length > config.max_position_embeddings:
            raise ValueError(
                f"`input_ids` has {text_length} tokens but the position table holds {config.max_position_embeddings} "
                "(tokenise with truncation=True, max_length=...)."
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and tuple(tensor.shape) != (batch_size, text_length):
                raise ValueError(
                    f"`{name}` shape {tuple(tensor.shape)} must equal `input_ids` shape {(batch_size, text_length)}."
                )
            _check_integer(name, tensor)
        if visual_feats is None:
            raise ValueError(
                "Switch-BERT needs regions: `visual_feats` is None (its switchers compare the two modalities)."
            )
        if visual_pos is None:
            raise ValueError("`visual_feats` needs `visual_pos` (the normalised region boxes).")
        if not isinstance(visual_feats, torch.Tensor) or not visual_feats.is_floating_point():
            raise TypeError(f"`visual_feats` must be a floating point tensor, got {getattr(visual_feats, 'dtype', type(visual_feats))}.")
        if visual_feats.dim() != 3 or visual_feats.shape[0] != batch_size or visual_feats.shape[2] != config.visual_feat_dim:
            raise ValueError(
                f"`visual_feats` must be (batch_size={batch_size}, num_regions, visual_feat_dim={config.visual_feat_dim}),"
                f" got shape {tuple(visual_feats.shape)}."
            )
        if visual_feats.shape[1] == 0 and not config.prepend_global_region:
            raise ValueError("`visual_feats` has 0 regions.")
        expected = (batch_size, visual_feats.shape[1])
        if not isinstance(visual_pos, torch.Tensor) or not visual_pos.is_floating_point():
            raise TypeError(f"`visual_pos` must be a floating point tensor, got {getattr(visual_pos, 'dtype', type(visual_pos))}.")
        if tuple(visual_pos.shape) != (*expected, config.visual_pos_dim):
            raise ValueError(
                f"`visual_pos` must be (batch_size, num_regions, visual_pos_dim) = {(*expected, config.visual_pos_dim)}, "
                f"got shape {tuple(visual_pos.shape)}."
            )
        if visual_attention_mask is not None:
            if tuple(visual_attention_mask.shape) != expected:
                raise ValueError(
                    f"`visual_attention_mask` must be (batch_size, num_regions) = {expected}, got shape "
                    f"{tuple(visual_attention_mask.shape)}."
                )
            _check_integer("visual_attention_mask", visual_attention_mask)


# ----------------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------------


# Copied from hf_vl.models.meter.modeling_meter._single_label_loss
def _single_label_loss(logits, labels):
    if labels is None:
        return None
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
    return F.cross_entropy(logits, labels.to(logits.device).long())


def _input_regions(model: SwitchBertPreTrainedModel, image_features: torch.Tensor) -> torch.Tensor:
    """The image states of the regions passed in `visual_feats` (the prepended [IMG] token left out)."""
    return image_features[:, 1:] if model.config.prepend_global_region else image_features


class SwitchBertForPreTraining(SwitchBertPreTrainedModel):
    """Switch-BERT with its pre-training heads: masked language modelling with visual clues (MLM, `mlm_labels`),
    masked region classification with KL divergence to the detector's class distribution (MRC-KL, `mrm_labels` +
    `mrm_mask`; class ids with cross-entropy also work) and image-text matching (ITM, `itm_labels`, 1 = match).

    The masking lives in the collators (`hf_vl.data`: MLM 15% of tokens, 15% of regions with zeroed features). As in
    UNITER, the region loss counts matched pairs only when `itm_labels` is given. The total loss is
    `mlm_loss_weight * mlm + mrm_loss_weight * mrm + itm_loss_weight * itm` over the objectives with labels.
    """

    accepts_loss_kwargs = False
    _tied_weights_keys = {"mlm_head.decoder.weight": "switch_bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: SwitchBertConfig):
        super().__init__(config)
        self.switch_bert = SwitchBertModel(config)
        self.mlm_head = SwitchBertMLMHead(config)
        self.mrm_head = SwitchBertRegionHead(config, config.num_region_classes)
        self.itm_head = nn.Linear(config.pooler_size, 2)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Installs a new MLM decoder (e.g. from `resize_token_embeddings`) and resizes its bias (new rows zero)."""
        self.mlm_head.decoder = new_embeddings
        old_bias = self.mlm_head.bias.data
        new_size = new_embeddings.out_features
        if new_size != old_bias.shape[0]:
            bias = torch.zeros(new_size, device=old_bias.device, dtype=old_bias.dtype)
            keep = min(new_size, old_bias.shape[0])
            bias[:keep] = old_bias[:keep]
            self.mlm_head.bias = nn.Parameter(bias)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        mrm_labels: torch.Tensor | None = None,
        mrm_mask: torch.Tensor | None = None,
        itm_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SwitchBertForPreTrainingOutput:
        r"""
        Args:
            mlm_labels (`(batch_size, text_length)`): original ids of the masked tokens, -100 elsewhere.
            mrm_labels: for the regions of `visual_feats`, `(batch_size, num_regions, num_region_classes)` detector
                class distributions of the regions marked in `mrm_mask` (MRC-KL), or `(batch_size, num_regions)`
                class ids of the masked regions (-100 elsewhere; cross-entropy).
            mrm_mask (`(batch_size, num_regions)` bool): the masked regions; required with distributions.
            itm_labels (`(batch_size,)`): 1 when the text describes the image, 0 otherwise.
            Other arguments as in [`SwitchBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(mlm_labels=mlm_labels, mrm_labels=mrm_labels, itm_labels=itm_labels)
        outputs = self.switch_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask, **kwargs,
        )
        mlm_logits = self.mlm_head(outputs.text_features)
        mrm_logits = self.mrm_head(_input_regions(self, outputs.image_features))  # (B, N, num_region_classes)
        itm_logits = self.itm_head(self.dropout(outputs.pooler_output))
        losses = {}
        if mlm_labels is not None:
            if mlm_labels.shape != mlm_logits.shape[:2]:
                raise ValueError(
                    f"`mlm_labels` must be (batch_size, text_length) = {tuple(mlm_logits.shape[:2])}, got "
                    f"{tuple(mlm_labels.shape)}."
                )
            # mean over the masked tokens; 0 (not NaN) for a batch where masking chose none (short captions)
            labels = mlm_labels.to(mlm_logits.device).flatten()
            per_token = F.cross_entropy(mlm_logits.flatten(0, 1), labels, ignore_index=-100, reduction="sum")
            losses["mlm_loss"] = per_token / (labels != -100).sum().clamp(min=1).to(per_token.dtype)
        if mrm_labels is not None:
            losses["mrm_loss"] = self._mrm_loss(mrm_logits, mrm_labels, mrm_mask, itm_labels)
        if itm_labels is not None:
            if itm_labels.shape != itm_logits.shape[:1]:
                raise ValueError(f"`itm_labels` must be (batch_size,), got {tuple(itm_labels.shape)}.")
            losses["itm_loss"] = F.cross_entropy(itm_logits, itm_labels.to(itm_logits.device).long())
        weights = {"mlm_loss": self.config.mlm_loss_weight, "mrm_loss": self.config.mrm_loss_weight,
                   "itm_loss": self.config.itm_loss_weight}
        return SwitchBertForPreTrainingOutput(
            loss=sum(weights[name] * value for name, value in losses.items()) if losses else None,
            mlm_loss=losses.get("mlm_loss"),
            mrm_loss=losses.get("mrm_loss"),
            itm_loss=losses.get("itm_loss"),
            mlm_logits=mlm_logits,
            mrm_logits=mrm_logits,
            itm_logits=itm_logits,
            pooler_output=outputs.pooler_output,
            **_pass_through(outputs),
        )

    @staticmethod
    def _mrm_loss(mrm_logits, mrm_labels, mrm_mask, itm_labels):
        """Masked region classification over matched pairs (`itm_labels == 1`, or every pair without ITM labels)."""
        batch_regions = tuple(mrm_logits.shape[:2])
        matched = None if itm_labels is None else itm_labels.to(mrm_logits.device)[:, None] == 1  # (B, 1)
        if not mrm_labels.is_floating_point():  # class ids
            if tuple(mrm_labels.shape) != batch_regions:
                raise ValueError(
                    f"`mrm_labels` class ids must be (batch_size, num_regions) = {batch_regions}, got "
                    f"{tuple(mrm_labels.shape)}."
                )
            labels = mrm_labels.to(mrm_logits.device).long()
            if matched is not None:
                labels = labels.masked_fill(~matched, -100)
            counted = (labels != -100).to(mrm_logits.dtype)
            per_region = F.cross_entropy(mrm_logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # (B, N)
            return (per_region * counted).sum() / counted.sum().clamp(min=1.0)
        if tuple(mrm_labels.shape) != tuple(mrm_logits.shape):
            raise ValueError(
                f"`mrm_labels` distributions must be (batch_size, num_regions, num_region_classes) = "
                f"{tuple(mrm_logits.shape)}, got {tuple(mrm_labels.shape)}."
            )
        if mrm_mask is None or tuple(mrm_mask.shape) != batch_regions:
            raise ValueError(
                f"`mrm_mask` (batch_size, num_regions) = {batch_regions} must mark the masked regions when "
                f"`mrm_labels` are distributions, got {None if mrm_mask is None else tuple(mrm_mask.shape)}."
            )
        counted = mrm_mask.to(mrm_logits.device).bool()
        if matched is not None:
            counted = counted & matched
        # MRC-KL: KL(detector distribution || softmax(logits)) per masked region, summed over classes
        kl = F.kl_div(F.log_softmax(mrm_logits, dim=-1), mrm_labels.to(mrm_logits.dtype), reduction="none").sum(-1)
        return (kl * counted.to(kl.dtype)).sum() / counted.sum().clamp(min=1).to(kl.dtype)

    def validate_input_values(self, mlm_labels=None, mrm_labels=None, itm_labels=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        vocab_size, num_classes = self.config.vocab_size, self.config.num_region_classes
        if mlm_labels is not None and not bool(((mlm_labels == -100) | ((mlm_labels >= 0) & (mlm_labels < vocab_size))).all()):
            raise ValueError(f"`mlm_labels` must be -100 or token ids in [0, {vocab_size}).")
        if mrm_labels is not None and mrm_labels.is_floating_point():
            if not bool(torch.isfinite(mrm_labels).all()) or float(mrm_labels.min()) < 0:
                raise ValueError("`mrm_labels` class distributions must be finite and non-negative.")
        elif mrm_labels is not None and not bool(
            ((mrm_labels == -100) | ((mrm_labels >= 0) & (mrm_labels < num_classes))).all()
        ):
            raise ValueError(f"`mrm_labels` must be -100 or region class ids in [0, {num_classes}).")
        if itm_labels is not None and not bool(((itm_labels == 0) | (itm_labels == 1)).all()):
            raise ValueError(f"`itm_labels` must be 0 (mismatch) or 1 (match), got {itm_labels.tolist()[:6]}.")


class SwitchBertForQuestionAnswering(SwitchBertPreTrainedModel):
    """Switch-BERT for VQA (paper Sec. 3): the element-wise product of the image and text representations through two
    FC layers to the answer vocabulary; multi-label soft scores, binary cross-entropy times the number of answers."""

    accepts_loss_kwargs = False

    def __init__(self, config: SwitchBertConfig):
        super().__init__(config)
        self.switch_bert = SwitchBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = SwitchBertVQAHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        labels: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SwitchBertClassifierOutput:
        r"""
        Args:
            labels (`(batch_size, num_labels)` float): soft VQA scores of every answer, in [0, 1].
            Other arguments as in [`SwitchBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(labels=labels)
        outputs = self.switch_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask, **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"`labels` must be soft scores of shape (batch_size, num_labels) = {tuple(logits.shape)}, got "
                    f"{tuple(labels.shape)}."
                )
            labels = labels.to(logits.device, logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits, labels) * labels.shape[1]
        return SwitchBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_pass_through(outputs)
        )

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        super()._validate_label_values(labels)
        if labels.numel() and (float(labels.min()) < 0 or float(labels.max()) > 1):
            raise ValueError(
                f"`labels` must be soft VQA scores in [0, 1], got values in [{float(labels.min())}, "
                f"{float(labels.max())}] (class indices? use hf_vl.data.soft_target_tensor)."
            )


# Copied from hf_vl.models.interbert.modeling_interbert._expand_choices
def _expand_choices(num_choices, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos,
                    visual_attention_mask):
    """`(B, K, L)` texts with `(B, N, D)` (shared) or `(B, K, N, D)` regions -> flat `(B * K, ...)` inputs."""
    flat = lambda t: None if t is None else t.flatten(0, 1)  # noqa: E731  (B, K, ...) -> (B * K, ...)
    if visual_feats is not None and visual_feats.dim() == 3:  # one image shared by the K candidates
        repeat = lambda t: None if t is None else t.repeat_interleave(num_choices, dim=0)  # noqa: E731
        visual_feats, visual_pos, visual_attention_mask = map(repeat, (visual_feats, visual_pos, visual_attention_mask))
    elif visual_feats is not None:
        if visual_feats.dim() != 4 or visual_feats.shape[1] != num_choices:
            raise ValueError(
                f"`visual_feats` must be (batch_size, num_regions, dim) or (batch_size, num_choices={num_choices}, "
                f"num_regions, dim), got {tuple(visual_feats.shape)}."
            )
        visual_feats, visual_pos, visual_attention_mask = map(flat, (visual_feats, visual_pos, visual_attention_mask))
    return {
        "input_ids": flat(input_ids), "attention_mask": flat(attention_mask), "token_type_ids": flat(token_type_ids),
        "visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": visual_attention_mask,
    }


class SwitchBertForImageAndTextRetrieval(SwitchBertPreTrainedModel):
    """Switch-BERT for image-text retrieval: an ITM score per (image, text) pair from the fused representation.

    Two ways to train:
    - pairs: `input_ids (B, L)`, regions `(B, N, D)`, `labels (B,)` 1/0 -> binary cross-entropy;
    - ranking (the paper's 4-way multiple choice: the true pair, a random caption, a random image, a hard image
      negative): `input_ids (B, K, L)` and regions `(B, K, N, D)` (or `(B, N, D)` shared), `labels (B,)` = index of
      the true candidate -> cross-entropy over the K scores; `logits` are `(B, K)`.
    `hf_vl.metrics` computes recall@K from the scores.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: SwitchBertConfig):
        super().__init__(config)
        self.switch_bert = SwitchBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.rank_output = nn.Linear(config.pooler_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SwitchBertClassifierOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)` or `(batch_size, num_candidates, text_length)`).
            labels: `(batch_size,)` 1/0 match labels for pairs, or the index of the true candidate in ranking mode.
            Other arguments as in [`SwitchBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  "visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": visual_attention_mask}
        num_candidates = None
        if input_ids is not None and input_ids.dim() == 3:
            num_candidates = input_ids.shape[1]
            inputs = _expand_choices(num_candidates, **inputs)
        self._check_inputs(labels=labels, num_candidates=num_candidates)
        outputs = self.switch_bert(**inputs, **kwargs)
        logits = self.rank_output(self.dropout(outputs.pooler_output))  # (B [* K], 1)
        loss = None
        if num_candidates is not None:
            logits = logits.reshape(-1, num_candidates)
            loss = _single_label_loss(logits, labels)
        elif labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"`labels` must be (batch_size,) 1/0 match labels, got {tuple(labels.shape)}.")
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.device, logits.dtype))
        pooled = outputs.pooler_output
        if num_candidates is not None:
            pooled = pooled.unflatten(0, (-1, num_candidates))
        return SwitchBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=pooled, **_pass_through(outputs, num_candidates)
        )

    @classmethod
    def from_pretraining_model(cls, pretraining_model: "SwitchBertForPreTraining") -> "SwitchBertForImageAndTextRetrieval":
        """Zero-shot retrieval with the pre-trained ITM head: the same backbone, and `rank_output` = the ITM head's
        log-odds of "match" (`W[1] - W[0]`, `b[1] - b[0]`)."""
        model = cls(pretraining_model.config)
        model.switch_bert.load_state_dict(pretraining_model.switch_bert.state_dict())
        weight, bias = pretraining_model.itm_head.weight, pretraining_model.itm_head.bias
        with torch.no_grad():
            model.rank_output.weight.copy_((weight[1] - weight[0])[None])
            model.rank_output.bias.copy_((bias[1] - bias[0])[None])
        return model.train(pretraining_model.training)

    def validate_input_values(self, labels=None, num_candidates=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        if labels is None or not labels.numel():
            return
        if num_candidates is None and not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"`labels` must be 1 (match) or 0 (mismatch) for pairs, got {labels.tolist()[:6]}.")
        if num_candidates is not None and (int(labels.min()) < 0 or int(labels.max()) >= num_candidates):
            raise ValueError(
                f"`labels` must be the index of the true candidate in [0, {num_candidates}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )


class SwitchBertForReferringExpression(SwitchBertPreTrainedModel):
    """Switch-BERT for referring expression comprehension (paper Sec. 3): a matching score per region (transform +
    linear on each region's final state), regressed with binary cross-entropy to the region's IoU with the
    ground-truth box; the prediction is the highest-scoring region, correct when its IoU >= 0.5
    ([`SwitchBertForReferringExpression.accuracy`])."""

    accepts_loss_kwargs = False

    def __init__(self, config: SwitchBertConfig):
        super().__init__(config)
        self.switch_bert = SwitchBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.region_scorer = SwitchBertRegionHead(config, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_feats: torch.FloatTensor | None = None,
        visual_pos: torch.FloatTensor | None = None,
        visual_attention_mask: torch.LongTensor | None = None,
        labels: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SwitchBertClassifierOutput:
        r"""
        Args:
            labels (`(batch_size, num_regions)` float): IoU of each region of `visual_feats` with the referred box, in
                [0, 1]; padded regions are left out of the loss.
            Other arguments as in [`SwitchBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(labels=labels)
        outputs = self.switch_bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask, **kwargs,
        )
        region_states = self.dropout(_input_regions(self, outputs.image_features))
        logits = self.region_scorer(region_states)[..., 0]  # (B, N)
        valid = torch.ones_like(logits, dtype=torch.bool) if visual_attention_mask is None else visual_attention_mask.bool()
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"`labels` must be IoUs of shape (batch_size, num_regions) = {tuple(logits.shape)}, got "
                    f"{tuple(labels.shape)}."
                )
            per_region = F.binary_cross_entropy_with_logits(logits, labels.to(logits.device, logits.dtype),
                                                            reduction="none")
            weights = valid.to(per_region.dtype)
            loss = (per_region * weights).sum() / weights.sum().clamp(min=1.0)
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        return SwitchBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_pass_through(outputs)
        )

    @staticmethod
    def accuracy(logits: torch.Tensor, ious: torch.Tensor, threshold: float = 0.5) -> float:
        """Share of examples whose highest-scoring region has IoU >= `threshold` with the referred box.
        `logits`, `ious`: `(batch_size, num_regions)`."""
        best = logits.argmax(-1, keepdim=True)
        return float((ious.gather(-1, best) >= threshold).float().mean())

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        super()._validate_label_values(labels)
        if labels.numel() and (float(labels.min()) < 0 or float(labels.max()) > 1):
            raise ValueError(
                f"`labels` must be IoUs in [0, 1], got values in [{float(labels.min())}, {float(labels.max())}]."
            )


__all__ = [
    "SwitchBertPreTrainedModel",
    "SwitchBertModel",
    "SwitchBertForPreTraining",
    "SwitchBertForQuestionAnswering",
    "SwitchBertForImageAndTextRetrieval",
    "SwitchBertForReferringExpression",
    "SwitchBertModelOutput",
    "SwitchBertForPreTrainingOutput",
    "SwitchBertClassifierOutput",
    "prepend_global_region",
    "route",
    "switch_attention_forward",
]
