"""PyTorch VLMo model.

Paper: Bao et al., "VLMo: Unified Vision-Language Pre-Training with Mixture-of-Modality-Experts" (NeurIPS 2022),
https://arxiv.org/abs/2111.02358. Original code (MIT): https://github.com/microsoft/unilm/tree/master/vlmo
(`vlmo/modules/multiway_transformer.py`, `vlmo_module.py`, `heads.py`, `objectives.py`).

One Multiway Transformer serves every use (paper Sec. 3.1, Fig. 1): each block is pre-LN self-attention shared by all
modalities followed by a modality expert FFN, chosen by hard routing on the input's modality and the block's depth:
- image-only input (dual encoder, image side; image classification): V-FFN in every block;
- text-only input (dual encoder, text side; masked language modelling): L-FFN in every block;
- image-text input (fusion encoder): V-FFN / L-FFN on the image / text tokens in the bottom blocks, VL-FFN on all
  tokens from `config.vl_ffn_start_layer` on.

Where the paper and the code differ we follow the code (conversion parity):
- attention: fused qkv projection with q and v biases and no k bias; one relative position bias table shared by all
  blocks (one column block per layer) with separate image (BEiT-style), text (key minus query distance) and
  image-text index layouts; layer scale `gamma_1` / `gamma_2`;
- text embeddings = LayerNorm(word + BERT token type) (no absolute positions with relative position bias), then the
  modality embedding is added after the LayerNorm; image embeddings = [I_CLS; conv patches] (+ absolute positions
  for Base-Plus) + modality embedding, no LayerNorm;
- the final LayerNorm is applied to every token; the pooler is tanh(Linear) on the first token;
- pre-training ITC also contrasts a "VL-FFN" view of each encoder (the hidden state below `vl_ffn_start_layer`
  re-run through the top blocks with VL-FFN), with its own projections and temperature; ITM negatives are sampled
  from the contrastive similarities; the MLM loss enters the total with weight 0.25.
One deliberate difference: the original splits the fusion sequence at `max_text_len` (it requires text padded to
exactly that length); this implementation splits at the length of the given text, so any text length up to
`config.max_text_length` works and equals the original when text is padded to `max_text_len`.
"""

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, MaskedLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_vlmo import VlmoConfig


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class VlmoModelOutput(ModelOutput):
    """Outputs of [`VlmoModel`].

    Args:
        last_hidden_state (`(batch_size, sequence_length, hidden_size)`): every token after the final LayerNorm; for
            image-text input the text tokens come first, then [I_CLS] and the patches.
        pooler_output (`(batch_size, hidden_size)`): tanh(Linear) of the first token (VLMo's `cls_feats`).
        text_features (`(batch_size, text_length, hidden_size)`): the text part of `last_hidden_state` (None without
            text).
        image_features (`(batch_size, num_image_tokens, hidden_size)`): the image part (None without an image).
        hidden_states (`tuple` of `num_hidden_layers + 1` tensors `(batch_size, sequence_length, hidden_size)`): the
            embeddings and the output of every block (before the final LayerNorm).
        attentions (`tuple` of `num_hidden_layers` tensors `(batch_size, heads, sequence_length, sequence_length)`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VlmoForPreTrainingOutput(ModelOutput):
    """Outputs of [`VlmoForPreTraining`].

    Args:
        loss: `itc_loss + itm_loss + config.mlm_loss_weight * mlm_loss` over the objectives that were computed.
        itc_loss: image-text contrastive loss, the mean of the plain and the VL-FFN views (`return_loss=True`).
        itm_loss: image-text matching loss over positives and hard negatives (`return_loss=True`).
        mlm_loss: masked language modelling loss (unweighted; `mlm_labels` given).
        logits_per_image (`(batch_size, batch_size)`), logits_per_text: scaled similarities of the dual encoder.
        vl_logits_per_image, vl_logits_per_text: the same for the VL-FFN view (`logit_vl_scale`).
        itm_logits (`(batch_size, 2)`, or `(3 * batch_size, 2)` with `return_loss=True`: positives, then each text with
            a hard negative image, then each image with a hard negative text); index 1 = match.
        itm_labels (`(3 * batch_size,)`): 1 for positives, 0 for negatives (`return_loss=True`).
        mlm_logits (`(batch_size, text_length, vocab_size)`).
        text_embeds, image_embeds (`(batch_size, hidden_size)`): L2-normalised dual-encoder embeddings.
        hidden_states, attentions: of the fusion pass over the positive pairs (as in [`VlmoModelOutput`]).
    """

    loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    vl_logits_per_image: torch.FloatTensor | None = None
    vl_logits_per_text: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VlmoClassifierOutput(ModelOutput):
    """Outputs of the fusion heads (VQA, NLVR2).

    Args:
        loss: the task loss when `labels` are given.
        logits (`(batch_size, num_labels)`).
        pooler_output: the pooled vector the classifier read (`hidden_size`; NLVR2: `2 * hidden_size`).
        hidden_states, attentions: of the fusion pass (NLVR2: stacked over the two images on dim 1).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VlmoRetrievalOutput(ModelOutput):
    """Outputs of [`VlmoForImageAndTextRetrieval`] (CLIP-style).

    Args:
        loss: symmetric contrastive loss over the batch (`return_loss=True`; image i matches text i).
        logits_per_image (`(num_images, num_texts)`): `exp(logit_scale) * image_embeds @ text_embeds.T`.
        logits_per_text (`(num_texts, num_images)`): its transpose.
        text_embeds (`(num_texts, hidden_size)`), image_embeds (`(num_images, hidden_size)`): L2-normalised.
        text_hidden_states, image_hidden_states, text_attentions, image_attentions: of the two encoder passes.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Relative position index layouts (fully determined by the config; never stored)
# ----------------------------------------------------------------------------------------------------------------------


def image_relative_position_index(grid_size: int) -> torch.LongTensor:
    """BEiT-style index `(N + 1, N + 1)` for [I_CLS] + `N = grid_size^2` patches (row-major).

    Patches p, q at (h, w): `(h_p - h_q + W - 1) * (2W - 1) + (w_p - w_q + W - 1)`; with `R = (2W - 1)^2 + 3`:
    [I_CLS] as query uses row `R - 3`, as key `R - 2`, [I_CLS] -> [I_CLS] `R - 1`.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (grid_size - 1)  # (N, N, 2)
    num_distances = (2 * grid_size - 1) ** 2 + 3
    index = torch.zeros(grid_size**2 + 1, grid_size**2 + 1, dtype=torch.long)
    index[1:, 1:] = relative[..., 0] * (2 * grid_size - 1) + relative[..., 1]
    index[0, :] = num_distances - 3
    index[:, 0] = num_distances - 2
    index[0, 0] = num_distances - 1
    return index


def text_relative_position_index(length: int, config: VlmoConfig) -> torch.LongTensor:
    """Index `(length, length)` of the text part: tokens i, j >= 1 use `(j - i) + M + R_img` (key minus query, the
    opposite sign convention of the image part; `M = max_relative_text_length`); the first token ([CLS]) as query uses
    the table's row `rows - 3`, as key `rows - 2`, [CLS] -> [CLS] `rows - 1`."""
    positions = torch.arange(length - 1)
    index = torch.zeros(length, length, dtype=torch.long)
    index[1:, 1:] = positions[None, :] - positions[:, None] + config.max_relative_text_length
    index[1:, 1:] += config.num_image_relative_distances
    rows = config.num_relative_distances
    index[0, :] = rows - 3
    index[:, 0] = rows - 2
    index[0, 0] = rows - 1
    return index


