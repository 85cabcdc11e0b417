"""PyTorch InterBERT model.

Paper: Lin et al., "InterBERT: Vision-and-Language Interaction for Multi-modal Pretraining" (2020),
https://arxiv.org/abs/2003.13198. Released code (no licence file, read for the weights layout only, never copied):
https://github.com/black4321/InterBERT (`bertmodel/modules.py`).

InterBERT = BERT text embeddings + region embeddings -> single-stream interaction module (all-attention over the
concatenation of image regions and words, paper Sec. 3.1) -> two-stream extraction module (an image extractor and a
text extractor, Sec. 3.1) -> one pooler per stream, fused by an element-wise product (Sec. 3.1, "cross-modal
representation"). Pre-training: masked segment modelling (MSM), masked region modelling (MRM) and image-text matching
(ITM) (Sec. 3.2). Where the paper and the code differ we follow the code (conversion parity):
- the interaction module has 6 layers (paper: 12), the text extractor 6 layers, the image extractor 6 layers;
- the concatenation is image first (`[regions; words]`) and the interaction layers are the text layers' weights;
- region embeddings are `LayerNorm(W_f feat + W_l loc)` (no position or type embedding; the paper's image segment
  embedding is optional, `config.use_region_type_embedding`);
- both poolers are `ReLU(W x[0])` projecting to `config.pooler_size` (paper: no detail); the fused vector is
  `pooled_text * pooled_image`;
- MRM predicts detector class distributions with a KL loss over matched pairs only; MSM counts every row.
The global image feature (the mean of the regions, box `[0, 0, 1, 1, 1]`) is prepended by the model when
`config.prepend_global_region` is True; the original data loaders put it in row 0 of the features instead.
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

from .configuration_interbert import InterBertConfig


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class InterBertModelOutput(ModelOutput):
    """Outputs of [`InterBertModel`].

    Args:
        text_features (`(batch_size, text_length, hidden_size)`): text stream after the text-extraction layers.
        image_features (`(batch_size, num_regions, hidden_size)`): image stream after the image-extraction layers;
            `num_regions` counts the prepended global region (row 0) when `config.prepend_global_region`.
            `None` for text-only inputs.
        text_pooler_output, image_pooler_output (`(batch_size, pooler_size)`): `ReLU(W x[0])` of each stream.
        pooler_output (`(batch_size, pooler_size)`): the cross-modal representation `text_pooler * image_pooler`
            (`fusion_method="mul"`); the text pooler output for text-only inputs.
        hidden_states (`tuple` of `num_interaction_layers + 1` tensors `(batch_size, num_regions + text_length,
            hidden_size)`): the single-stream sequence (regions first, then words) entering the interaction module and
            after each of its layers (`output_hidden_states=True`); text only for text-only inputs.
        attentions (`tuple` of `num_interaction_layers` tensors `(batch_size, num_attention_heads, L, L)`): attention
            weights of the interaction layers (`output_attentions=True`, eager attention).
        text_hidden_states, image_hidden_states (`tuple` of `num_*_extraction_layers + 1` tensors): each stream
            entering the extraction module and after each of its layers.
        text_attentions, image_attentions: attention weights of the extraction layers.
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_pooler_output: torch.FloatTensor | None = None
    image_pooler_output: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class InterBertForPreTrainingOutput(ModelOutput):
    """Outputs of [`InterBertForPreTraining`].

    Args:
        loss: weighted sum of the objectives that received labels. msm_loss, mrm_loss, itm_loss: each one alone.
        msm_logits (`(batch_size, text_length, vocab_size)`): masked segment modelling scores.
        mrm_logits (`(batch_size, num_input_regions, num_region_classes)`): region class scores of the regions
            passed in `visual_feats` (the prepended global region is left out).
        itm_logits (`(batch_size, 2)`): image-text matching scores, index 1 = "the text matches the image".
        pooler_output and the stream hidden states / attentions as in [`InterBertModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    msm_loss: torch.FloatTensor | None = None
    mrm_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    msm_logits: torch.FloatTensor | None = None
    mrm_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class InterBertClassifierOutput(ModelOutput):
    """Outputs of InterBERT's task heads (VQA, retrieval, multiple choice, text classification).

    Args:
        loss: the task loss when `labels` are given.
        logits: `(batch_size, num_labels)`; retrieval `(batch_size, 1)` for pairs or `(batch_size, num_candidates)`
            when ranking; multiple choice `(batch_size, num_choices)`.
        pooler_output: the vector the head read (the fused representation; the text pooler for text-only heads).
        Hidden states / attentions as in [`InterBertModelOutput`] (multiple choice / ranking: `(batch_size,
        num_choices, ...)`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None


_STREAM_OUTPUT_FIELDS = (
    "hidden_states",
    "attentions",
    "text_hidden_states",
    "image_hidden_states",
    "text_attentions",
    "image_attentions",
)


def _stream_outputs(outputs: InterBertModelOutput, num_choices: int | None = None) -> dict:
    """The hidden-state / attention fields of `outputs`; `(B * K, ...)` tensors become `(B, K, ...)` for K choices."""
    result = {}
    for name in _STREAM_OUTPUT_FIELDS:
        value = getattr(outputs, name)
        if value is not None and num_choices is not None:
            value = tuple(tensor.unflatten(0, (-1, num_choices)) for tensor in value)
        result[name] = value
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Layers (BERT post-LN layers; the image extractor has its own head count and FFN)
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


class InterBertSelfAttention(nn.Module):
    """Multi-head self-attention through the attention interface (sdpa / eager)."""

    def __init__(self, config: InterBertConfig, num_attention_heads: int, dropout_prob: float):
        super().__init__()
        self.config = config
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = config.hidden_size // num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(head_shape).transpose(1, 2)  # (B, H, L, D)
        key = self.key(hidden_states).view(head_shape).transpose(1, 2)
        value = self.value(hidden_states).view(head_shape).transpose(1, 2)

        # attention weights exist only on the eager path: fall back to it when they are requested
        implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
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
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


class InterBertResidualOutput(nn.Module):
    """`LayerNorm(dropout(W x) + residual)`: BERT's SelfOutput (`in_size = hidden`) and Output (`in_size = FFN`)."""

    def __init__(self, config: InterBertConfig, in_size: int, dropout_prob: float):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class InterBertAttention(nn.Module):
    def __init__(self, config: InterBertConfig, num_attention_heads: int, attention_dropout: float, dropout: float):
        super().__init__()
        self.self = InterBertSelfAttention(config, num_attention_heads, attention_dropout)
        self.output = InterBertResidualOutput(config, config.hidden_size, dropout)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, **kwargs)
        return self.output(attn_output, hidden_states), attn_weights