def fusion_relative_position_index(text_index: torch.Tensor, image_index: torch.Tensor, config: VlmoConfig):
    """`[[text_index, R_img], [R_img + 1, image_index]]`: every text -> image pair uses row `R_img`, every
    image -> text pair row `R_img + 1` (`R_img = config.num_image_relative_distances`)."""
    text_length, image_length = text_index.shape[0], image_index.shape[0]
    text_to_image = text_index.new_full((text_length, image_length), config.num_image_relative_distances)
    image_to_text = text_index.new_full((image_length, text_length), config.num_image_relative_distances + 1)
    return torch.cat([torch.cat([text_index, text_to_image], 1), torch.cat([image_to_text, image_index], 1)], 0)


# ----------------------------------------------------------------------------------------------------------------------
# Multiway Transformer block
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


class VlmoAttention(nn.Module):
    """Self-attention shared by all modalities: fused `qkv` projection (no bias of its own) plus `q_bias` and
    `v_bias` (k has no bias), output projection `proj`. The relative position bias and the padding mask arrive as
    one additive mask. `qkv` is applied as a module, so adapters (LoRA) can target it."""

    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(config.hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.q_bias, self.v_bias = None, None
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False):
        batch_size, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states)
        if self.q_bias is not None:
            qkv = qkv + torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = qkv.reshape(batch_size, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each (B, H, L, D)

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        attn_output = attn_output.reshape(batch_size, length, -1)
        return self.dropout(self.proj(attn_output)), attn_weights


class VlmoExpert(nn.Module):
    """One modality expert: its own pre-LN (`norm2_*` of the original) and a Linear-GELU-Linear FFN."""

    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states):
        hidden_states = self.dropout(self.act(self.fc1(self.layernorm(hidden_states))))
        return self.dropout(self.fc2(hidden_states))


class VlmoDropPath(nn.Module):
    """Stochastic depth per sample (the original's timm `DropPath`)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)).bernoulli_(keep)
        return hidden_states * mask / keep


MODALITIES = ("text", "image", "vl")


class VlmoLayer(GradientCheckpointingLayer):
    """One Multiway Transformer block (paper Fig. 1): `x + gamma_1 * attn(norm1(x))`, then
    `x + gamma_2 * expert(x)` with the expert chosen by `modality`:
    "text" -> L-FFN, "image" -> V-FFN, "vl" -> VL-FFN on all tokens in blocks that have one, otherwise L-FFN on the
    first `text_length` tokens and V-FFN on the rest."""

    def __init__(self, config: VlmoConfig, layer_index: int, drop_path: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = VlmoAttention(config)
        self.text_expert = VlmoExpert(config)
        self.image_expert = VlmoExpert(config)
        self.vl_expert = VlmoExpert(config) if layer_index >= config.vl_ffn_start_layer else None
        if config.layer_scale_init_value is not None:
            self.gamma_1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layer_scale_init_value)))
            self.gamma_2 = nn.Parameter(torch.full((config.hidden_size,), float(config.layer_scale_init_value)))
        else:
            self.gamma_1, self.gamma_2 = None, None
        self.drop_path = VlmoDropPath(drop_path)

    def _scale(self, gamma, hidden_states):
        return hidden_states if gamma is None else gamma * hidden_states

    def forward(self, hidden_states, attention_mask=None, modality: str = "vl", text_length: int = 0,
                output_attentions: bool = False):
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), attention_mask,
                                                   output_attentions=output_attentions)
        hidden_states = hidden_states + self.drop_path(self._scale(self.gamma_1, attn_output))
        if modality == "text":
            ffn_output = self.text_expert(hidden_states)
        elif modality == "image":
            ffn_output = self.image_expert(hidden_states)
        elif self.vl_expert is not None:
            ffn_output = self.vl_expert(hidden_states)
        else:  # bottom blocks of the fusion encoder: each token goes to its own modality's expert
            ffn_output = torch.cat(
                [self.text_expert(hidden_states[:, :text_length]), self.image_expert(hidden_states[:, text_length:])],
                dim=1,
            )
        hidden_states = hidden_states + self.drop_path(self._scale(self.gamma_2, ffn_output))
        return hidden_states, attn_weights


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings and heads
# ----------------------------------------------------------------------------------------------------------------------


class VlmoTextEmbeddings(nn.Module):
    """BERT-style text embeddings: LayerNorm(word + token type [+ absolute position]) -> dropout. Absolute positions
    exist only without relative position bias (VLMo-Base-Plus), as in the original."""

    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.position_embeddings = (
            None if config.use_relative_position_bias else nn.Embedding(config.max_text_len, config.hidden_size)
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.embedding_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if self.position_embeddings is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            embeddings = embeddings + self.position_embeddings(positions)[None]
        return self.dropout(self.LayerNorm(embeddings))


class VlmoImageEmbeddings(nn.Module):
    """[I_CLS] + Conv2d patch embeddings (+ absolute positions for VLMo-Base-Plus); no LayerNorm."""

    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, config.num_image_tokens, config.hidden_size))
            if config.use_absolute_position_embeddings
            else None
        )

    def forward(self, pixel_values):
        patches = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)  # (B, N, D), row-major
        embeddings = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype), patches], dim=1)
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings
        return embeddings


class VlmoPooler(nn.Module):
    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


# Copied from hf_vl.models.meter.modeling_meter.MeterPredictionHeadTransform with Meter->Vlmo, layer_norm_eps->text_layer_norm_eps
class VlmoPredictionHeadTransform(nn.Module):
    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class VlmoMLMHead(nn.Module):
    """Masked language modelling head (BERT transform + decoder, not tied to the word embeddings, as in VLMo)."""

    def __init__(self, config: VlmoConfig):
        super().__init__()
        self.transform = VlmoPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias

    def set_decoder(self, decoder: nn.Linear) -> None:
        """Installs a new decoder (e.g. from `resize_token_embeddings`) and resizes the output bias with it (new
        rows start at zero)."""
        self.decoder = decoder
        old_bias, new_size = self.bias.data, decoder.out_features
        if new_size != old_bias.shape[0]:
            bias = torch.zeros(new_size, device=old_bias.device, dtype=old_bias.dtype)
            keep = min(new_size, old_bias.shape[0])
            bias[:keep] = old_bias[:keep]
            self.bias = nn.Parameter(bias)


def _classifier(config: VlmoConfig, input_size: int, num_outputs: int) -> nn.Sequential:
    """VLMo's task head: Linear(in, 2D) -> LayerNorm -> GELU -> Linear(2D, K) (keys `0`, `1`, `3` in originals)."""
    hidden = 2 * config.hidden_size
    return nn.Sequential(
        nn.Linear(input_size, hidden),
        nn.LayerNorm(hidden, eps=config.classifier_layer_norm_eps),
        nn.GELU(),
        nn.Linear(hidden, num_outputs),
    )


def _l2_normalize(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True)


def gather_features(features: torch.Tensor, with_grad: bool = True) -> tuple[torch.Tensor, int]:
    """Every process's `features` concatenated in rank order, and the row offset of this process's own; a no-op
    (`features, 0`) when `torch.distributed` is not initialised or has one process. `with_grad=True` gathers with
    `torch.distributed.nn.functional.all_gather`, whose backward returns each process the gradients of its own
    rows (VLMo's global contrastive loss and hard negative mining); the batch must have the same size everywhere."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return features, 0
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return features, 0
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        gathered = all_gather(features.contiguous())
    else:
        gathered = [torch.zeros_like(features) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, features.contiguous())
    return torch.cat(list(gathered), dim=0), torch.distributed.get_rank() * features.shape[0]


def global_contrastive_logits(image_embeds, text_embeds, logit_scale) -> tuple[torch.Tensor, int]:
    """`exp(logit_scale) * all_images @ all_texts.T` over the global batch (all processes) and this process's row
    offset: the logits of the local pairs are rows/columns `offset ... offset + batch_size - 1`."""
    all_images, offset = gather_features(image_embeds)
    all_texts, _ = gather_features(text_embeds)
    return logit_scale.exp() * all_images @ all_texts.t(), offset


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a square similarity matrix (image i matches text i)."""
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    logits = logits_per_image.float()
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


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


def _output_flags(config, kwargs) -> tuple[bool, bool]:
    output_attentions = kwargs.get("output_attentions")
    output_hidden_states = kwargs.get("output_hidden_states")
    return (
        config.output_attentions if output_attentions is None else bool(output_attentions),
        config.output_hidden_states if output_hidden_states is None else bool(output_hidden_states),
    )


@torch.no_grad()
def _copy_bert_weights(vlmo: "VlmoModel", bert: PreTrainedModel, copy_text_experts: bool) -> None:
    """Text side of `vlmo` <- a BERT-layout encoder (see [`VlmoPreTrainedModel.from_text_pretrained`])."""
    embeddings, layers = bert.embeddings, bert.encoder.layer
    text = vlmo.text_embeddings
    text.word_embeddings.weight.copy_(embeddings.word_embeddings.weight)
    text.token_type_embeddings.weight.copy_(embeddings.token_type_embeddings.weight)
    text.LayerNorm.load_state_dict(embeddings.LayerNorm.state_dict())
    if text.position_embeddings is not None:
        rows = text.position_embeddings.weight.shape[0]
        text.position_embeddings.weight.copy_(embeddings.position_embeddings.weight[:rows])
    previous_norm = embeddings.LayerNorm
    for layer, bert_layer in zip(vlmo.layers, layers):
        attention = bert_layer.attention
        query, key, value = attention.self.query, attention.self.key, attention.self.value
        layer.attention.qkv.weight.copy_(torch.cat([query.weight, key.weight, value.weight], dim=0))
        if layer.attention.q_bias is not None:
            layer.attention.q_bias.copy_(query.bias)
            layer.attention.v_bias.copy_(value.bias)
        layer.attention.proj.load_state_dict(attention.output.dense.state_dict())
        layer.layernorm_before.load_state_dict(previous_norm.state_dict())
        layer.text_expert.layernorm.load_state_dict(attention.output.LayerNorm.state_dict())
        layer.text_expert.fc1.load_state_dict(bert_layer.intermediate.dense.state_dict())
        layer.text_expert.fc2.load_state_dict(bert_layer.output.dense.state_dict())
        previous_norm = bert_layer.output.LayerNorm
        if copy_text_experts:
            for expert in (layer.image_expert, layer.vl_expert):
                if expert is not None:
                    expert.load_state_dict(layer.text_expert.state_dict())
    vlmo.norm.load_state_dict(previous_norm.state_dict())
    layer_parts = (".attention.qkv.", ".attention.q_bias", ".attention.v_bias", ".attention.proj.",
                   ".layernorm_before.", ".text_expert.")  # the V-FFN / VL-FFN copies must still learn vision
    vlmo._pretrained_parameter_names = {
        name for name, _ in vlmo.named_parameters()
        if name.startswith(("text_embeddings.", "norm.")) or (name.startswith("layers.") and any(part in name for part in layer_parts))
    }  # fmt: skip