class InterBertIntermediate(nn.Module):
    def __init__(self, config: InterBertConfig, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class InterBertLayer(GradientCheckpointingLayer):
    """One BERT layer (self-attention, FFN, post-LN). `stream="text"` layers serve the interaction module and the
    text extractor; `stream="image"` layers (own head count, FFN size, activation and dropout) the image extractor."""

    def __init__(self, config: InterBertConfig, stream: str = "text"):
        super().__init__()
        if stream == "text":
            heads, ffn, act = config.num_attention_heads, config.intermediate_size, config.hidden_act
            attention_dropout, dropout = config.attention_probs_dropout_prob, config.hidden_dropout_prob
        else:
            heads, ffn, act = config.image_num_attention_heads, config.image_intermediate_size, config.image_hidden_act
            attention_dropout, dropout = config.image_attention_probs_dropout_prob, config.image_hidden_dropout_prob
        self.attention = InterBertAttention(config, heads, attention_dropout, dropout)
        self.intermediate = InterBertIntermediate(config, ffn, act)
        self.output = InterBertResidualOutput(config, ffn, dropout)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        return self.output(self.intermediate(attention_output), attention_output), attn_weights


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings and poolers
# ----------------------------------------------------------------------------------------------------------------------


class InterBertTextEmbeddings(nn.Module):
    """BERT text embeddings: word (padding row `pad_token_id`) + absolute position + segment, LayerNorm, dropout."""

    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # (1, L)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class InterBertRegionEmbeddings(nn.Module):
    """Region embeddings (paper Sec. 3.1): `LayerNorm(W_f visual_feats + W_l visual_pos [+ segment embedding])`."""

    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.feature_embeddings = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.location_embeddings = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.type_embeddings = nn.Embedding(1, config.hidden_size) if config.use_region_type_embedding else None
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, visual_feats, visual_pos):
        embeddings = self.feature_embeddings(visual_feats) + self.location_embeddings(visual_pos)
        if self.type_embeddings is not None:
            embeddings = embeddings + self.type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(embeddings))


class InterBertPooler(nn.Module):
    """`activation(W x[:, 0])` projecting to `config.pooler_size` (ReLU in the released code)."""

    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_size)
        self.activation = ACT2FN[config.pooler_act]

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


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


# Copied from hf_vl.models.meter.modeling_meter.MeterPredictionHeadTransform with Meter->InterBert
class InterBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class InterBertMSMHead(nn.Module):
    """Masked segment modelling head; the decoder is tied to the word embeddings (`config.tie_word_embeddings`)."""

    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.transform = InterBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class InterBertMRMHead(nn.Module):
    """Masked region modelling head: detector class scores per region (`config.num_region_classes`)."""

    def __init__(self, config: InterBertConfig):
        super().__init__()
        self.transform = InterBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.num_region_classes)

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


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


# Copied from hf_vl.models.meter.modeling_meter._extended_attention_mask
def _extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> additive (B, 1, 1, L) mask for every query."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _check_integer(name: str, tensor: torch.Tensor | None) -> None:
    if tensor is not None and (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"`{name}` must be an integer (or bool) tensor, got dtype {tensor.dtype}.")


class InterBertPreTrainedModel(PreTrainedModel):
    config_class = InterBertConfig
    config: InterBertConfig
    base_model_prefix = "interbert"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["InterBertLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """InterBERT's `_init_weights` only uses the flag-aware `transformers.initialization` functions, so weights
        missing from a checkpoint get exactly the init of a fresh model (also when loaded as remote code)."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Embedding / LayerNorm with `config.initializer_range`
        if isinstance(module, InterBertMSMHead):
            init.zeros_(module.bias)

    def validate_input_values(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> None:
        """Value checks: ids in the vocabulary, 0/1 masks with at least one token / region per row, finite features,
        boxes in [0, 1] with x1 <= x2, y1 <= y2, labels in range. They read tensor values (a device sync), so
        `forward` runs them only in eager mode and only while `config.check_input_values` is True.

        Raises `ValueError` naming the argument and the offending value.
        """
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
            if not bool((mask.flatten(0, -2).sum(-1) > 0).all()):
                rows = (mask.flatten(0, -2).sum(-1) == 0).nonzero().flatten().tolist()
                raise ValueError(f"`{name}` rows {rows} are all zeros: every example needs a token and a region.")
        if visual_feats is not None and not bool(torch.isfinite(visual_feats).all()):
            raise ValueError("`visual_feats` contains NaN or inf values.")
        if visual_pos is not None and visual_pos.numel():
            eps = 1e-5
            if not bool(torch.isfinite(visual_pos).all()) or float(visual_pos.min()) < -eps or float(visual_pos.max()) > 1 + eps:
                raise ValueError(
                    "`visual_pos` must hold boxes normalised to [0, 1] (hf_vl.regions.normalize_boxes), got values in "
                    f"[{float(visual_pos.min())}, {float(visual_pos.max())}]."
                )
            if bool(((visual_pos[..., 2] < visual_pos[..., 0] - eps) | (visual_pos[..., 3] < visual_pos[..., 1] - eps)).any()):
                raise ValueError("`visual_pos` boxes must be (x1, y1, x2, y2, ...) with x1 <= x2 and y1 <= y2.")
        if labels is not None:
            self._validate_label_values(labels)

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        """Heads with class-index labels override the range; soft-score heads check [0, 1]."""
        if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
            raise ValueError("`labels` contains NaN or inf.")

    def _check_inputs(self, **inputs) -> None:
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self.validate_input_values(**inputs)

    @classmethod
    def from_bert_pretrained(cls, bert_model_name_or_path, **config_kwargs) -> "InterBertPreTrainedModel":
        """Builds InterBERT from a BERT checkpoint as the paper does (Sec. 4.1): the word, position and segment
        embeddings and BERT's layers initialise the interaction module (layers `0 .. I-1`) and the text extractor
        (layers `I .. I+T-1`); region embeddings, the image extractor, poolers and heads are new (N(0, 0.02)).

        Args:
            bert_model_name_or_path: a BERT-layout checkpoint (path, Hub id or a loaded `BertModel`), e.g. the shipped
                all-MiniLM-L6-v2 (`hf_vl.training.local_pretrained_path("all-MiniLM-L6-v2")`).
            config_kwargs: [`InterBertConfig`] fields. By default the BERT layers are split in two halves
                (`num_interaction_layers = n // 2`; `num_text_extraction_layers` = the remaining layers) and the image
                extractor has as many layers as the text extractor, with BERT's width and head count.

        Called on a head class (`InterBertForQuestionAnswering.from_bert_pretrained(...)`) it returns that head.

        Example:

        ```python
        >>> from hf_vl import InterBertForQuestionAnswering
        >>> from hf_vl.training import local_pretrained_path
        >>> model = InterBertForQuestionAnswering.from_bert_pretrained(
        ...     local_pretrained_path("all-MiniLM-L6-v2"), visual_feat_dim=31, visual_pos_dim=4, num_labels=13
        ... )
        ```
        """
        bert = bert_model_name_or_path
        if not isinstance(bert, PreTrainedModel):
            bert = AutoModel.from_pretrained(bert_model_name_or_path, add_pooling_layer=False)
        bert_config = bert.config
        if not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
            raise ValueError(
                f"`bert_model_name_or_path` must be a BERT-layout encoder (embeddings + encoder.layer), got "
                f"{type(bert).__name__}."
            )
        num_layers = bert_config.num_hidden_layers
        defaults = {
            "vocab_size": bert_config.vocab_size,
            "hidden_size": bert_config.hidden_size,
            "num_attention_heads": bert_config.num_attention_heads,
            "intermediate_size": bert_config.intermediate_size,
            "hidden_act": bert_config.hidden_act,
            "max_position_embeddings": bert_config.max_position_embeddings,
            "type_vocab_size": bert_config.type_vocab_size,
            "pad_token_id": bert_config.pad_token_id or 0,
            "layer_norm_eps": bert_config.layer_norm_eps,
            "initializer_range": bert_config.initializer_range,
            "image_num_attention_heads": bert_config.num_attention_heads,
            "image_intermediate_size": bert_config.intermediate_size,
        }
        num_interaction = config_kwargs.get("num_interaction_layers", num_layers // 2)
        defaults["num_interaction_layers"] = num_interaction
        defaults["num_text_extraction_layers"] = max(num_layers - num_interaction, 0)  # the remaining BERT layers
        defaults["num_image_extraction_layers"] = config_kwargs.get(
            "num_text_extraction_layers", defaults["num_text_extraction_layers"]
        )
        config = InterBertConfig(**{**defaults, **config_kwargs})
        used = config.num_interaction_layers + config.num_text_extraction_layers
        if used > num_layers:
            raise ValueError(
                f"`num_interaction_layers` + `num_text_extraction_layers` = {used} exceeds the {num_layers} layers of "
                "the BERT checkpoint they are initialised from."
            )
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings",
                     "type_vocab_size"):
            if getattr(config, name) != getattr(bert_config, name):
                raise ValueError(f"`{name}` ({getattr(config, name)}) must equal the BERT checkpoint's "
                                 f"({getattr(bert_config, name)}).")
        model = cls(config)
        base = model.base_model
        bert_state = bert.state_dict()
        target = {}
        for key, tensor in bert_state.items():
            if key.startswith("embeddings.") and "position_ids" not in key:
                target[key] = tensor
            elif key.startswith("encoder.layer."):
                index, rest = key[len("encoder.layer."):].split(".", 1)
                index = int(index)
                if index < config.num_interaction_layers:
                    target[f"interaction_layers.{index}.{rest}"] = tensor
                elif index < used:
                    target[f"text_extraction_layers.{index - config.num_interaction_layers}.{rest}"] = tensor
        own_state = base.state_dict()
        missing = [key for key in target if key not in own_state]
        if missing:
            raise ValueError(f"BERT weights without an InterBERT parameter: {missing[:5]}")
        with torch.no_grad():
            for key, tensor in target.items():
                own_state[key].copy_(tensor)
        model.tie_weights()
        return model


class InterBertModel(InterBertPreTrainedModel):
    """InterBERT: text + region embeddings -> single-stream interaction module -> two-stream extraction module ->
    poolers and their fusion.

    Text-only inputs (no `visual_feats`) run the text alone through the interaction module and the text extractor
    (the paper's single-modal experiment).

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import InterBertConfig, InterBertModel
    >>> model = InterBertModel(InterBertConfig(visual_feat_dim=16))
    >>> outputs = model(input_ids=torch.tensor([[101, 2003, 102]]), visual_feats=torch.randn(1, 5, 16),
    ...                 visual_pos=torch.rand(1, 5, 5).sort(-1).values)
    >>> outputs.image_features.shape  # 5 regions + the global one
    torch.Size([1, 6, 768])
    ```
    """

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.embeddings = InterBertTextEmbeddings(config)
        self.region_embeddings = InterBertRegionEmbeddings(config)
        self.interaction_layers = nn.ModuleList([InterBertLayer(config) for _ in range(config.num_interaction_layers)])
        self.text_extraction_layers = nn.ModuleList(
            [InterBertLayer(config) for _ in range(config.num_text_extraction_layers)]
        )
        self.image_extraction_layers = nn.ModuleList(
            [InterBertLayer(config, stream="image") for _ in range(config.num_image_extraction_layers)]
        )
        self.text_pooler = InterBertPooler(config)
        self.image_pooler = InterBertPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    def region_inputs(self, visual_feats, visual_pos, visual_attention_mask=None):
        """The regions the layers see: the global region prepended (`config.prepend_global_region`) and a mask of
        ones when none is given. Returns `(visual_feats, visual_pos, visual_attention_mask)`."""
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
    ) -> InterBertModelOutput:
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
        text = self.embeddings(input_ids, token_type_ids)  # (B, L, H)
        if visual_feats is None:  # text only
            image, image_mask, num_regions = None, None, 0
            hidden_states, single_mask = text, attention_mask
        else:
            visual_feats, visual_pos, image_mask = self.region_inputs(visual_feats, visual_pos, visual_attention_mask)
            image = self.region_embeddings(visual_feats, visual_pos)  # (B, N, H)
            num_regions = image.shape[1]
            # InterBERT code: image first, one mask over [regions; words]
            hidden_states = torch.cat([image, text], dim=1)  # (B, N + L, H)
            single_mask = torch.cat([image_mask, attention_mask.to(image_mask.dtype)], dim=1)

        layer_kwargs = {"output_attentions": output_attentions}
        hidden_states, interaction_hidden, interaction_attentions = self._run_layers(
            self.interaction_layers, hidden_states, single_mask, layer_kwargs
        )
        text = hidden_states[:, num_regions:]
        text, text_hidden, text_attentions = self._run_layers(
            self.text_extraction_layers, text, attention_mask, layer_kwargs
        )
        text_pooled = self.text_pooler(text)
        image_hidden = image_attentions = image_pooled = None
        pooled = text_pooled
        if image is not None:
            image, image_hidden, image_attentions = self._run_layers(
                self.image_extraction_layers, hidden_states[:, :num_regions], image_mask, layer_kwargs
            )
            image_pooled = self.image_pooler(image)
            # paper Sec. 3.1 / code `fusion_method`: the cross-modal representation
            pooled = text_pooled * image_pooled if self.config.fusion_method == "mul" else text_pooled + image_pooled
            image_hidden, image_attentions = tuple(image_hidden), tuple(image_attentions)
        return InterBertModelOutput(
            text_features=text,
            image_features=image,
            text_pooler_output=text_pooled,
            image_pooler_output=image_pooled,
            pooler_output=pooled,
            hidden_states=tuple(interaction_hidden) if output_hidden_states else None,
            attentions=tuple(interaction_attentions) if output_attentions else None,
            text_hidden_states=tuple(text_hidden) if output_hidden_states else None,
            image_hidden_states=image_hidden if output_hidden_states else None,
            text_attentions=tuple(text_attentions) if output_attentions else None,
            image_attentions=image_attentions if output_attentions else None,
        )

    @staticmethod
    def _run_layers(layers, hidden_states, mask, layer_kwargs):
        extended_mask = _extended_attention_mask(mask, hidden_states.dtype)
        all_hidden, all_attentions = [hidden_states], []
        for layer in layers:
            hidden_states, attn_weights = layer(hidden_states, extended_mask, **layer_kwargs)
            all_hidden.append(hidden_states)
            all_attentions.append(attn_weights)
        return hidden_states, all_hidden, all_attentions

    def _validate_input_shapes(self, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos,
                               visual_attention_mask):
        """Shape and type checks only (no tensor values are read: `torch.compile(fullgraph=True)` traces them)."""
        config = self.config
        if input_ids is None:
            raise ValueError("InterBERT needs text: `input_ids` is None (tokenise the text with the processor).")
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
            if visual_pos is not None or visual_attention_mask is not None:
                raise ValueError("`visual_pos` / `visual_attention_mask` were given without `visual_feats`.")
            return
        if visual_pos is None:
            raise ValueError("`visual_feats` needs `visual_pos` (the normalised region boxes).")
        if visual_feats.dim() != 3 or visual_feats.shape[0] != batch_size or visual_feats.shape[2] != config.visual_feat_dim:
            raise ValueError(
                f"`visual_feats` must be (batch_size={batch_size}, num_regions, visual_feat_dim={config.visual_feat_dim}),"
                f" got shape {tuple(visual_feats.shape)}."
            )
        if not visual_feats.is_floating_point():
            raise TypeError(f"`visual_feats` must be a floating point tensor, got {visual_feats.dtype}.")
        expected = (batch_size, visual_feats.shape[1])
        if visual_feats.shape[1] == 0 and not config.prepend_global_region:
            raise ValueError("`visual_feats` has 0 regions.")
        if tuple(visual_pos.shape) != (*expected, config.visual_pos_dim):
            raise ValueError(
                f"`visual_pos` must be (batch_size, num_regions, visual_pos_dim) = {(*expected, config.visual_pos_dim)}, "
                f"got shape {tuple(visual_pos.shape)}."
            )
        if not visual_pos.is_floating_point():
            raise TypeError(f"`visual_pos` must be a floating point tensor, got {visual_pos.dtype}.")
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


# Copied from hf_vl.models.meter.modeling_meter._MeterClassIndexLabels with Meter->InterBert
class _InterBertClassIndexLabels:
    """Value check of `labels` holding class indices in `[0, num_classes)`."""

    def _num_classes(self) -> int:
        return self.config.num_labels

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError(f"`labels` must hold class indices, got non-integer values {labels.tolist()[:6]}.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self._num_classes()):
            raise ValueError(
                f"`labels` must be class indices in [0, {self._num_classes()}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )


# Copied from hf_vl.models.meter.modeling_meter._single_label_loss
def _single_label_loss(logits, labels):
    if labels is None:
        return None
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
    return F.cross_entropy(logits, labels.to(logits.device).long())


class InterBertForPreTraining(InterBertPreTrainedModel):
    """InterBERT with its pre-training heads (paper Sec. 3.2): masked segment modelling (MSM, `mlm_labels`), masked
    region modelling (MRM, `mrm_labels`) and image-text matching (ITM, `itm_labels`, 1 = match) on the fused vector.

    The masking itself lives in the collators (`hf_vl.data.DataCollatorForSpanMasking` for MSM,
    `hf_vl.data.DataCollatorForIoURegionMasking` for MRM: masked regions have zeroed features). As in the code, the
    MRM loss only counts matched pairs when `itm_labels` is given; the MSM loss counts every row. The total loss is
    `msm_loss_weight * msm + mrm_loss_weight * mrm + itm_loss_weight * itm` over the objectives with labels.
    """

    accepts_loss_kwargs = False
    _tied_weights_keys = {"msm_head.decoder.weight": "interbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.interbert = InterBertModel(config)
        self.msm_head = InterBertMSMHead(config)
        self.mrm_head = InterBertMRMHead(config)
        self.itm_head = nn.Linear(config.pooler_size, 2)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.msm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Installs a new MSM decoder (e.g. from `resize_token_embeddings`) and resizes its bias (new rows zero)."""
        self.msm_head.decoder = new_embeddings
        old_bias = self.msm_head.bias.data
        new_size = new_embeddings.out_features
        if new_size != old_bias.shape[0]:
            bias = torch.zeros(new_size, device=old_bias.device, dtype=old_bias.dtype)
            keep = min(new_size, old_bias.shape[0])
            bias[:keep] = old_bias[:keep]
            self.msm_head.bias = nn.Parameter(bias)

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
    ) -> InterBertForPreTrainingOutput:
        r"""
        Args:
            mlm_labels (`(batch_size, text_length)`): original ids of the masked tokens, -100 elsewhere.
            mrm_labels: for the regions of `visual_feats`, either `(batch_size, num_regions)` detector class ids of
                the masked regions (-100 elsewhere; cross-entropy), or `(batch_size, num_regions, num_region_classes)`
                detector class distributions (KL divergence, as in the code) of the regions marked in `mrm_mask`.
            mrm_mask (`(batch_size, num_regions)` bool, *optional*): the masked regions; required with distributions.
            itm_labels (`(batch_size,)`): 1 when the text describes the image, 0 otherwise.
            Other arguments as in [`InterBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(mlm_labels=mlm_labels, mrm_labels=mrm_labels, itm_labels=itm_labels)
        if visual_feats is None:
            raise ValueError("InterBertForPreTraining needs regions: `visual_feats` is None.")
        outputs = self.interbert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask, **kwargs,
        )
        msm_logits = self.msm_head(outputs.text_features)
        region_states = outputs.image_features
        if self.config.prepend_global_region:
            region_states = region_states[:, 1:]  # scores for the input regions only
        mrm_logits = self.mrm_head(region_states)  # (B, N, num_region_classes)
        itm_logits = self.itm_head(self.dropout(outputs.pooler_output))

        losses = {}
        if mlm_labels is not None:
            if mlm_labels.shape != msm_logits.shape[:2]:
                raise ValueError(
                    f"`mlm_labels` must be (batch_size, text_length) = {tuple(msm_logits.shape[:2])}, got "
                    f"{tuple(mlm_labels.shape)}."
                )
            # mean over the masked tokens; 0 (not NaN) for a batch where masking chose none (short captions)
            labels = mlm_labels.to(msm_logits.device).flatten()
            per_token = F.cross_entropy(msm_logits.flatten(0, 1), labels, ignore_index=-100, reduction="sum")
            losses["msm_loss"] = per_token / (labels != -100).sum().clamp(min=1).to(per_token.dtype)
        if mrm_labels is not None:
            losses["mrm_loss"] = self._mrm_loss(mrm_logits, mrm_labels, mrm_mask, itm_labels)
        if itm_labels is not None:
            if itm_labels.shape != itm_logits.shape[:1]:
                raise ValueError(f"`itm_labels` must be (batch_size,), got {tuple(itm_labels.shape)}.")
            losses["itm_loss"] = F.cross_entropy(itm_logits, itm_labels.to(itm_logits.device).long())
        weights = {"msm_loss": self.config.msm_loss_weight, "mrm_loss": self.config.mrm_loss_weight,
                   "itm_loss": self.config.itm_loss_weight}
        return InterBertForPreTrainingOutput(
            loss=sum(weights[name] * value for name, value in losses.items()) if losses else None,
            msm_loss=losses.get("msm_loss"),
            mrm_loss=losses.get("mrm_loss"),
            itm_loss=losses.get("itm_loss"),
            msm_logits=msm_logits,
            mrm_logits=mrm_logits,
            itm_logits=itm_logits,
            pooler_output=outputs.pooler_output,
            **_stream_outputs(outputs),
        )

    @staticmethod
    def _mrm_loss(mrm_logits, mrm_labels, mrm_mask, itm_labels):
        """Masked region modelling loss over matched pairs (`itm_labels == 1`, or every pair without ITM labels)."""
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
            if not bool((labels != -100).any()) and not torch.compiler.is_compiling():
                return mrm_logits.sum() * 0.0  # no masked region in a matched pair: nothing to predict
            return F.cross_entropy(mrm_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
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
        # KL(target || softmax(logits)) per region, summed over classes (the code's KLDivLoss(reduction="none"))
        kl = F.kl_div(F.log_softmax(mrm_logits, dim=-1), mrm_labels.to(mrm_logits.dtype), reduction="none").sum(-1)
        return (kl * counted.to(kl.dtype)).sum() / counted.sum().clamp(min=1).to(kl.dtype)

    def validate_input_values(self, mlm_labels=None, mrm_labels=None, itm_labels=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        vocab_size, num_classes = self.config.vocab_size, self.config.num_region_classes
        if mlm_labels is not None:
            valid = (mlm_labels == -100) | ((mlm_labels >= 0) & (mlm_labels < vocab_size))
            if not bool(valid.all()):
                raise ValueError(f"`mlm_labels` must be -100 or token ids in [0, {vocab_size}).")
        if mrm_labels is not None and mrm_labels.is_floating_point():
            if not bool(torch.isfinite(mrm_labels).all()) or float(mrm_labels.min()) < 0:
                raise ValueError("`mrm_labels` class distributions must be finite and non-negative.")
        elif mrm_labels is not None:
            valid = (mrm_labels == -100) | ((mrm_labels >= 0) & (mrm_labels < num_classes))
            if not bool(valid.all()):
                raise ValueError(f"`mrm_labels` must be -100 or region class ids in [0, {num_classes}) "
                                 "(`config.num_region_classes`).")
        if itm_labels is not None and not bool(((itm_labels == 0) | (itm_labels == 1)).all()):
            raise ValueError(f"`itm_labels` must be 0 (mismatch) or 1 (match), got {itm_labels.tolist()[:6]}.")


class InterBertForQuestionAnswering(InterBertPreTrainedModel):
    """InterBERT with a VQA head on the fused representation (`vil_prediction` of the code): multi-label
    classification over `config.num_labels` answers with soft scores, BCE times the number of answers."""

    accepts_loss_kwargs = False

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.interbert = InterBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.pooler_size, config.num_labels)
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
    ) -> InterBertClassifierOutput:
        r"""
        Args:
            labels (`(batch_size, num_labels)` float): soft VQA scores of every answer, in [0, 1].
            Other arguments as in [`InterBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(labels=labels)
        if visual_feats is None:
            raise ValueError("InterBertForQuestionAnswering needs regions: `visual_feats` is None.")
        outputs = self.interbert(
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
        return InterBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_stream_outputs(outputs)
        )

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        super()._validate_label_values(labels)
        if labels.numel() and (float(labels.min()) < 0 or float(labels.max()) > 1):
            raise ValueError(
                f"`labels` must be soft VQA scores in [0, 1], got values in [{float(labels.min())}, "
                f"{float(labels.max())}] (class indices? use hf_vl.data.soft_target_tensor)."
            )


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


class InterBertForImageAndTextRetrieval(InterBertPreTrainedModel):
    """InterBERT for image-text retrieval: a matching score per (image, text) pair from the fused representation
    (`vil_logit` of the code).

    Two ways to train:
    - pairs: `input_ids (B, L)`, regions `(B, N, D)`, `labels (B,)` 1/0 -> binary cross-entropy;
    - ranking (the paper's 4-way multiple-choice fine-tuning, Sec. 4.3): `input_ids (B, K, L)` = K candidate texts
      per image (regions `(B, N, D)` shared, or `(B, K, N, D)` = K candidate images per text), `labels (B,)` = index
      of the true candidate -> cross-entropy over the K scores; `logits` are `(B, K)`.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.interbert = InterBertModel(config)
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
    ) -> InterBertClassifierOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)` or `(batch_size, num_candidates, text_length)`).
            labels: `(batch_size,)` 1/0 match labels for pairs, or the index of the true candidate in ranking mode.
            Other arguments as in [`InterBertModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        if visual_feats is None:
            raise ValueError("InterBertForImageAndTextRetrieval needs regions: `visual_feats` is None.")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  "visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": visual_attention_mask}
        num_candidates = None
        if input_ids is not None and input_ids.dim() == 3:
            num_candidates = input_ids.shape[1]
            inputs = _expand_choices(num_candidates, **inputs)
        self._check_inputs(labels=labels, num_candidates=num_candidates)
        outputs = self.interbert(**inputs, **kwargs)
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
        return InterBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=pooled, **_stream_outputs(outputs, num_candidates)
        )

    @classmethod
    def from_pretraining_model(cls, pretraining_model: "InterBertForPreTraining") -> "InterBertForImageAndTextRetrieval":
        """Zero-shot retrieval with the pre-trained image-text matching head (paper Sec. 4.3): the same backbone, and
        `rank_output` = the ITM head's log-odds of "match" (`W[1] - W[0]`, `b[1] - b[0]`), so the score ranks pairs
        exactly as the pre-trained ITM probability does. Fine-tune it from there, or use it as is."""
        model = cls(pretraining_model.config)
        model.interbert.load_state_dict(pretraining_model.interbert.state_dict())
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


class InterBertForMultipleChoice(InterBertPreTrainedModel):
    """InterBERT for VCR-style multiple choice (Q->A, QA->R; paper Sec. 4.2): each of the K choices is a text
    (question + answer [+ rationale]) fused with the image; one score per choice from the fused representation,
    cross-entropy over the K choices.

    `input_ids (B, K, L)`; regions `(B, N, D)` (one image shared by the K choices) or `(B, K, N, D)`.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.interbert = InterBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.pooler_size, 1)
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
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> InterBertClassifierOutput:
        r"""
        Args:
            input_ids (`(batch_size, num_choices, text_length)`): the texts of the choices.
            labels (`(batch_size,)`): index of the correct choice.
            Other arguments as in [`InterBertModel.forward`] (`(batch_size, num_choices, ...)` text tensors).
        """
        _reject_unknown_kwargs(self, kwargs)
        if input_ids is None or input_ids.dim() != 3:
            raise ValueError(
                "`input_ids` must be (batch_size, num_choices, text_length) for multiple choice, got "
                f"{None if input_ids is None else tuple(input_ids.shape)}."
            )
        if visual_feats is None:
            raise ValueError("InterBertForMultipleChoice needs regions: `visual_feats` is None.")
        num_choices = input_ids.shape[1]
        self._check_inputs(labels=labels, num_choices=num_choices)
        inputs = _expand_choices(num_choices, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos,
                                 visual_attention_mask)
        outputs = self.interbert(**inputs, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output)).reshape(-1, num_choices)  # (B, K)
        return InterBertClassifierOutput(
            loss=_single_label_loss(logits, labels), logits=logits,
            pooler_output=outputs.pooler_output.unflatten(0, (-1, num_choices)),
            **_stream_outputs(outputs, num_choices),
        )

    def validate_input_values(self, labels=None, num_choices=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        if labels is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_choices):
            raise ValueError(
                f"`labels` must be the index of the correct choice in [0, {num_choices}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )


class InterBertForSequenceClassification(_InterBertClassIndexLabels, InterBertPreTrainedModel):
    """InterBERT on text alone (the paper's single-modal GLUE-style experiment, Sec. 4.4): the text goes through the
    interaction module and the text extractor; the text pooler feeds a linear classifier. `labels`: `(batch_size,)`
    class ids (cross-entropy), or floats with `num_labels=1` (regression, MSE)."""

    accepts_loss_kwargs = False

    def __init__(self, config: InterBertConfig):
        super().__init__(config)
        self.interbert = InterBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.pooler_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> InterBertClassifierOutput:
        r"""
        Args:
            labels (`(batch_size,)`): class indices in `[0, config.num_labels)`, or regression targets when
                `config.num_labels == 1`.
            Other arguments as in [`InterBertModel.forward`] (no regions).
        """
        _reject_unknown_kwargs(self, kwargs)
        if self.config.num_labels > 1:
            self._check_inputs(labels=labels)
        outputs = self.interbert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
        )
        logits = self.classifier(self.dropout(outputs.text_pooler_output))
        loss = None
        if labels is not None and self.config.num_labels == 1:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
            loss = F.mse_loss(logits[:, 0], labels.to(logits.device, logits.dtype))
        elif labels is not None:
            loss = _single_label_loss(logits, labels)
        return InterBertClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.text_pooler_output, **_stream_outputs(outputs)
        )


__all__ = [
    "InterBertPreTrainedModel",
    "InterBertModel",
    "InterBertForPreTraining",
    "InterBertForQuestionAnswering",
    "InterBertForImageAndTextRetrieval",
    "InterBertForMultipleChoice",
    "InterBertForSequenceClassification",
    "InterBertModelOutput",
    "InterBertForPreTrainingOutput",
    "InterBertClassifierOutput",
    "prepend_global_region",
]