class VlmoPreTrainedModel(PreTrainedModel):
    config_class = VlmoConfig
    config: VlmoConfig
    base_model_prefix = "vlmo"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["VlmoLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """`_init_weights` only uses the flag-aware `transformers.initialization` functions, so weights missing from
        a checkpoint get exactly the init of a fresh model (the loader's remote-code heuristic must not apply)."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Conv2d / Embedding / LayerNorm with `config.initializer_range`
        std = self.config.initializer_range
        if isinstance(module, VlmoAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, VlmoLayer) and module.gamma_1 is not None:
            init.constant_(module.gamma_1, self.config.layer_scale_init_value)
            init.constant_(module.gamma_2, self.config.layer_scale_init_value)
        elif isinstance(module, VlmoImageEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, std=std)
        elif isinstance(module, VlmoMLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, VlmoModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            if module.relative_position_bias_table is not None:
                init.zeros_(module.relative_position_bias_table)  # the original starts the table at zero
                init.copy_(module.image_relative_position_index, image_relative_position_index(self.config.image_grid_size))
                init.copy_(module.text_relative_position_index,
                           text_relative_position_index(self.config.max_text_length, self.config))
        elif isinstance(module, VlmoForPreTraining):
            init.constant_(module.logit_vl_scale, self.config.logit_scale_init_value)

    @classmethod
    def from_text_pretrained(cls, text_model_name_or_path, copy_text_experts: bool = True, **config_kwargs):
        """Builds VLMo (this class) with its text side initialised from a pretrained BERT-layout encoder (BERT,
        MiniLM, e.g. the shipped all-MiniLM-L6-v2): word / token type embeddings and their LayerNorm, each layer's
        self-attention into the shared self-attention (q, k, v fused into `qkv`; BERT's k bias is dropped, which is
        exact: it adds the same constant to every score of a query), its FFN into the L-FFN expert. BERT is post-LN,
        VLMo pre-LN: the LayerNorm in front of a layer's attention takes the previous layer's output LayerNorm (the
        embedding LayerNorm for layer 0), the L-FFN LayerNorm the attention output LayerNorm, the final LayerNorm the
        last output LayerNorm. With `copy_text_experts` the V-FFN and VL-FFN experts start as copies of the L-FFN.
        Sizes (hidden, layers, heads, FFN, vocabulary) come from the text model; `config_kwargs` set the rest
        (`image_size`, `num_labels`, ...). Absolute text positions are copied when the config uses them.

        Example:

        ```python
        >>> from hf_vl import VlmoForQuestionAnswering
        >>> from hf_vl.training import local_pretrained_path
        >>> model = VlmoForQuestionAnswering.from_text_pretrained(local_pretrained_path("minilm"), num_labels=13)
        ```
        """
        from transformers import AutoModel

        text_model = text_model_name_or_path
        if not isinstance(text_model, PreTrainedModel):
            text_model = AutoModel.from_pretrained(text_model_name_or_path)
        text_config = text_model.config
        if not hasattr(text_model, "encoder") or not hasattr(text_model, "embeddings"):
            raise ValueError(f"`text_model_name_or_path` must be a BERT-layout encoder, got {type(text_model).__name__}.")
        sizes = dict(vocab_size=text_config.vocab_size, hidden_size=text_config.hidden_size,
                     num_hidden_layers=text_config.num_hidden_layers, num_attention_heads=text_config.num_attention_heads,
                     intermediate_size=text_config.intermediate_size, type_vocab_size=text_config.type_vocab_size,
                     pad_token_id=text_config.pad_token_id)
        sizes.setdefault("vl_ffn_start_layer", max(0, text_config.num_hidden_layers - 2))
        model = cls(VlmoConfig(**{**sizes, **config_kwargs}))
        _copy_bert_weights(model.base_model, text_model, copy_text_experts)
        return model

    def set_pretraining_stage(self, stage: str) -> list[str]:
        """Stagewise pre-training (paper Sec. 3.3): freezes the backbone parameters the stage must not train and
        returns the names of the trainable parameters. Parameters of the head itself (outside `vlmo.`) stay
        trainable. The `Trainer` then updates only those (it optimises parameters with `requires_grad`).

        - `"image"`: vision-only stage: image embeddings, the shared self-attention (with the relative position
          bias and layer scale), V-FFN experts and the final LayerNorm; text embeddings, L-FFN and VL-FFN frozen.
        - `"text"`: text-only stage: self-attention and V-FFN frozen; only the text embeddings and the L-FFN experts
          are trained (with text-only MLM, [`VlmoForMaskedLM`]).
        - `"vision_language"`: everything trainable (image-text pre-training and fine-tuning).
        """
        base = self.base_model
        if stage == "vision_language":
            trainable = lambda name: True  # noqa: E731
        elif stage == "text":
            trainable = lambda name: name.startswith("text_embeddings.") or ".text_expert." in name  # noqa: E731
        elif stage == "image":
            frozen = ("text_embeddings.", ".text_expert.", ".vl_expert.", "itc_text_proj", "pooler.")
            trainable = lambda name: not any(part in name for part in frozen)  # noqa: E731
        else:
            raise ValueError(f"`stage` must be 'image', 'text' or 'vision_language', got {stage!r}.")
        for name, param in base.named_parameters():
            param.requires_grad_(trainable(name))
        return [name for name, param in self.named_parameters() if param.requires_grad]

    def validate_input_values(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> None:
        """Value checks (ids in the vocabulary, 0/1 masks, no empty text, finite pixels, labels in range). They read
        tensor values (a device sync), so `forward` runs them only in eager mode and only while
        `config.check_input_values` is True; `torch.compile` never traces them. Raises `ValueError` naming the
        argument."""
        if input_ids is not None and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"`input_ids` must be in [0, {self.config.vocab_size}) (vocab_size), got values in [{low}, {high}]."
                )
        if attention_mask is not None and attention_mask.numel():
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError(f"`attention_mask` must hold only 0 and 1, got {sorted(attention_mask.unique().tolist())[:6]}.")
            if not bool((attention_mask.sum(-1) > 0).all()):
                rows = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
                raise ValueError(f"`attention_mask` rows {rows} are all zeros: empty text is not allowed.")
        if token_type_ids is not None and token_type_ids.numel():
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= self.config.type_vocab_size:
                raise ValueError(f"`token_type_ids` must be in [0, {self.config.type_vocab_size}).")
        if pixel_values is not None and not bool(torch.isfinite(pixel_values).all()):
            kind = "NaN" if bool(torch.isnan(pixel_values).any()) else "inf"
            raise ValueError(f"`pixel_values` contains {kind} values.")
        if labels is not None:
            self._validate_label_values(labels)

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
            raise ValueError("`labels` contains NaN or inf.")

    def _check_inputs(self, **inputs) -> None:
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self.validate_input_values(**inputs)


class _LayerMasks:
    """Per-block additive attention masks, built when a block asks for its own: one `(B, H, L, L)` tensor alive at
    a time instead of `num_layers` of them."""

    def __init__(self, padding: torch.Tensor | None, bias: torch.Tensor | None):
        self.padding, self.bias = padding, bias  # (B, 1, 1, L), (num_layers, H, L, L)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        if self.bias is None:
            return self.padding
        if self.padding is None:
            return self.bias[index][None]
        return self.padding + self.bias[index][None]


class VlmoModel(VlmoPreTrainedModel):
    """The VLMo Multiway Transformer with its two uses.

    - `forward`: routes by the inputs given: image and text -> fusion encoder; text only -> L-FFN path; image only ->
      V-FFN path. Returns the normalised tokens and the pooled first token.
    - Dual encoder: [`~VlmoModel.get_text_features`] / [`~VlmoModel.get_image_features`] give L2-normalised ITC
      embeddings (`itc_text_proj` / `itc_image_proj` of the [T_CLS] / [I_CLS] token); `logit_scale` is the learned
      temperature (log space), so `logit_scale.exp() * image_embeds @ text_embeds.T` ranks texts for images.

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import VlmoConfig, VlmoModel
    >>> model = VlmoModel(VlmoConfig()).eval()
    >>> outputs = model(input_ids=torch.tensor([[101, 7592, 102]]), pixel_values=torch.randn(1, 3, 224, 224))
    >>> outputs.last_hidden_state.shape  # 3 text tokens + [I_CLS] + 196 patches
    torch.Size([1, 200, 768])
    >>> with torch.no_grad():
    ...     text_embeds = model.get_text_features(input_ids=torch.tensor([[101, 7592, 102]])).pooler_output
    >>> text_embeds.shape, round(text_embeds.norm().item(), 4)  # L2-normalised
    (torch.Size([1, 768]), 1.0)
    ```
    """

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.text_embeddings = VlmoTextEmbeddings(config)
        self.image_embeddings = VlmoImageEmbeddings(config)
        self.token_type_embeddings = nn.Embedding(config.modality_type_vocab_size, config.hidden_size)
        drop_path = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList(
            [VlmoLayer(config, index, drop_path[index]) for index in range(config.num_hidden_layers)]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = VlmoPooler(config)
        self.itc_text_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.itc_image_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        if config.use_relative_position_bias:
            # one table for all blocks: columns [i * heads, (i + 1) * heads) belong to block i
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(config.num_relative_distances, config.num_attention_heads * config.num_hidden_layers)
            )
            self.register_buffer("image_relative_position_index",
                                 image_relative_position_index(config.image_grid_size), persistent=False)
            self.register_buffer("text_relative_position_index",
                                 text_relative_position_index(config.max_text_length, config), persistent=False)
        else:
            self.relative_position_bias_table = None
        self._pretrained_parameter_names: set[str] = set()
        self.post_init()

    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters copied from a pretrained text encoder by
        [`VlmoPreTrainedModel.from_text_pretrained`] (text embeddings, shared self-attention, L-FFN, final
        LayerNorm); empty for a model built from a config or loaded with `from_pretrained`. `hf_vl.training`'s
        `create_vl_optimizer` trains them with a smaller learning rate than the new (vision) weights."""
        return set(self._pretrained_parameter_names)

    def get_input_embeddings(self) -> nn.Module:
        return self.text_embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_embeddings.word_embeddings = value

    def resize_image_size(self, image_size: int) -> None:
        """Adapts the model to another (e.g. larger fine-tuning) resolution: the image part of the relative position
        bias table (a `(2W - 1) x (2W - 1)` grid of patch offsets per column) is resized bicubically with aligned
        corners (the zero offset and the extreme offsets keep their values; the original's scipy `interp2d` with a
        geometric progression of sample points is removed from SciPy), the [I_CLS] and text rows are kept; an
        absolute image position table (Base-Plus) is interpolated over the patch grid. Indices are rebuilt and
        `config.image_size` is updated."""
        config = self.config
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % config.patch_size:
            raise ValueError(f"`image_size` must be an int multiple of patch_size={config.patch_size}, got {image_size!r}.")
        old_grid, new_grid = config.image_grid_size, image_size // config.patch_size
        if new_grid == old_grid:
            return
        old_offsets, new_offsets = 2 * old_grid - 1, 2 * new_grid - 1
        if self.relative_position_bias_table is not None:
            table = self.relative_position_bias_table.data
            offsets = table[: old_offsets**2].t().reshape(1, -1, old_offsets, old_offsets)  # (1, cols, 2W-1, 2W-1)
            offsets = F.interpolate(offsets.float(), size=(new_offsets, new_offsets), mode="bicubic", align_corners=True)
            offsets = offsets.reshape(table.shape[1], -1).t().to(table.dtype)
            new_table = torch.cat([offsets, table[old_offsets**2 :]], dim=0)  # [I_CLS] rows, text rows, cross rows
            self.relative_position_bias_table = nn.Parameter(new_table)
        positions = self.image_embeddings.position_embeddings
        if positions is not None:
            grid = positions.data[:, 1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)
            self.image_embeddings.position_embeddings = nn.Parameter(torch.cat([positions.data[:, :1], grid], dim=1))
        config.image_size = image_size
        if self.relative_position_bias_table is not None:
            device = self.relative_position_bias_table.device
            self.image_relative_position_index = image_relative_position_index(new_grid).to(device)
            self.text_relative_position_index = text_relative_position_index(config.max_text_length, config).to(device)

    # --- building blocks ----------------------------------------------------------------------------------------------

    def embed_text(self, input_ids, token_type_ids=None) -> torch.Tensor:
        """Text tokens `(B, L, D)`: BERT embeddings, then the text modality row (added after the LayerNorm)."""
        embeddings = self.text_embeddings(input_ids, token_type_ids)
        return embeddings + self.token_type_embeddings.weight[0]

    def embed_image(self, pixel_values, image_token_type_idx: int = 1) -> torch.Tensor:
        """Image tokens `(B, 1 + N, D)`: [I_CLS] + patches, plus modality row `image_token_type_idx`."""
        embeddings = self.image_embeddings(pixel_values.to(self.image_embeddings.patch_embeddings.weight.dtype))
        return embeddings + self.token_type_embeddings.weight[image_token_type_idx]

    def relative_position_bias(self, index: torch.Tensor) -> torch.Tensor | None:
        """Per-block bias `(num_layers, heads, Lq, Lk)` gathered from the shared table (None without one)."""
        if self.relative_position_bias_table is None:
            return None
        bias = F.embedding(index, self.relative_position_bias_table)  # (Lq, Lk, heads * layers)
        bias = bias.permute(2, 0, 1).reshape(self.config.num_hidden_layers, self.config.num_attention_heads,
                                             *index.shape)
        return bias

    def position_index(self, text_length: int | None, with_image: bool) -> torch.Tensor:
        """The relative position index of a text-only, image-only or text+image sequence."""
        text_index = None if text_length is None else self.text_relative_position_index[:text_length, :text_length]
        if not with_image:
            return text_index
        if text_index is None:
            return self.image_relative_position_index
        return fusion_relative_position_index(text_index, self.image_relative_position_index, self.config)

    def attention_bias(self, padding_mask: torch.Tensor | None, text_length: int | None, with_image: bool, dtype):
        """Additive attention masks per block: padding (keys, `(B, 1, 1, L)`; None when nothing is padded) + the
        block's relative position bias (`(1, H, L, L)`), composed when the block asks for its own mask."""
        padding = None
        if padding_mask is not None:
            padding = (1.0 - padding_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        bias = None
        if self.relative_position_bias_table is not None:
            bias = self.relative_position_bias(self.position_index(text_length, with_image)).to(dtype)
        return _LayerMasks(padding, bias)

    def run_layers(self, hidden_states, masks, modality: str, text_length: int = 0, start: int = 0,
                   end: int | None = None, output_attentions=False, output_hidden_states=False):
        """Blocks `start .. end - 1` in `modality` mode; returns (hidden, all hidden states, all attentions)."""
        all_hidden, all_attentions = [hidden_states], []
        for index in range(start, self.config.num_hidden_layers if end is None else end):
            hidden_states, weights = self.layers[index](hidden_states, masks[index], modality, text_length,
                                                        output_attentions=output_attentions)
            all_hidden.append(hidden_states)
            all_attentions.append(weights)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )

    def encode_text(self, input_ids, attention_mask=None, token_type_ids=None, with_vl_branch: bool = False,
                    output_attentions=False, output_hidden_states=False) -> dict:
        """Text-only pass (L-FFN in every block). With `with_vl_branch`, also re-runs the hidden state below
        `vl_ffn_start_layer` through the top blocks with VL-FFN (pre-training's VL-FFN contrastive view)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.embed_text(input_ids, token_type_ids)
        masks = self.attention_bias(attention_mask, input_ids.shape[1], False, hidden.dtype)
        return self._encode_single(hidden, masks, "text", with_vl_branch, output_attentions, output_hidden_states)

    def encode_image(self, pixel_values, image_token_type_idx: int = 1, with_vl_branch: bool = False,
                     output_attentions=False, output_hidden_states=False) -> dict:
        """Image-only pass (V-FFN in every block); `with_vl_branch` as in [`~VlmoModel.encode_text`]."""
        hidden = self.embed_image(pixel_values, image_token_type_idx)
        masks = self.attention_bias(None, None, True, hidden.dtype)  # images are never padded
        return self._encode_single(hidden, masks, "image", with_vl_branch, output_attentions, output_hidden_states)

    def _encode_single(self, hidden, masks, modality, with_vl_branch, output_attentions, output_hidden_states):
        start = self.config.vl_ffn_start_layer
        below, hidden_below, attentions_below = self.run_layers(
            hidden, masks, modality, end=start, output_attentions=output_attentions, output_hidden_states=True
        )
        top, hidden_top, attentions_top = self.run_layers(
            below, masks, modality, start=start, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        result = {
            "features": self.norm(top),
            "hidden_states": hidden_below + hidden_top[1:] if output_hidden_states else None,
            "attentions": attentions_below + attentions_top if output_attentions else None,
        }
        if with_vl_branch:
            vl_top, _, _ = self.run_layers(below, masks, "vl", start=start)
            result["vl_features"] = self.norm(vl_top)
        return result

    def encode_fusion(self, input_ids, pixel_values, attention_mask=None, token_type_ids=None,
                      image_token_type_idx: int = 1, output_attentions=False, output_hidden_states=False) -> dict:
        """Image-text pass: text tokens then image tokens; split experts below `vl_ffn_start_layer`, VL-FFN above."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.embed_text(input_ids, token_type_ids)
        image = self.embed_image(pixel_values, image_token_type_idx)
        hidden = torch.cat([text, image], dim=1)  # (B, Lt + Li, D)
        image_mask = torch.ones(image.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        masks = self.attention_bias(torch.cat([attention_mask, image_mask], dim=1), text.shape[1], True, hidden.dtype)
        hidden, all_hidden, all_attentions = self.run_layers(
            hidden, masks, "vl", text_length=text.shape[1], output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return {"features": self.norm(hidden), "text_length": text.shape[1], "hidden_states": all_hidden,
                "attentions": all_attentions}

    # --- forward and dual encoder -------------------------------------------------------------------------------------

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_token_type_idx: int = 1,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VlmoModelOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)`, *optional*): BERT uncased token ids ([`VlmoProcessor`]).
            attention_mask (`(batch_size, text_length)`, *optional*): 1 for real tokens, 0 for padding.
            token_type_ids (`(batch_size, text_length)`, *optional*): BERT token types (zeros by default).
            pixel_values (`(batch_size, 3, image_size, image_size)`, *optional*): normalised images.
            image_token_type_idx (`int`, defaults to 1): modality row of the image (2 for NLVR2's second image).

        Image and text -> fusion encoder; only one of them -> that modality's expert path.
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions, output_hidden_states = _output_flags(self.config, kwargs)
        self.validate_input_shapes(input_ids, attention_mask, token_type_ids, pixel_values, image_token_type_idx,
                                   need_text=False, need_image=False)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           pixel_values=pixel_values)
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        text_features = image_features = None
        if input_ids is not None and pixel_values is not None:
            encoded = self.encode_fusion(input_ids, pixel_values, attention_mask, token_type_ids,
                                         image_token_type_idx, **flags)
            length = encoded["text_length"]
            text_features, image_features = encoded["features"][:, :length], encoded["features"][:, length:]
        elif input_ids is not None:
            encoded = self.encode_text(input_ids, attention_mask, token_type_ids, **flags)
            text_features = encoded["features"]
        else:
            encoded = self.encode_image(pixel_values, image_token_type_idx, **flags)
            image_features = encoded["features"]
        return VlmoModelOutput(
            last_hidden_state=encoded["features"],
            pooler_output=self.pooler(encoded["features"]),
            text_features=text_features,
            image_features=image_features,
            hidden_states=encoded["hidden_states"],
            attentions=encoded["attentions"],
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Dual-encoder text side: `pooler_output` = L2-normalised `itc_text_proj` of the [T_CLS] token of the
        text-only pass (`last_hidden_state`: its normalised tokens)."""
        _reject_unknown_kwargs(self, kwargs)
        output_attentions, output_hidden_states = _output_flags(self.config, kwargs)
        self.validate_input_shapes(input_ids, attention_mask, token_type_ids, None, 1, need_text=True)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        encoded = self.encode_text(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=encoded["features"],
            pooler_output=_l2_normalize(self.itc_text_proj(encoded["features"][:, 0])),
            hidden_states=encoded["hidden_states"],
            attentions=encoded["attentions"],
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Dual-encoder image side: `pooler_output` = L2-normalised `itc_image_proj` of the [I_CLS] token of the
        image-only pass."""
        _reject_unknown_kwargs(self, kwargs)
        output_attentions, output_hidden_states = _output_flags(self.config, kwargs)
        self.validate_input_shapes(None, None, None, pixel_values, 1, need_image=True)
        self._check_inputs(pixel_values=pixel_values)
        encoded = self.encode_image(pixel_values, output_attentions=output_attentions,
                                    output_hidden_states=output_hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=encoded["features"],
            pooler_output=_l2_normalize(self.itc_image_proj(encoded["features"][:, 0])),
            hidden_states=encoded["hidden_states"],
            attentions=encoded["attentions"],
        )

    def validate_input_shapes(self, input_ids, attention_mask, token_type_ids, pixel_values, image_token_type_idx,
                              need_text: bool = False, need_image: bool = False) -> None:
        """Shape and type checks only (no tensor values are read: `torch.compile(fullgraph=True)` traces them)."""
        config = self.config
        if input_ids is None and pixel_values is None:
            raise ValueError("VLMo needs `input_ids` (text), `pixel_values` (an image) or both; got neither.")
        if need_text and input_ids is None:
            raise ValueError("This call needs text: `input_ids` is None (tokenise the text with VlmoProcessor).")
        if need_image and pixel_values is None:
            raise ValueError("This call needs an image: `pixel_values` is None (process it with VlmoProcessor).")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch_size, text_length), got shape {tuple(input_ids.shape)}.")
            if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
                raise TypeError(f"`input_ids` must be an integer tensor of token ids, got dtype {input_ids.dtype}.")
            if input_ids.shape[1] == 0:
                raise ValueError("`input_ids` is empty (text_length 0): every example needs at least one token.")
            if input_ids.shape[1] > config.max_text_length:
                what = "relative text distances (max_relative_text_length)" if config.use_relative_position_bias \
                    else "text position table (max_text_len)"
                raise ValueError(
                    f"`input_ids` has {input_ids.shape[1]} tokens but VLMo's {what} holds {config.max_text_length} "
                    "(tokenise with truncation=True, max_length=...)."
                )
            for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
                if tensor is not None and tuple(tensor.shape) != tuple(input_ids.shape):
                    raise ValueError(
                        f"`{name}` shape {tuple(tensor.shape)} must equal `input_ids` shape {tuple(input_ids.shape)}."
                    )
                if tensor is not None and tensor.is_floating_point():
                    raise TypeError(f"`{name}` must be an integer tensor, got dtype {tensor.dtype}.")
        elif attention_mask is not None or token_type_ids is not None:
            raise ValueError("`attention_mask` / `token_type_ids` were given without `input_ids`.")
        if pixel_values is not None:
            expected = (config.num_channels, config.image_size, config.image_size)
            if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
                raise ValueError(
                    f"`pixel_values` must be (batch_size, {', '.join(map(str, expected))}) (the patch grid of "
                    f"image_size={config.image_size}, patch_size={config.patch_size}), got shape "
                    f"{tuple(pixel_values.shape)}."
                )
            if not pixel_values.is_floating_point():
                raise TypeError(f"`pixel_values` must be a floating point tensor, got {pixel_values.dtype}.")
            if input_ids is not None and pixel_values.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"Text and image batch sizes differ: `input_ids` has {input_ids.shape[0]} rows, `pixel_values` "
                    f"{pixel_values.shape[0]}."
                )
        if isinstance(image_token_type_idx, bool) or not 0 < image_token_type_idx < config.modality_type_vocab_size:
            raise ValueError(
                f"`image_token_type_idx` must be in [1, {config.modality_type_vocab_size}), got "
                f"{image_token_type_idx} (NLVR2 needs `modality_type_vocab_size=3`)."
            )


# ----------------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------------


class _VlmoClassIndexLabels:
    """Value check of `labels` holding class indices in `[0, num_labels)`."""

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError(f"`labels` must hold class indices, got non-integer values {labels.tolist()[:6]}.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_labels):
            raise ValueError(
                f"`labels` must be class indices in [0, {self.config.num_labels}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )


def _single_label_loss(logits, labels):
    if labels is None:
        return None
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
    return F.cross_entropy(logits, labels.to(logits.device).long())


def _mlm_loss(logits, labels):
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"`mlm_labels`/`labels` must be (batch_size, text_length) = {tuple(logits.shape[:2])}, got "
            f"{tuple(labels.shape)}."
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.to(logits.device).reshape(-1), ignore_index=-100)


class _VlmoMLMLabels:
    def _validate_mlm_labels(self, labels: torch.Tensor | None) -> None:
        if labels is None:
            return
        valid = (labels == -100) | ((labels >= 0) & (labels < self.config.vocab_size))
        if not bool(valid.all()):
            raise ValueError(f"MLM labels must be -100 or token ids in [0, {self.config.vocab_size}).")


class VlmoForMaskedLM(_VlmoMLMLabels, VlmoPreTrainedModel):
    """VLMo text-only masked language modelling through the L-FFN path (the stage-2 text pre-training model;
    `mlm_score` of the original). `labels`: original ids at masked positions, -100 elsewhere."""

    accepts_loss_kwargs = False

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.mlm_score = VlmoMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_score.set_decoder(new_embeddings)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        _reject_unknown_kwargs(self, kwargs)
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self._validate_mlm_labels(labels)
        outputs = self.vlmo(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            **kwargs)
        logits = self.mlm_score(outputs.last_hidden_state)
        loss = None if labels is None else _mlm_loss(logits, labels)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)


class VlmoForImageClassification(_VlmoClassIndexLabels, VlmoPreTrainedModel):
    """VLMo as an image encoder (paper Table 4): the image-only V-FFN path, mean of the patch tokens (without
    [I_CLS]) -> LayerNorm -> Linear, as BEiT does. `labels`: `(batch_size,)` class ids, cross-entropy."""

    accepts_loss_kwargs = False
    main_input_name = "pixel_values"

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        _reject_unknown_kwargs(self, kwargs)
        if pixel_values is None:
            raise ValueError("VlmoForImageClassification needs `pixel_values`; got None.")
        self._check_inputs(labels=labels)
        outputs = self.vlmo(pixel_values=pixel_values, **kwargs)
        pooled = self.fc_norm(outputs.last_hidden_state[:, 1:].mean(dim=1))
        logits = self.classifier(pooled)
        return ImageClassifierOutput(loss=_single_label_loss(logits, labels), logits=logits,
                                     hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class VlmoForPreTraining(_VlmoMLMLabels, VlmoPreTrainedModel):
    """VLMo with its image-text pre-training objectives (paper Sec. 3.2; `objectives.py` of the original):

    - ITC: contrastive loss of the dual encoder (`itc_*_proj`, `logit_scale`) averaged with the same loss of the
      VL-FFN view (`itc_vl_*_proj`, `logit_vl_scale`);
    - ITM with hard negatives: for every text a negative image and for every image a negative text are sampled from
      the softmax of the contrastive similarities (the true pair excluded), and the fusion encoder classifies the
      positives and both sets of negatives (`itm_score` on the pooled [T_CLS]);
    - MLM through the fusion encoder on `mlm_input_ids` (the masked text). Without `mlm_input_ids`, `input_ids`
      with `mlm_labels` are read as the masked text of a masked-LM collator (`hf_vl.data.DataCollatorForVLMaskedLM`):
      MLM runs on them and ITC / ITM on the text restored from the labels.

    `return_loss=True` computes ITC and ITM (their labels are implicit); `mlm_labels` adds MLM. In eval mode the
    hardest negative is taken instead of a sampled one (deterministic evaluation). The total is
    `itc_loss + itm_loss + config.mlm_loss_weight * mlm_loss`. Under `torch.distributed` the contrastive loss and the
    negatives use the global batch (features gathered with gradients, [`gather_features`]); the returned logits are
    the local `(batch_size, batch_size)` ones. `return_loss=True` needs a batch of at least 2.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.mlm_score = VlmoMLMHead(config)
        self.itm_score = nn.Linear(config.hidden_size, 2)
        self.itc_vl_text_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.itc_vl_image_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.logit_vl_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_score.set_decoder(new_embeddings)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VlmoForPreTrainingOutput:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids, pixel_values: the (unmasked) image-text pairs.
            mlm_input_ids (`(batch_size, text_length)`, *optional*): the masked text for MLM (same shape as
                `input_ids`); without it, `input_ids` are the masked text when `mlm_labels` are given.
            mlm_labels (`(batch_size, text_length)`, *optional*): original ids at masked positions, -100 elsewhere.
            return_loss (`bool`, *optional*): compute the ITC and ITM losses.
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions, output_hidden_states = _output_flags(self.config, kwargs)
        vlmo = self.vlmo
        vlmo.validate_input_shapes(input_ids, attention_mask, token_type_ids, pixel_values, 1, need_text=True,
                                   need_image=True)
        if mlm_input_ids is not None and mlm_input_ids.shape != input_ids.shape:
            raise ValueError(f"`mlm_input_ids` shape {tuple(mlm_input_ids.shape)} must equal `input_ids` shape "
                             f"{tuple(input_ids.shape)}.")
        world_size = torch.distributed.get_world_size() if (
            torch.distributed.is_available() and torch.distributed.is_initialized()) else 1
        if return_loss and input_ids.shape[0] * world_size < 2:
            raise ValueError("`return_loss=True` needs a batch of at least 2 pairs (ITM negatives come from the batch).")
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self.validate_input_values(input_ids=input_ids, attention_mask=attention_mask,
                                       token_type_ids=token_type_ids, pixel_values=pixel_values)
            self.validate_input_values(input_ids=mlm_input_ids)
            self._validate_mlm_labels(mlm_labels)

        if mlm_labels is not None and mlm_input_ids is None and mlm_labels.shape == input_ids.shape:
            # masked `input_ids` + `mlm_labels` (hf_vl's DataCollatorForVLMaskedLM): the clean text that ITC and ITM
            # need is recoverable from the labels, the masked text goes to MLM
            mlm_input_ids = input_ids
            input_ids = torch.where(mlm_labels.to(input_ids.device) != -100, mlm_labels.to(input_ids.device), input_ids)

        # ITC: dual-encoder passes with the VL-FFN view
        text = vlmo.encode_text(input_ids, attention_mask, token_type_ids, with_vl_branch=True)
        image = vlmo.encode_image(pixel_values, with_vl_branch=True)
        text_embeds = _l2_normalize(vlmo.itc_text_proj(text["features"][:, 0]))
        image_embeds = _l2_normalize(vlmo.itc_image_proj(image["features"][:, 0]))
        logits_per_image = vlmo.logit_scale.exp() * image_embeds @ text_embeds.t()
        vl_text = _l2_normalize(self.itc_vl_text_proj(text["vl_features"][:, 0]))
        vl_image = _l2_normalize(self.itc_vl_image_proj(image["vl_features"][:, 0]))
        vl_logits_per_image = self.logit_vl_scale.exp() * vl_image @ vl_text.t()

        # ITM: positives (+ hard negatives when training the objective) through the fusion encoder
        batch_size = input_ids.shape[0]
        itm_labels = None
        fusion_inputs = (input_ids, pixel_values, attention_mask, token_type_ids)
        losses = {}
        if return_loss:  # global batch over all processes (no-op when not distributed)
            global_logits, offset = global_contrastive_logits(image_embeds, text_embeds, vlmo.logit_scale)
            global_vl_logits, _ = global_contrastive_logits(vl_image, vl_text, self.logit_vl_scale)
            losses["itc_loss"] = (contrastive_loss(global_logits) + contrastive_loss(global_vl_logits)) / 2
            fusion_inputs, itm_labels = self._with_hard_negatives(*fusion_inputs, global_logits,
                                                                  sample=self.training, offset=offset)
        fused = vlmo.encode_fusion(*fusion_inputs, output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states)
        itm_logits = self.itm_score(vlmo.pooler(fused["features"]))

        if mlm_input_ids is not None:
            mlm_fused = vlmo.encode_fusion(mlm_input_ids, pixel_values, attention_mask, token_type_ids)
            mlm_logits = self.mlm_score(mlm_fused["features"][:, : input_ids.shape[1]])
        else:
            mlm_logits = self.mlm_score(fused["features"][:batch_size, : input_ids.shape[1]])

        if return_loss:
            losses["itm_loss"] = F.cross_entropy(itm_logits, itm_labels)
        if mlm_labels is not None:
            losses["mlm_loss"] = _mlm_loss(mlm_logits, mlm_labels)
        loss = None
        if losses:
            loss = losses.get("itc_loss", 0.0) + losses.get("itm_loss", 0.0)
            loss = loss + self.config.mlm_loss_weight * losses["mlm_loss"] if "mlm_loss" in losses else loss
        first = lambda states: None if states is None else tuple(s[:batch_size] for s in states)  # noqa: E731
        return VlmoForPreTrainingOutput(
            loss=loss,
            itc_loss=losses.get("itc_loss"),
            itm_loss=losses.get("itm_loss"),
            mlm_loss=losses.get("mlm_loss"),
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            vl_logits_per_image=vl_logits_per_image,
            vl_logits_per_text=vl_logits_per_image.t(),
            itm_logits=itm_logits,
            itm_labels=itm_labels,
            mlm_logits=mlm_logits,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            hidden_states=first(fused["hidden_states"]),
            attentions=first(fused["attentions"]),
        )

    @staticmethod
    def _with_hard_negatives(input_ids, pixel_values, attention_mask, token_type_ids, logits_per_image,
                             sample: bool = True, offset: int = 0):
        """VLMo's global hard negative mining: for each local text a negative image and for each local image a
        negative text are sampled from the global batch (all processes) with probabilities softmax(similarity), the
        true pair excluded. `logits_per_image` is the global `(N, N)` matrix and `offset` the row of this process's
        first pair. Returns the (3B) fusion inputs `[positives; texts with negative images; images with negative
        texts]` and their ITM labels.

        `sample=False` (the model in eval mode) takes the most similar negative instead, so evaluation is
        deterministic (the original samples in validation too)."""
        batch_size = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            rows = slice(offset, offset + batch_size)
            weights_i2t = F.softmax(logits_per_image[rows].float(), dim=1)  # (B, N): local images vs all texts
            weights_t2i = F.softmax(logits_per_image.t()[rows].float(), dim=1)  # (B, N): local texts vs all images
            own = torch.zeros_like(weights_i2t, dtype=torch.bool)
            rows_index = torch.arange(batch_size, device=own.device)
            own[rows_index, rows_index + offset] = True
            weights_i2t = weights_i2t.masked_fill(own, 0.0)
            weights_t2i = weights_t2i.masked_fill(own, 0.0)
            if sample:
                negative_images = torch.multinomial(weights_t2i, 1).squeeze(1)  # (B,) for each text
                negative_texts = torch.multinomial(weights_i2t, 1).squeeze(1)  # (B,) for each image
            else:
                negative_images, negative_texts = weights_t2i.argmax(1), weights_i2t.argmax(1)
            pool = lambda t: None if t is None else gather_features(t, with_grad=False)[0]  # noqa: E731
            text_pool = (pool(input_ids), pool(attention_mask), pool(token_type_ids))
            negative_pixels = pool(pixel_values)[negative_images]
        cat = lambda t, p: None if t is None else torch.cat([t, t, p[negative_texts]], dim=0)  # noqa: E731
        all_input_ids, all_attention, all_token_types = (
            cat(t, p) for t, p in zip((input_ids, attention_mask, token_type_ids), text_pool)
        )
        all_pixels = torch.cat([pixel_values, negative_pixels, pixel_values], dim=0)
        labels = torch.cat([torch.ones(batch_size), torch.zeros(2 * batch_size)]).long().to(input_ids.device)
        return (all_input_ids, all_pixels, all_attention, all_token_types), labels


class VlmoForQuestionAnswering(VlmoPreTrainedModel):
    """VLMo with a VQA head: fusion encoder, pooled [T_CLS] -> `classifier` (`vqa_classifier` of the original) over
    `config.num_labels` answers. `labels` are soft scores `(batch_size, num_labels)`; the loss is BCE times the
    number of answers, as in VLMo."""

    accepts_loss_kwargs = False

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.classifier = _classifier(config, config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VlmoClassifierOutput:
        _reject_unknown_kwargs(self, kwargs)
        self.vlmo.validate_input_shapes(input_ids, attention_mask, token_type_ids, pixel_values, 1, need_text=True,
                                        need_image=True)
        self._check_inputs(labels=labels)
        outputs = self.vlmo(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            pixel_values=pixel_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(f"`labels` must be soft scores of shape {tuple(logits.shape)}, got {tuple(labels.shape)}.")
            labels = labels.to(logits.device, logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits, labels) * labels.shape[1]
        return VlmoClassifierOutput(loss=loss, logits=logits, pooler_output=outputs.pooler_output,
                                    hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        super()._validate_label_values(labels)
        if labels.numel() and (float(labels.min()) < 0 or float(labels.max()) > 1):
            raise ValueError(f"`labels` must be soft VQA scores in [0, 1], got values in [{float(labels.min())}, "
                             f"{float(labels.max())}].")


class VlmoForImagesAndTextClassification(_VlmoClassIndexLabels, VlmoPreTrainedModel):
    """VLMo for NLVR2: the statement is fused with each image (the second with modality row 2, so
    `config.modality_type_vocab_size` must be 3); the two pooled vectors are concatenated and classified.
    `pixel_values`: `(batch_size, 2, 3, H, W)`."""

    accepts_loss_kwargs = False

    def __init__(self, config: VlmoConfig):
        if config.modality_type_vocab_size < 3:
            raise ValueError(
                "VlmoForImagesAndTextClassification needs `modality_type_vocab_size=3` (text, first and second image), "
                f"got {config.modality_type_vocab_size}."
            )
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.classifier = _classifier(config, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VlmoClassifierOutput:
        r"""
        Args:
            pixel_values (`(batch_size, 2, 3, height, width)`): the two images of each statement.
            labels (`(batch_size,)`): class indices (NLVR2: 0 = false, 1 = true).
        """
        _reject_unknown_kwargs(self, kwargs)
        if pixel_values is None or pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"`pixel_values` must be (batch_size, 2, 3, height, width) for NLVR2, got {shape}.")
        self._check_inputs(labels=labels)
        per_image = [
            self.vlmo(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      pixel_values=pixel_values[:, index], image_token_type_idx=index + 1, **kwargs)
            for index in range(2)
        ]
        pooled = torch.cat([o.pooler_output for o in per_image], dim=-1)  # (B, 2 * hidden)
        logits = self.classifier(pooled)
        stacked = {}
        for name in ("hidden_states", "attentions"):
            first, second = getattr(per_image[0], name), getattr(per_image[1], name)
            stacked[name] = None if first is None else tuple(torch.stack(pair, dim=1) for pair in zip(first, second))
        return VlmoClassifierOutput(loss=_single_label_loss(logits, labels), logits=logits, pooler_output=pooled,
                                    **stacked)


class VlmoForImageAndTextRetrieval(VlmoPreTrainedModel):
    """VLMo as a dual encoder for retrieval (the original's `irtr` fine-tuning): images and texts are encoded
    separately (V-FFN / L-FFN paths), projected, L2-normalised and compared by `exp(logit_scale)`-scaled dot
    products. Image and text batches may differ in size (one image against K candidate labels: this is what
    `pipeline("zero-shot-image-classification")` calls). `return_loss=True` gives the symmetric contrastive loss
    (image i matches text i), over the global batch under `torch.distributed`."""

    accepts_loss_kwargs = False

    def __init__(self, config: VlmoConfig):
        super().__init__(config)
        self.vlmo = VlmoModel(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        return_loss: bool | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VlmoRetrievalOutput:
        r"""
        Args:
            input_ids, attention_mask, token_type_ids: the texts (`(num_texts, text_length)`).
            pixel_values (`(num_images, 3, H, W)`): the images.
            return_loss (`bool`, *optional*): symmetric contrastive loss (needs `num_texts == num_images`).
            text_embeds (`(num_texts, hidden_size)`), image_embeds (`(num_images, hidden_size)`), *optional*:
                L2-normalised embeddings from [`~VlmoModel.get_text_features`] / [`~VlmoModel.get_image_features`]
                instead of the raw inputs, so a gallery is encoded once and scored against many queries.
        """
        _reject_unknown_kwargs(self, kwargs)
        empty = BaseModelOutputWithPooling()
        text, image = empty, empty
        for name, raw, embeds in (("text", input_ids, text_embeds), ("image", pixel_values, image_embeds)):
            if (raw is None) == (embeds is None):
                raw_name = "input_ids" if name == "text" else "pixel_values"
                raise ValueError(f"VlmoForImageAndTextRetrieval needs exactly one of `{raw_name}` and `{name}_embeds`.")
            if embeds is not None and (embeds.dim() != 2 or embeds.shape[-1] != self.config.hidden_size):
                raise ValueError(f"`{name}_embeds` must be (batch_size, {self.config.hidden_size}), got "
                                 f"{tuple(embeds.shape)}.")
        if text_embeds is None:
            text = self.vlmo.get_text_features(input_ids, attention_mask, token_type_ids, **kwargs)
            text_embeds = text.pooler_output
        if image_embeds is None:
            image = self.vlmo.get_image_features(pixel_values, **kwargs)
            image_embeds = image.pooler_output
        logits_per_image = self.vlmo.logit_scale.exp() * image_embeds @ text_embeds.t()
        loss = None
        if return_loss:
            if logits_per_image.shape[0] != logits_per_image.shape[1]:
                raise ValueError(
                    f"`return_loss=True` needs as many texts as images (pairs), got {logits_per_image.shape[1]} texts "
                    f"and {logits_per_image.shape[0]} images."
                )
            global_logits, _ = global_contrastive_logits(image_embeds, text_embeds, self.vlmo.logit_scale)
            loss = contrastive_loss(global_logits)  # over all processes' pairs (no-op when not distributed)
        return VlmoRetrievalOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_hidden_states=text.hidden_states,
            image_hidden_states=image.hidden_states,
            text_attentions=text.attentions,
            image_attentions=image.attentions,
        )


__all__ = [
    "VlmoPreTrainedModel",
    "VlmoModel",
    "VlmoForMaskedLM",
    "VlmoForImageClassification",
    "VlmoForPreTraining",
    "VlmoForQuestionAnswering",
    "VlmoForImagesAndTextClassification",
    "VlmoForImageAndTextRetrieval",
    "VlmoModelOutput",
    "VlmoForPreTrainingOutput",
    "VlmoClassifierOutput",
    "VlmoRetrievalOutput",
    "contrastive_loss",
    "gather_features",
    "global_contrastive_logits",
]
