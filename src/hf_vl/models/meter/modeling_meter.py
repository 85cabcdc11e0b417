"""PyTorch METER model.

Paper: Dou et al., "An Empirical Study of Training End-to-End Vision-and-Language Transformers" (CVPR 2022),
https://arxiv.org/abs/2111.02387. Original code (MIT): https://github.com/zdou0830/METER.

METER = pretrained vision encoder (CLIP-ViT, Swin or ViT) + pretrained text encoder (RoBERTa, BERT) + fusion layers.
Fusion is either co-attention (two streams, each layer: self-attention -> cross-attention -> FFN, both streams updated
in parallel from the previous layer's outputs; paper Sec. 3.3, Fig. 2a) or merged attention (one stream over the
concatenated features, Fig. 2b). Where the paper and the code differ we follow the code (conversion parity):
- the CLIP tower drops CLIP's last block and applies CLIP's final LayerNorm (`ln_post`) to every token;
- modality (token-type) embeddings are added after the linear projections of both towers;
- the pooled output is `cat(tanh(W_t x_text[CLS]), tanh(W_v x_image[CLS or mean]))` (size 2 * hidden_size);
- the VQA loss is BCE over soft scores multiplied by the number of answers.
"""

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_meter import MeterConfig


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class MeterModelOutput(ModelOutput):
    """Outputs of [`MeterModel`].

    Args:
        text_features (`(batch_size, text_length, hidden_size)`): text stream after the last fusion layer.
        image_features (`(batch_size, image_length, hidden_size)`): image stream after the last fusion layer.
        pooler_output (`(batch_size, 2 * hidden_size)`): `cat(text pooler, image pooler)` (METER's `cls_feats`).
        hidden_states (`tuple` of `num_fusion_layers + 1` tensors `(batch_size, text_length + image_length,
            hidden_size)`): the fusion sequence (text tokens, then image tokens) entering the first fusion layer and
            after every fusion layer (`output_hidden_states=True`). For merged attention it is the single stream; for
            co-attention the two streams side by side (the same tensors as `text_hidden_states` / `image_hidden_states`).
        attentions (`tuple` of `num_fusion_layers` tensors `(batch_size, heads, text_length + image_length,
            text_length + image_length)`): attention weights per fusion layer (`output_attentions=True`, eager
            attention). Merged attention: the single-stream weights. Co-attention: the block matrix
            `[[text self, text->image cross], [image->text cross, image self]]` (each block row is one softmax
            distribution, so a row sums to 2); the blocks are also returned on their own below.
        text_hidden_states, image_hidden_states (`tuple` of `num_fusion_layers + 1` tensors): the same hidden states
            split per stream.
        text_attentions, image_attentions (`tuple` of `(batch, heads, len, len)`): self-attention weights per
            co-attention layer.
        text_cross_attentions, image_cross_attentions: cross-attention weights per co-attention layer
            (text->image is `(batch, heads, text_length, image_length)`).
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MeterForPreTrainingOutput(ModelOutput):
    """Outputs of [`MeterForPreTraining`].

    Args:
        loss: sum of the objectives that received labels. mlm_loss, itm_loss, mim_loss, mim_discrete_loss: each
            objective alone.
        mlm_logits (`(batch_size, text_length, vocab_size)`), itm_logits (`(batch_size, 2)`, index 1 = match),
        mim_logits (`(num_masked_patches, num_masked_patches)`): masked patch classification scores against every
            masked patch of the batch (in-batch negatives).
        mim_discrete_logits (`(batch_size, num_image_patches, mim_codebook_size)`): scores of the visual-token codes
            of every image patch (masked patch classification with discrete codes; the loss counts masked patches).
        pooler_output and the fusion hidden states / attentions as in [`MeterModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    mim_discrete_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    mim_logits: torch.FloatTensor | None = None
    mim_discrete_logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MeterClassifierOutput(ModelOutput):
    """Outputs of METER's task heads (VQA, NLVR2, SNLI-VE, retrieval).

    Args:
        loss: the task loss when `labels` are given.
        logits: `(batch_size, num_labels)`; for retrieval `(batch_size, 1)`, or `(batch_size, num_candidates)` when
            several candidate texts are scored per image.
        pooler_output: the pooled features the head read (`2 * hidden_size`, NLVR2: `4 * hidden_size`).
        Fusion hidden states / attentions as in [`MeterModelOutput`] (NLVR2: stacked over the two images on dim 1).
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
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


_FUSION_OUTPUT_FIELDS = (
    "hidden_states",
    "attentions",
    "text_hidden_states",
    "image_hidden_states",
    "text_attentions",
    "image_attentions",
    "text_cross_attentions",
    "image_cross_attentions",
)


def _fusion_outputs(outputs: MeterModelOutput) -> dict:
    return {name: getattr(outputs, name) for name in _FUSION_OUTPUT_FIELDS}


# ----------------------------------------------------------------------------------------------------------------------
# Fusion blocks (BERT-style, post-LN; METER's `BertCrossLayer`)
# ----------------------------------------------------------------------------------------------------------------------


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


class MeterSelfAttention(nn.Module):
    """Multi-head attention; attends to `encoder_hidden_states` when given (cross-attention), else to itself."""

    def __init__(self, config: MeterConfig):
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

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        key_value_states = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = self.query(hidden_states).view(*input_shape, -1, self.attention_head_size).transpose(1, 2)
        kv_shape = (*key_value_states.shape[:-1], -1, self.attention_head_size)
        key = self.key(key_value_states).view(kv_shape).transpose(1, 2)  # (B, H, Lk, D)
        value = self.value(key_value_states).view(kv_shape).transpose(1, 2)

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


class MeterSelfOutput(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MeterAttention(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.self = MeterSelfAttention(config)
        self.output = MeterSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kwargs):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, encoder_hidden_states, **kwargs)
        return self.output(attn_output, hidden_states), attn_weights


class MeterIntermediate(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class MeterOutput(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MeterCoAttentionLayer(GradientCheckpointingLayer):
    """One co-attention layer of one stream (paper Fig. 2a): self-attention, cross-attention to the other stream
    (queries from the self-attention output), feed-forward."""

    def __init__(self, config: MeterConfig):
        super().__init__()
        self.attention = MeterAttention(config)
        self.crossattention = MeterAttention(config)
        self.intermediate = MeterIntermediate(config)
        self.output = MeterOutput(config)

    def forward(self, hidden_states, other_hidden_states, attention_mask=None, other_attention_mask=None, **kwargs):
        self_output, self_weights = self.attention(hidden_states, attention_mask, **kwargs)
        cross_output, cross_weights = self.crossattention(
            self_output, other_attention_mask, encoder_hidden_states=other_hidden_states, **kwargs
        )
        layer_output = self.output(self.intermediate(cross_output), cross_output)
        return layer_output, self_weights, cross_weights


class MeterMergedAttentionLayer(GradientCheckpointingLayer):
    """One merged-attention layer (paper Fig. 2b): a BERT layer over the concatenated text and image tokens."""

    def __init__(self, config: MeterConfig):
        super().__init__()
        self.attention = MeterAttention(config)
        self.intermediate = MeterIntermediate(config)
        self.output = MeterOutput(config)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        return self.output(self.intermediate(attention_output), attention_output), attn_weights


class MeterPooler(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, first_token_tensor):
        return self.activation(self.dense(first_token_tensor))


# ----------------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------------


class MeterPredictionHeadTransform(nn.Module):
    def __init__(self, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class MeterMLMHead(nn.Module):
    """Masked language modelling head over the text stream (not tied to the word embeddings, as in METER)."""

    def __init__(self, config: MeterConfig):
        super().__init__()
        vocab_size = config.text_config.vocab_size
        self.transform = MeterPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class MeterITMHead(nn.Module):
    """Image-text matching head over the pooled output; logit index 1 means "the text matches the image"."""

    def __init__(self, config: MeterConfig):
        super().__init__()
        self.fc = nn.Linear(2 * config.hidden_size, 2)

    def forward(self, pooled_output):
        return self.fc(pooled_output)


def _classifier(config: MeterConfig, input_size: int, num_outputs: int) -> nn.Sequential:
    """METER's task head: Linear -> LayerNorm -> GELU -> Linear (keys `0`, `1`, `3` in original checkpoints)."""
    hidden = 2 * config.hidden_size
    return nn.Sequential(
        nn.Linear(input_size, hidden),
        nn.LayerNorm(hidden, eps=config.classifier_layer_norm_eps),
        nn.GELU(),
        nn.Linear(hidden, num_outputs),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Base model
# ----------------------------------------------------------------------------------------------------------------------


# Tokens a vision tower puts before its patch tokens ([CLS], DeiT's distillation token, ...). Towers missing here are
# refused with a clear error instead of being silently treated as one-[CLS] towers.
_VISION_PREFIX_TOKENS = {
    "clip_vision_model": 1,
    "vit": 1,
    "beit": 1,
    "dinov2": 1,
    "deit": 2,  # [CLS] + distillation token
    "siglip_vision_model": 0,
    "siglip2_vision_model": 0,
    "swin": 0,
    "swinv2": 0,
    "resnet": 0,
    "convnext": 0,
    "convnextv2": 0,
}

# Keyword arguments the transformers runtime may pass to any forward (`**kwargs: Unpack[TransformersKwargs]`).
_RUNTIME_KWARGS = frozenset(TransformersKwargs.__annotations__)
_FORWARD_PARAMETERS: dict[type, frozenset] = {}


def num_vision_prefix_tokens(vision_config) -> int:
    """Number of non-patch tokens ([CLS], distillation, registers) at the start of the vision tower's output."""
    model_type = getattr(vision_config, "model_type", None)
    if model_type not in _VISION_PREFIX_TOKENS:
        raise ValueError(
            f"`vision_config.model_type` {model_type!r} is not a supported METER vision tower; supported: "
            f"{sorted(_VISION_PREFIX_TOKENS)}."
        )
    return _VISION_PREFIX_TOKENS[model_type] + int(getattr(vision_config, "num_register_tokens", 0) or 0)


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


class MeterPreTrainedModel(PreTrainedModel):
    config_class = MeterConfig
    config: MeterConfig
    base_model_prefix = "meter"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["MeterCoAttentionLayer", "MeterMergedAttentionLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        """METER's `_init_weights` only uses the flag-aware `transformers.initialization` functions, so the loader's
        remote-code heuristic (which marks every module without parameters of its own, e.g. `CLIPAttention`,
        `CLIPMLP`, as initialised and so skips the towers' own scaled init of their projections) must not apply:
        weights missing from a checkpoint then get exactly the init of a fresh model."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear / Embedding / LayerNorm with `config.initializer_range`
        if isinstance(module, MeterMLMHead):
            init.zeros_(module.bias)

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_model_name_or_path,
        vision_model_name_or_path,
        text_model_kwargs: dict | None = None,
        vision_model_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "MeterPreTrainedModel":
        """Builds METER from a pretrained text encoder and a pretrained vision encoder; fusion layers and heads are
        randomly initialised (the paper's recipe). Each tower is loaded once and passed in, as
        `VisionTextDualEncoderModel.from_vision_text_pretrained` does.

        Args:
            text_model_name_or_path: any transformers text encoder (RoBERTa, BERT, MiniLM ...), a path/Hub id or an
                already loaded `PreTrainedModel`.
            vision_model_name_or_path: a CLIP (vision or full), ViT, DeiT, SigLIP, Swin or ResNet/ConvNeXt checkpoint
                (path, Hub id or loaded model); a `PreTrainedConfig` or a config dict instead builds a randomly
                initialised vision tower.
            text_model_kwargs / vision_model_kwargs: passed to `from_pretrained` of the tower (e.g.
                `{"num_hidden_layers": 3}` keeps the first 3 layers).
            config_kwargs: [`MeterConfig`] fields (e.g. `hidden_size=384, num_fusion_layers=2, num_labels=13`).

        Called on a head class (`MeterForQuestionAnswering.from_text_vision_pretrained(...)`) it returns that head.

        Example:

        ```python
        >>> model = MeterForQuestionAnswering.from_text_vision_pretrained("roberta-base", "openai/clip-vit-base-patch16")
        ```
        """
        text_model = _load_tower(text_model_name_or_path, text_model_kwargs, _text_encoder_kwargs)
        if isinstance(vision_model_name_or_path, (dict, PreTrainedConfig)):
            vision_model = None
            vision_config = vision_model_name_or_path
            vision_config = vision_config.to_dict() if isinstance(vision_config, PreTrainedConfig) else vision_config
        else:
            vision_model = _load_tower(vision_model_name_or_path, vision_model_kwargs, _vision_encoder_kwargs)
            vision_config = vision_model.config.to_dict()
        config = MeterConfig(text_config=text_model.config.to_dict(), vision_config=vision_config, **config_kwargs)
        return cls(config, text_model=text_model, vision_model=vision_model)

    def enable_input_require_grads(self):
        """Makes the outputs of both towers' input embeddings require grad (adapters + gradient checkpointing).

        Overridden because some vision towers' patch embeddings return tuples (Swin), which the generic hook of
        `PreTrainedModel` cannot handle.
        """

        def make_output_require_grads(module, inputs, output):
            (output[0] if isinstance(output, tuple) else output).requires_grad_(True)

        base = self.base_model
        embeddings = (base.text_model.get_input_embeddings(), base.vision_model.get_input_embeddings())
        self._require_grads_hooks = [e.register_forward_hook(make_output_require_grads) for e in embeddings]
        self._require_grads_hook = self._require_grads_hooks[0]

    def validate_input_values(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> None:
        """Value checks (ids in the vocabulary, 0/1 masks, finite pixels, labels in range). They read tensor values,
        i.e. synchronise with the device, so `forward` runs them only in eager mode and only while
        `config.check_input_values` is True (the default); `torch.compile` never traces them. Processors and
        pipelines call this method once per request.

        Raises `ValueError` naming the argument and the offending value.
        """
        text_config = self.config.text_config
        if input_ids is not None and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= text_config.vocab_size:
                raise ValueError(
                    f"`input_ids` must be in [0, {text_config.vocab_size}) (the text tower's vocab_size), got values "
                    f"in [{low}, {high}]: was the text tokenised with another tokenizer?"
                )
        for name, mask in (("attention_mask", attention_mask), ("pixel_mask", pixel_mask)):
            if mask is not None and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"`{name}` must hold only 0 and 1, got values {sorted(mask.unique().tolist())[:6]}.")
        if attention_mask is not None and attention_mask.dim() == 2 and not bool((attention_mask.sum(-1) > 0).all()):
            rows = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
            raise ValueError(f"`attention_mask` rows {rows} are all zeros: empty text is not allowed.")
        type_vocab = getattr(text_config, "type_vocab_size", None)
        if token_type_ids is not None and type_vocab is not None and token_type_ids.numel():
            if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= type_vocab:
                raise ValueError(
                    f"`token_type_ids` must be in [0, {type_vocab}), got max {int(token_type_ids.max())}."
                )
        if pixel_values is not None and pixel_values.is_floating_point() and not bool(torch.isfinite(pixel_values).all()):
            kind = "NaN" if bool(torch.isnan(pixel_values).any()) else "inf"
            raise ValueError(f"`pixel_values` contains {kind} values.")
        if labels is not None:
            self._validate_label_values(labels)

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        """Heads with class-index labels override the range; soft-score heads check [0, 1]."""
        if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
            raise ValueError("`labels` contains NaN or inf.")

    def _check_inputs(self, **inputs) -> None:
        if getattr(self.config, "check_input_values", True) and not torch.compiler.is_compiling():
            self.validate_input_values(**inputs)


def _load_tower(name_or_model, kwargs, encoder_kwargs) -> PreTrainedModel:
    if isinstance(name_or_model, PreTrainedModel):
        return name_or_model
    config = AutoConfig.from_pretrained(name_or_model, **(kwargs or {}))
    config = getattr(config, "vision_config", config)  # CLIPConfig -> CLIPVisionConfig
    return AutoModel.from_pretrained(name_or_model, config=config, **encoder_kwargs(config))


def _extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> additive (B, 1, 1, L) mask for every query."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _text_encoder_kwargs(config) -> dict:
    return {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}


def _vision_encoder_kwargs(config) -> dict:
    return {"add_pooling_layer": False} if config.model_type in ("vit", "deit", "swin", "swinv2", "beit") else {}


def _text_encoder_from_config(text_config):
    return AutoModel.from_config(text_config, **_text_encoder_kwargs(text_config))


def _vision_encoder_from_config(vision_config):
    return AutoModel.from_config(vision_config, **_vision_encoder_kwargs(vision_config))



class MeterModel(MeterPreTrainedModel):
    """METER: vision tower + text tower + fusion layers, returning the fused features and `cat(text, image)` pools.

    Each tower can also be run on its own (`get_text_encoder_hidden_states`, `get_image_encoder_hidden_states`) and
    its output passed back as `text_embeds` / `image_embeds`, so a text or an image that is fused with several
    partners (retrieval candidates, NLVR2's two images) is encoded once.

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import MeterConfig, MeterModel
    >>> model = MeterModel(MeterConfig())
    >>> outputs = model(input_ids=torch.tensor([[0, 31414, 2]]), pixel_values=torch.randn(1, 3, 288, 288))
    >>> outputs.pooler_output.shape
    torch.Size([1, 1536])
    ```
    """

    def __init__(self, config: MeterConfig, text_model: PreTrainedModel | None = None,
                 vision_model: PreTrainedModel | None = None, add_pooling_layer: bool = True):
        super().__init__(config)
        self.num_image_prefix_tokens = num_vision_prefix_tokens(config.vision_config)
        self.text_model = text_model if text_model is not None else _text_encoder_from_config(config.text_config)
        self.vision_model = vision_model if vision_model is not None else _vision_encoder_from_config(config.vision_config)
        self._vision_interpolates = "interpolate_pos_encoding" in inspect.signature(self.vision_model.forward).parameters

        self.cross_modal_text_transform = nn.Linear(config.text_config.hidden_size, config.hidden_size)
        self.cross_modal_image_transform = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.modality_type_vocab_size, config.hidden_size)

        if config.fusion_type == "co_attention":
            self.cross_modal_text_layers = nn.ModuleList(
                [MeterCoAttentionLayer(config) for _ in range(config.num_fusion_layers)]
            )
            self.cross_modal_image_layers = nn.ModuleList(
                [MeterCoAttentionLayer(config) for _ in range(config.num_fusion_layers)]
            )
        else:
            self.merged_layers = nn.ModuleList(
                [MeterMergedAttentionLayer(config) for _ in range(config.num_fusion_layers)]
            )
        # `add_pooling_layer=False` (the encoder of MeterForConditionalGeneration): no poolers, `pooler_output` None
        self.cross_modal_text_pooler = MeterPooler(config) if add_pooling_layer else None
        self.cross_modal_image_pooler = MeterPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    # --- construction helpers -----------------------------------------------------------------------------------------

    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters that come from the pretrained towers (METER trains them with a smaller LR)."""
        return {
            f"{prefix}.{name}"
            for prefix, module in (("text_model", self.text_model), ("vision_model", self.vision_model))
            for name, _ in module.named_parameters()
        }

    def resize_vision_position_embeddings(self, image_size: int) -> None:
        """Interpolates the vision tower's absolute position table to `image_size` (paper: fine-tune at a higher
        resolution than pre-training, e.g. 288 -> 576); bicubic, prefix rows ([CLS], distillation) kept. No-op for
        towers without an absolute table (Swin, convolutional towers)."""
        embeddings = getattr(self.vision_model, "embeddings", None)
        position_embedding = getattr(embeddings, "position_embedding", None)  # CLIP, SigLIP: nn.Embedding
        if position_embedding is None and getattr(embeddings, "position_embeddings", None) is None:
            return
        patch_size = self.config.vision_config.patch_size
        new_grid = image_size // patch_size
        if isinstance(position_embedding, nn.Embedding):
            table = position_embedding.weight.data[None]
        else:  # ViT, DeiT: nn.Parameter (1, prefix + N, D)
            table = embeddings.position_embeddings.data
        # CLIP, ViT and DeiT give their prefix tokens position rows; SigLIP (no prefix) has patch rows only
        prefix = self.num_image_prefix_tokens if table.shape[1] != int(table.shape[1] ** 0.5) ** 2 else 0
        prefix_rows, grid_rows = table[:, :prefix], table[:, prefix:]
        old_grid = int(grid_rows.shape[1] ** 0.5)
        grid = grid_rows.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        new_table = torch.cat([prefix_rows, grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)
        if isinstance(position_embedding, nn.Embedding):
            new_embedding = nn.Embedding(new_table.shape[1], new_table.shape[2]).to(table.device, table.dtype)
            new_embedding.weight.data.copy_(new_table[0])
            embeddings.position_embedding = new_embedding
            embeddings.num_patches = new_grid * new_grid
            embeddings.num_positions = new_table.shape[1]
            embeddings.register_buffer("position_ids", torch.arange(embeddings.num_positions)[None], persistent=False)
        else:
            embeddings.position_embeddings = nn.Parameter(new_table)
        for module in (embeddings, getattr(embeddings, "patch_embeddings", None)):  # ViT/DeiT keep (h, w) tuples
            if module is not None and hasattr(module, "image_size"):
                module.image_size = (image_size, image_size) if isinstance(module.image_size, tuple) else image_size
        self.config.vision_config.image_size = image_size

    def resize_modality_type_embeddings(self, new_size: int = 3) -> None:
        """Grows the modality table (NLVR2 needs a third row for the second image; the new rows copy row 1, as
        METER does when it starts NLVR2 fine-tuning from a pre-trained checkpoint)."""
        old = self.token_type_embeddings.weight.data
        if new_size <= old.shape[0]:
            return
        new = nn.Embedding(new_size, old.shape[1]).to(old.device, old.dtype)
        new.weight.data[: old.shape[0]] = old
        new.weight.data[old.shape[0] :] = old[1]
        self.token_type_embeddings = new
        self.config.modality_type_vocab_size = new_size

    # --- encoders -----------------------------------------------------------------------------------------------------

    def get_text_encoder_hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Last hidden state of the text tower, `(batch_size, text_length, text_config.hidden_size)`: pass it back as
        `text_embeds` to fuse the same text with several images without re-encoding it."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.text_model(**kwargs).last_hidden_state

    def get_image_encoder_hidden_states(self, pixel_values, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        """Vision tower tokens as METER uses them, `(batch_size, image_length, vision_config.hidden_size)`: CLIP's
        final LayerNorm is applied to every token (not only [CLS]); ViT, DeiT, SigLIP and Swin already end with a
        LayerNorm; convolutional feature maps are flattened row-major. Pass the result back as `image_embeds`."""
        kwargs = {}
        if self._vision_interpolates:
            image_size = getattr(self.config.vision_config, "image_size", None)
            if interpolate_pos_encoding is None:
                interpolate_pos_encoding = image_size is not None and tuple(pixel_values.shape[-2:]) != (image_size,) * 2
            kwargs["interpolate_pos_encoding"] = interpolate_pos_encoding
        hidden_states = self.vision_model(pixel_values=pixel_values, **kwargs).last_hidden_state
        if self.config.vision_config.model_type == "clip_vision_model":
            hidden_states = self.vision_model.post_layernorm(hidden_states)
        if hidden_states.dim() == 4:  # convolutional towers (ResNet, ConvNeXt): (B, C, H, W) -> (B, H * W, C) tokens
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        return hidden_states

    # --- forward ------------------------------------------------------------------------------------------------------

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        image_token_type_idx: int = 1,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterModelOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)`): token ids of the text tower's tokenizer (see [`MeterProcessor`]).
            attention_mask (`(batch_size, text_length)`): 1 for real tokens, 0 for padding.
            token_type_ids (`(batch_size, text_length)`, *optional*): passed to the text tower (BERT).
            pixel_values (`(batch_size, 3, height, width)`): normalised images (see [`MeterImageProcessor`]).
            pixel_mask (`(batch_size, height, width)`, *optional*): 1 for real pixels when images were padded; image
                tokens covering only padding are masked in the fusion layers.
            text_embeds (`(batch_size, text_length, text_config.hidden_size)`, *optional*): the text tower's output
                ([`~MeterModel.get_text_encoder_hidden_states`]) instead of `input_ids`; `attention_mask` still applies.
            image_embeds (`(batch_size, image_length, vision_config.hidden_size)`, *optional*): the vision tower's
                output ([`~MeterModel.get_image_encoder_hidden_states`]) instead of `pixel_values`.
            image_token_type_idx (`int`, defaults to 1): modality-table row of the image (2 for NLVR2's second image).
            interpolate_pos_encoding (`bool`, *optional*): interpolate the vision position table; by default on when
                the image size differs from `vision_config.image_size`.
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions = kwargs.get("output_attentions")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = kwargs.get("output_hidden_states")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        self._validate_input_shapes(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
                                    text_embeds, image_embeds, image_token_type_idx)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           pixel_values=pixel_values, pixel_mask=pixel_mask)

        if text_embeds is None:
            text_embeds = self.get_text_encoder_hidden_states(input_ids, attention_mask, token_type_ids)
        if image_embeds is None:
            image_embeds = self.get_image_encoder_hidden_states(pixel_values, interpolate_pos_encoding)
        if attention_mask is None:
            attention_mask = torch.ones(text_embeds.shape[:2], dtype=torch.long, device=text_embeds.device)
        image_mask = self._image_token_mask(pixel_mask, image_embeds)

        # METER adds the modality embedding after the projections (text: row 0, image: `image_token_type_idx`).
        text = self.cross_modal_text_transform(text_embeds) + self.token_type_embeddings(
            torch.zeros_like(attention_mask)
        )
        image = self.cross_modal_image_transform(image_embeds) + self.token_type_embeddings(
            torch.full_like(image_mask, image_token_type_idx)
        )
        fusion = self._co_attention if self.config.fusion_type == "co_attention" else self._merged_attention
        fused = fusion(text, image, attention_mask, image_mask, output_attentions, output_hidden_states)
        text_features, image_features = fused.pop("text_features"), fused.pop("image_features")

        pooler_output = None
        if self.cross_modal_text_pooler is not None:
            if self.config.image_pooling == "cls":
                image_summary = image_features[:, 0]
            else:  # Swin, SigLIP, convolutional towers: average over the (unpadded) image tokens
                weights = image_mask.to(image_features.dtype).unsqueeze(-1)
                image_summary = (image_features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            pooler_output = torch.cat(
                [self.cross_modal_text_pooler(text_features[:, 0]), self.cross_modal_image_pooler(image_summary)],
                dim=-1,
            )
        return MeterModelOutput(
            text_features=text_features, image_features=image_features, pooler_output=pooler_output, **fused
        )

    def _co_attention(self, text, image, text_mask, image_mask, output_attentions, output_hidden_states) -> dict:
        ext_text_mask = _extended_attention_mask(text_mask, text.dtype)
        ext_image_mask = _extended_attention_mask(image_mask, image.dtype)
        collect = {name: [] for name in _FUSION_OUTPUT_FIELDS}
        for text_layer, image_layer in zip(self.cross_modal_text_layers, self.cross_modal_image_layers):
            if output_hidden_states:
                collect["text_hidden_states"].append(text)
                collect["image_hidden_states"].append(image)
            # both streams read the previous layer's outputs (updated in parallel)
            text_out = text_layer(text, image, ext_text_mask, ext_image_mask, output_attentions=output_attentions)
            image_out = image_layer(image, text, ext_image_mask, ext_text_mask, output_attentions=output_attentions)
            text, image = text_out[0], image_out[0]
            if output_attentions:
                collect["text_attentions"].append(text_out[1])
                collect["text_cross_attentions"].append(text_out[2])
                collect["image_attentions"].append(image_out[1])
                collect["image_cross_attentions"].append(image_out[2])
                text_rows = torch.cat([text_out[1], text_out[2]], dim=-1)  # (B, H, Lt, Lt + Li)
                image_rows = torch.cat([image_out[2], image_out[1]], dim=-1)  # (B, H, Li, Lt + Li)
                collect["attentions"].append(torch.cat([text_rows, image_rows], dim=-2))
        if output_hidden_states:
            collect["text_hidden_states"].append(text)
            collect["image_hidden_states"].append(image)
            collect["hidden_states"] = [
                torch.cat(pair, dim=1) for pair in zip(collect["text_hidden_states"], collect["image_hidden_states"])
            ]
        result = {name: tuple(values) if values else None for name, values in collect.items()}
        return {"text_features": text, "image_features": image, **result}

    def _merged_attention(self, text, image, text_mask, image_mask, output_attentions, output_hidden_states) -> dict:
        text_length = text.shape[1]
        hidden_states = torch.cat([text, image], dim=1)  # (B, Lt + Li, H)
        ext_mask = _extended_attention_mask(torch.cat([text_mask, image_mask], dim=1), hidden_states.dtype)
        all_hidden, all_attentions = [hidden_states], []
        for layer in self.merged_layers:
            hidden_states, attn_weights = layer(hidden_states, ext_mask, output_attentions=output_attentions)
            all_hidden.append(hidden_states)
            all_attentions.append(attn_weights)
        return {
            "text_features": hidden_states[:, :text_length],
            "image_features": hidden_states[:, text_length:],
            "hidden_states": tuple(all_hidden) if output_hidden_states else None,
            "attentions": tuple(all_attentions) if output_attentions else None,
            "text_hidden_states": tuple(h[:, :text_length] for h in all_hidden) if output_hidden_states else None,
            "image_hidden_states": tuple(h[:, text_length:] for h in all_hidden) if output_hidden_states else None,
        }

    def _image_token_mask(self, pixel_mask, image_tower) -> torch.LongTensor:
        batch_size, num_tokens = image_tower.shape[:2]
        mask = torch.ones(batch_size, num_tokens, dtype=torch.long, device=image_tower.device)
        if pixel_mask is None:
            return mask
        prefix = self.num_image_prefix_tokens
        num_patches = num_tokens - prefix
        height, width = pixel_mask.shape[-2:]
        stride = (height * width / num_patches) ** 0.5
        grid = (round(height / stride), round(width / stride))
        if grid[0] * grid[1] != num_patches:
            raise ValueError(
                f"`pixel_mask` of size {height}x{width} does not map onto the {num_patches} image patches of the "
                f"vision tower (grid {grid})."
            )
        patch_mask = F.adaptive_max_pool2d(pixel_mask[:, None].to(image_tower.dtype), grid).flatten(1).long()
        return torch.cat([mask[:, :prefix], patch_mask], dim=1)

    def _validate_input_shapes(self, input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
                               text_embeds, image_embeds, image_token_type_idx):
        """Shape and type checks only (no tensor values are read: `torch.compile(fullgraph=True)` traces them)."""
        text_config, vision_config = self.config.text_config, self.config.vision_config
        if input_ids is None and text_embeds is None:
            raise ValueError("METER needs text: `input_ids` is None (tokenise the text with MeterProcessor).")
        if pixel_values is None and image_embeds is None:
            raise ValueError("METER needs an image: `pixel_values` is None (process the image with MeterProcessor).")
        if input_ids is not None and text_embeds is not None:
            raise ValueError("Pass either `input_ids` or `text_embeds`, not both.")
        if pixel_values is not None and image_embeds is not None:
            raise ValueError("Pass either `pixel_values` or `image_embeds`, not both.")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch_size, text_length), got shape {tuple(input_ids.shape)}.")
            if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
                raise TypeError(f"`input_ids` must be an integer tensor of token ids, got dtype {input_ids.dtype}.")
            text_shape = tuple(input_ids.shape)
        else:
            if text_embeds.dim() != 3 or text_embeds.shape[-1] != text_config.hidden_size:
                raise ValueError(
                    f"`text_embeds` must be (batch_size, text_length, {text_config.hidden_size}), got shape "
                    f"{tuple(text_embeds.shape)}."
                )
            text_shape = tuple(text_embeds.shape[:2])
        if text_shape[1] == 0:
            raise ValueError("`input_ids` is empty (text_length 0): every example needs at least one token.")
        max_length = _max_text_length(text_config)
        if input_ids is not None and max_length is not None and text_shape[1] > max_length:
            raise ValueError(
                f"`input_ids` has {text_shape[1]} tokens but the text tower's position table holds {max_length} "
                "(tokenise with truncation=True, max_length=...)."
            )
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and tuple(tensor.shape) != text_shape:
                raise ValueError(f"`{name}` shape {tuple(tensor.shape)} must equal `input_ids` shape {text_shape}.")
            if tensor is not None and tensor.is_floating_point():
                raise TypeError(f"`{name}` must be an integer tensor, got dtype {tensor.dtype}.")
        batch_size = text_shape[0]
        if pixel_values is not None:
            num_channels = getattr(vision_config, "num_channels", 3)
            if pixel_values.dim() != 4 or pixel_values.shape[1] != num_channels:
                raise ValueError(
                    f"`pixel_values` must be (batch_size, {num_channels}, height, width), got shape "
                    f"{tuple(pixel_values.shape)}."
                )
            if not pixel_values.is_floating_point():
                raise TypeError(f"`pixel_values` must be a floating point tensor, got {pixel_values.dtype}.")
            patch_size = getattr(vision_config, "patch_size", 1)
            if min(pixel_values.shape[-2:]) < patch_size:
                raise ValueError(
                    f"`pixel_values` images are {tuple(pixel_values.shape[-2:])} pixels, smaller than one "
                    f"{patch_size}x{patch_size} patch of the vision tower."
                )
            image_batch = pixel_values.shape[0]
        else:
            if image_embeds.dim() != 3 or image_embeds.shape[-1] != vision_config.hidden_size:
                raise ValueError(
                    f"`image_embeds` must be (batch_size, image_length, {vision_config.hidden_size}), got shape "
                    f"{tuple(image_embeds.shape)}."
                )
            image_batch = image_embeds.shape[0]
        if image_batch != batch_size:
            raise ValueError(
                f"Text and image batch sizes differ: the text has {batch_size} rows, the images {image_batch} "
                "(`input_ids` / `pixel_values`)."
            )
        if pixel_mask is not None:
            if pixel_values is not None and tuple(pixel_mask.shape) != (batch_size, *pixel_values.shape[-2:]):
                raise ValueError(
                    f"`pixel_mask` must be (batch_size, height, width) = {(batch_size, *pixel_values.shape[-2:])}, "
                    f"got {tuple(pixel_mask.shape)}."
                )
            if pixel_mask.dim() != 3:
                raise ValueError(f"`pixel_mask` must be (batch_size, height, width), got {tuple(pixel_mask.shape)}.")
        if not 0 <= image_token_type_idx < self.config.modality_type_vocab_size:
            raise ValueError(
                f"`image_token_type_idx` must be in [0, {self.config.modality_type_vocab_size}), got "
                f"{image_token_type_idx} (NLVR2 needs `modality_type_vocab_size=3`)."
            )


def _max_text_length(text_config) -> int | None:
    """Longest text the tower's absolute position table holds (RoBERTa positions start after the padding index)."""
    max_positions = getattr(text_config, "max_position_embeddings", None)
    if max_positions is None or getattr(text_config, "position_embedding_type", "absolute") != "absolute":
        return None
    if text_config.model_type in ("roberta", "xlm-roberta", "camembert"):
        return max_positions - (text_config.pad_token_id or 0) - 1
    return max_positions



# ----------------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------------


class _MeterClassIndexLabels:
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


class MeterForPreTraining(MeterPreTrainedModel):
    """METER with its pre-training heads: masked language modelling (MLM), image-text matching (ITM) and, as options,
    the paper's two masked image modelling variants (Sec. 3.2, 4.4): masked patch classification with in-batch
    negatives (MIM) and masked patch classification with discrete codes (each masked patch predicts the index of
    its visual token, from any image tokenizer such as a VQ-VAE / DALL-E dVAE; see
    [`~hf_vl.data.discrete_mim_labels`]).

    Losses are computed for the objectives whose labels are passed: `mlm_labels` (`-100` = ignore), `itm_labels`
    (1 = match), `bool_masked_pos` (patches to mask for MIM) and `mim_discrete_labels` (code index per patch, -100
    where not masked; the patches with a label are masked, unless `bool_masked_pos` says which). When `itm_labels`
    is given, the MLM loss only counts rows with `itm_labels == 1` (masked words of a mismatched caption cannot be
    predicted from the image).
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        super().__init__(config)
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model)
        self.mlm_score = MeterMLMHead(config)
        self.itm_score = MeterITMHead(config)
        patch_dim = config.vision_config.num_channels * self.image_token_stride() ** 2
        self.mim_score = nn.Linear(config.hidden_size, patch_dim)
        self.mim_discrete_score = nn.Linear(config.hidden_size, config.mim_codebook_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Installs a new MLM decoder (e.g. from `resize_token_embeddings`) and resizes the output bias with it (new
        rows start at zero)."""
        self.mlm_score.decoder = new_embeddings
        old_bias = self.mlm_score.bias.data
        new_size = new_embeddings.out_features
        if new_size != old_bias.shape[0]:
            bias = torch.zeros(new_size, device=old_bias.device, dtype=old_bias.dtype)
            keep = min(new_size, old_bias.shape[0])
            bias[:keep] = old_bias[:keep]
            self.mlm_score.bias = nn.Parameter(bias)

    def image_token_stride(self) -> int:
        """Pixels per image token side: the patch size (CLIP/ViT/DeiT/SigLIP), patch size * 2^(stages-1) (Swin) or
        the stem stride 4 * 2^(stages-1) of convolutional towers (ResNet, ConvNeXt: stride-4 stem, one downsampling
        per later stage)."""
        vision = self.config.vision_config
        depths = getattr(vision, "depths", None)
        patch_size = getattr(vision, "patch_size", 4)
        stages_downsampling = len(depths) - 1 if depths else 0
        if vision.model_type == "resnet" and getattr(vision, "downsample_in_first_stage", False):
            stages_downsampling += 1
        return patch_size * 2**stages_downsampling

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        itm_labels: torch.LongTensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        mim_discrete_labels: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterForPreTrainingOutput:
        r"""
        Args:
            mlm_labels (`(batch_size, text_length)`): original ids at masked positions, -100 elsewhere.
            itm_labels (`(batch_size,)`): 1 when the text describes the image, 0 otherwise.
            bool_masked_pos (`(batch_size, num_image_patches)` bool): image patches (row-major, no prefix tokens) to
                mask for masked patch classification; masked patches are zeroed in pixel space before the vision tower
                (so it needs `pixel_values`, not `image_embeds`).
            mim_discrete_labels (`(batch_size, num_image_patches)` long): visual-token code of each image patch
                (row-major, the model's token grid; `[0, config.mim_codebook_size)`), -100 where the patch is not
                masked; build them with [`~hf_vl.data.discrete_mim_labels`]. Without `bool_masked_pos`, the patches
                with a label are the masked ones.
            Other arguments as in [`MeterModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        target_patches = None
        if mim_discrete_labels is not None:
            if pixel_values is None:
                raise ValueError("`mim_discrete_labels` was given without `pixel_values` (masking needs the pixels).")
            stride = self.image_token_stride()
            grid = (pixel_values.shape[-2] // stride) * (pixel_values.shape[-1] // stride)
            if mim_discrete_labels.dim() != 2 or tuple(mim_discrete_labels.shape) != (pixel_values.shape[0], grid):
                raise ValueError(
                    f"`mim_discrete_labels` must be (batch_size, num_image_patches) = ({pixel_values.shape[0]}, {grid}) "
                    f"(one code per {stride}x{stride} patch), got {tuple(mim_discrete_labels.shape)}."
                )
        masking = bool_masked_pos if bool_masked_pos is not None else (
            None if mim_discrete_labels is None else mim_discrete_labels != -100
        )  # fmt: skip
        if masking is not None:
            pixel_values, target_patches = self._mask_patches(pixel_values, masking, self.image_token_stride())
        self._check_inputs(mlm_labels=mlm_labels, itm_labels=itm_labels, mim_discrete_labels=mim_discrete_labels)

        outputs = self.meter(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            pixel_values=pixel_values, pixel_mask=pixel_mask, text_embeds=text_embeds, image_embeds=image_embeds,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        mlm_logits = self.mlm_score(outputs.text_features)
        itm_logits = self.itm_score(outputs.pooler_output)

        losses = {}
        if mlm_labels is not None:
            if mlm_labels.shape != mlm_logits.shape[:2]:
                raise ValueError(
                    f"`mlm_labels` must be (batch_size, text_length) = {tuple(mlm_logits.shape[:2])}, got "
                    f"{tuple(mlm_labels.shape)}."
                )
            labels = mlm_labels.to(mlm_logits.device)
            if itm_labels is not None:
                labels = labels.masked_fill(itm_labels.to(labels.device)[:, None] == 0, -100)
            losses["mlm_loss"] = F.cross_entropy(
                mlm_logits.reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        if itm_labels is not None:
            if itm_labels.shape != itm_logits.shape[:1]:
                raise ValueError(f"`itm_labels` must be (batch_size,), got {tuple(itm_labels.shape)}.")
            losses["itm_loss"] = F.cross_entropy(itm_logits, itm_labels.to(itm_logits.device).long())
        mim_logits = None
        if bool_masked_pos is not None:
            image_tokens = outputs.image_features[:, self.meter.num_image_prefix_tokens :]
            predictions = self.mim_score(image_tokens[bool_masked_pos.to(image_tokens.device)])  # (M, C * s * s)
            # paper Sec. 4.4: classify each masked patch among all masked patches of the batch (in-batch negatives)
            mim_logits = predictions @ target_patches.to(predictions.dtype).t()  # (M, M)
            targets = torch.arange(mim_logits.shape[0], device=mim_logits.device)
            losses["mim_loss"] = F.cross_entropy(mim_logits, targets)
        mim_discrete_logits = None
        if mim_discrete_labels is not None:
            image_tokens = outputs.image_features[:, self.meter.num_image_prefix_tokens :]
            mim_discrete_logits = self.mim_discrete_score(image_tokens)  # (B, N, codebook)
            labels = mim_discrete_labels.to(mim_discrete_logits.device).reshape(-1)
            total = F.cross_entropy(mim_discrete_logits.reshape(-1, mim_discrete_logits.shape[-1]).float(), labels,
                                    ignore_index=-100, reduction="sum")  # fmt: skip
            # mean over the masked patches; 0 (not NaN) when a batch masks none
            losses["mim_discrete_loss"] = total / labels.ne(-100).sum().clamp(min=1)

        return MeterForPreTrainingOutput(
            loss=sum(losses.values()) if losses else None,
            mlm_loss=losses.get("mlm_loss"),
            itm_loss=losses.get("itm_loss"),
            mim_loss=losses.get("mim_loss"),
            mim_discrete_loss=losses.get("mim_discrete_loss"),
            mlm_logits=mlm_logits,
            itm_logits=itm_logits,
            mim_logits=mim_logits,
            mim_discrete_logits=mim_discrete_logits,
            pooler_output=outputs.pooler_output,
            **_fusion_outputs(outputs),
        )

    def validate_input_values(self, mlm_labels=None, itm_labels=None, mim_discrete_labels=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        vocab_size = self.config.text_config.vocab_size
        if mim_discrete_labels is not None:
            size = self.config.mim_codebook_size
            valid = (mim_discrete_labels == -100) | ((mim_discrete_labels >= 0) & (mim_discrete_labels < size))
            if not bool(valid.all()):
                raise ValueError(f"`mim_discrete_labels` must be -100 or code indices in [0, {size}) (mim_codebook_size).")
        if mlm_labels is not None:
            valid = (mlm_labels == -100) | ((mlm_labels >= 0) & (mlm_labels < vocab_size))
            if not bool(valid.all()):
                raise ValueError(f"`mlm_labels` must be -100 or token ids in [0, {vocab_size}).")
        if itm_labels is not None and not bool(((itm_labels == 0) | (itm_labels == 1)).all()):
            raise ValueError(f"`itm_labels` must be 0 (mismatch) or 1 (match), got {itm_labels.tolist()[:6]}.")

    @staticmethod
    def _mask_patches(pixel_values, bool_masked_pos, stride):
        """Zeroes the masked patches (the mean colour after normalisation) and returns the original patches."""
        if pixel_values is None:
            raise ValueError("`bool_masked_pos` was given without `pixel_values` (masking needs the pixels).")
        batch_size, channels, height, width = pixel_values.shape
        grid_h, grid_w = height // stride, width // stride
        if bool_masked_pos.shape != (batch_size, grid_h * grid_w):
            raise ValueError(
                f"`bool_masked_pos` must be (batch_size, num_patches) = {(batch_size, grid_h * grid_w)}, got "
                f"{tuple(bool_masked_pos.shape)}."
            )
        bool_masked_pos = bool_masked_pos.bool()
        patches = F.unfold(pixel_values, kernel_size=stride, stride=stride).transpose(1, 2)  # (B, N, C * s * s)
        target_patches = patches[bool_masked_pos]
        keep = (~bool_masked_pos).to(pixel_values.dtype).reshape(batch_size, 1, grid_h, grid_w)
        keep = keep.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3)
        return pixel_values * keep, target_patches

    def random_patch_mask(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples `bool_masked_pos` with `config.mim_mask_probability` (at least one patch per image)."""
        stride = self.image_token_stride()
        num_patches = (pixel_values.shape[-2] // stride) * (pixel_values.shape[-1] // stride)
        probs = torch.rand(pixel_values.shape[0], num_patches, generator=generator)
        mask = probs < self.config.mim_mask_probability
        mask[torch.arange(mask.shape[0]), probs.argmin(-1)] = True
        return mask.to(pixel_values.device)


class MeterForQuestionAnswering(MeterPreTrainedModel):
    """METER with a VQA head: multi-label classification over `config.num_labels` answers (VQAv2: 3,129).

    `labels` are soft scores `(batch_size, num_labels)` (VQA: min(#annotators / 3, 1)); the loss is METER's BCE
    times the number of answers.

    Example:

    ```python
    >>> from hf_vl import MeterForQuestionAnswering, MeterProcessor
    >>> outputs = model(**processor(images=image, text="what shape is this?", return_tensors="pt"))
    >>> model.config.id2label[outputs.logits.argmax(-1).item()]
    ```
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        super().__init__(config)
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model)
        self.classifier = _classifier(config, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        labels: torch.FloatTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterClassifierOutput:
        r"""
        Args:
            labels (`(batch_size, num_labels)` float): soft VQA scores of every answer, in [0, 1].
            Other arguments as in [`MeterModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(labels=labels)
        outputs = self.meter(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            pixel_values=pixel_values, pixel_mask=pixel_mask, text_embeds=text_embeds, image_embeds=image_embeds,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"`labels` must be soft scores of shape (batch_size, num_labels) = {tuple(logits.shape)}, got "
                    f"{tuple(labels.shape)}."
                )
            labels = labels.to(logits.device, logits.dtype)
            loss = F.binary_cross_entropy_with_logits(logits, labels) * labels.shape[1]
        return MeterClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_fusion_outputs(outputs)
        )

    def _validate_label_values(self, labels: torch.Tensor) -> None:
        super()._validate_label_values(labels)
        if labels.numel() and (float(labels.min()) < 0 or float(labels.max()) > 1):
            raise ValueError(
                f"`labels` must be soft VQA scores in [0, 1], got values in [{float(labels.min())}, "
                f"{float(labels.max())}] (class indices? use hf_vl.data.soft_target_tensor)."
            )


class MeterForImageTextClassification(_MeterClassIndexLabels, MeterPreTrainedModel):
    """METER for single-label classification of an (image, text) pair, e.g. SNLI-VE visual entailment
    (`num_labels=3`: entailment / neutral / contradiction). `labels`: `(batch_size,)` class ids, cross-entropy loss."""

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        super().__init__(config)
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model)
        self.classifier = _classifier(config, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterClassifierOutput:
        r"""
        Args:
            labels (`(batch_size,)`): class indices in `[0, config.num_labels)`.
            Other arguments as in [`MeterModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        self._check_inputs(labels=labels)
        outputs = self.meter(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            pixel_values=pixel_values, pixel_mask=pixel_mask, text_embeds=text_embeds, image_embeds=image_embeds,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        logits = self.classifier(outputs.pooler_output)
        return MeterClassifierOutput(
            loss=_single_label_loss(logits, labels), logits=logits, pooler_output=outputs.pooler_output,
            **_fusion_outputs(outputs),
        )


def _single_label_loss(logits, labels):
    if labels is None:
        return None
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
    return F.cross_entropy(logits, labels.to(logits.device).long())


class MeterForImagesAndTextClassification(_MeterClassIndexLabels, MeterPreTrainedModel):
    """METER for NLVR2: one statement about two images. Each image is fused with the text separately (the second
    one with modality type 2, so `config.modality_type_vocab_size` must be 3); the two pooled outputs are concatenated
    and classified (`num_labels=2`). The statement goes through the text tower once and both images through the vision
    tower in one batch.

    `pixel_values`: `(batch_size, 2, 3, height, width)` (the [`MeterProcessor`] output for pairs of images).
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        if config.modality_type_vocab_size < 3:
            raise ValueError(
                "MeterForImagesAndTextClassification needs `modality_type_vocab_size=3` (one row per image plus text), "
                f"got {config.modality_type_vocab_size}; call `model.meter.resize_modality_type_embeddings(3)` on a "
                "loaded base model or set it in the config."
            )
        super().__init__(config)
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model)
        self.classifier = _classifier(config, 4 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterClassifierOutput:
        r"""
        Args:
            pixel_values (`(batch_size, 2, 3, height, width)`): the two images of each statement.
            pixel_mask (`(batch_size, 2, height, width)`, *optional*).
            image_embeds (`(batch_size, 2, image_length, vision_hidden_size)`, *optional*): vision tower outputs
                of both images instead of `pixel_values`.
            labels (`(batch_size,)`): class indices (NLVR2: 0 = false, 1 = true).
        """
        _reject_unknown_kwargs(self, kwargs)
        if image_embeds is None:
            if pixel_values is None or pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
                shape = None if pixel_values is None else tuple(pixel_values.shape)
                raise ValueError(f"`pixel_values` must be (batch_size, 2, 3, height, width) for NLVR2, got {shape}.")
            if pixel_mask is not None and (pixel_mask.dim() != 4 or pixel_mask.shape[1] != 2):
                raise ValueError(f"`pixel_mask` must be (batch_size, 2, height, width), got {tuple(pixel_mask.shape)}.")
            # both images through the vision tower in one batch: (B, 2, C, H, W) -> (2B, ...) -> (B, 2, Li, D)
            batch_size = pixel_values.shape[0]
            self.meter._validate_input_shapes(
                input_ids, attention_mask, token_type_ids, pixel_values[:, 0], None, text_embeds, None, 1
            )
            flat = self.meter.get_image_encoder_hidden_states(pixel_values.flatten(0, 1), interpolate_pos_encoding)
            image_embeds = flat.unflatten(0, (batch_size, 2))
            self._check_inputs(pixel_values=pixel_values)
        elif image_embeds.dim() != 4 or image_embeds.shape[1] != 2:
            raise ValueError(
                f"`image_embeds` must be (batch_size, 2, image_length, hidden) for NLVR2, got {tuple(image_embeds.shape)}."
            )
        if text_embeds is None:
            self.meter._validate_input_shapes(
                input_ids, attention_mask, token_type_ids, None, None, None, image_embeds[:, 0], 1
            )
            text_embeds = self.meter.get_text_encoder_hidden_states(input_ids, attention_mask, token_type_ids)
        self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        per_image = [
            self.meter(
                attention_mask=attention_mask,
                text_embeds=text_embeds,
                image_embeds=image_embeds[:, index],
                pixel_mask=None if pixel_mask is None else pixel_mask[:, index],
                image_token_type_idx=index + 1,
                **kwargs,
            )
            for index in range(2)
        ]
        pooled = torch.cat([o.pooler_output for o in per_image], dim=-1)  # (B, 4 * hidden)
        logits = self.classifier(pooled)
        stacked = {}
        for name in _FUSION_OUTPUT_FIELDS:
            first, second = getattr(per_image[0], name), getattr(per_image[1], name)
            stacked[name] = None if first is None else tuple(torch.stack(pair, dim=1) for pair in zip(first, second))
        return MeterClassifierOutput(
            loss=_single_label_loss(logits, labels), logits=logits, pooler_output=pooled, **stacked
        )


class MeterForImageAndTextRetrieval(MeterPreTrainedModel):
    """METER for image-text retrieval: a matching score per (image, text) pair (`rank_output`, initialised from the
    ITM head's "match" row when converted from a pre-trained checkpoint, as METER does).

    Two ways to train:
    - pairs: `input_ids (B, L)`, `pixel_values (B, 3, H, W)`, `labels (B,)` 1/0 -> binary cross-entropy;
    - ranking (METER's IRTR): `input_ids (B, K, L)` = K candidate texts per image, `labels (B,)` = index of the true
      text -> cross-entropy over the K scores. `logits` are then `(B, K)`. Each image goes through the vision tower
      once; its tokens are shared by its K candidates.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        super().__init__(config)
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model)
        self.rank_output = nn.Linear(2 * config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterClassifierOutput:
        r"""
        Args:
            input_ids (`(batch_size, text_length)` or `(batch_size, num_candidates, text_length)`).
            labels: `(batch_size,)` 1/0 match labels for pairs, or the index of the true candidate in ranking mode.
            image_embeds (`(batch_size, image_length, vision_hidden_size)`, *optional*): vision tower outputs, shared by
                all candidates of the image.
        """
        _reject_unknown_kwargs(self, kwargs)
        num_candidates = None
        candidates = text_embeds if input_ids is None else input_ids
        if candidates is not None and candidates.dim() == (4 if input_ids is None else 3):
            batch_size, num_candidates = candidates.shape[:2]
            image_batch = (pixel_values if image_embeds is None else image_embeds)
            if image_batch is None or image_batch.shape[0] != batch_size:
                raise ValueError(
                    f"Ranking mode: the images must have batch_size {batch_size} like `input_ids`, got "
                    f"{None if image_batch is None else tuple(image_batch.shape)}."
                )
            flat = lambda t: None if t is None else t.flatten(0, 1)  # noqa: E731  (B, K, ...) -> (B * K, ...)
            input_ids, text_embeds = flat(input_ids), flat(text_embeds)
            attention_mask, token_type_ids = flat(attention_mask), flat(token_type_ids)
            if image_embeds is None:  # encode every image once, then share its tokens with its K candidates
                image_embeds = self.meter.get_image_encoder_hidden_states(pixel_values, interpolate_pos_encoding)
                self._check_inputs(pixel_values=pixel_values)
                pixel_values = None
            image_embeds = image_embeds.repeat_interleave(num_candidates, dim=0)
            if pixel_mask is not None:
                pixel_mask = pixel_mask.repeat_interleave(num_candidates, dim=0)
        self._check_inputs(labels=labels, num_candidates=num_candidates)
        outputs = self.meter(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            pixel_values=pixel_values, pixel_mask=pixel_mask, text_embeds=text_embeds, image_embeds=image_embeds,
            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
        )
        logits = self.rank_output(outputs.pooler_output)  # (B [* K], 1)
        loss = None
        if num_candidates is not None:
            logits = logits.reshape(-1, num_candidates)
            loss = _single_label_loss(logits, labels)
        elif labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"`labels` must be (batch_size,) 1/0 match labels, got {tuple(labels.shape)}.")
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.device, logits.dtype))
        return MeterClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_fusion_outputs(outputs)
        )

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


# ----------------------------------------------------------------------------------------------------------------------
# Encoder-decoder METER (paper Sec. 3.1 and Table 7): a sequence decoder on top of the fusion module
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class MeterSeq2SeqLMOutput(Seq2SeqLMOutput):
    """Outputs of [`MeterForConditionalGeneration`]: transformers' `Seq2SeqLMOutput` (`loss`, `logits`, `cache`,
    `decoder_hidden_states`, `decoder_attentions`, `cross_attentions` = the cross-attentions over the fused *text*,
    `encoder_last_hidden_state` = the fused text tokens followed by the fused image tokens, `encoder_hidden_states`,
    `encoder_attentions`) plus:

    Args:
        image_cross_attentions (`tuple` of `num_decoder_layers` tensors `(batch_size, heads, target_length,
            image_length)`): the weights of the second cross-attention block of every decoder layer, over the fused
            image tokens (`output_attentions=True`).
    """

    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class MeterResidualOutput(nn.Module):
    """`LayerNorm(x + dropout(W h))`: the post-LN residual of every decoder sub-layer."""

    def __init__(self, input_size: int, hidden_size: int, config: MeterConfig):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MeterDecoderAttention(nn.Module):
    """Multi-head attention of a decoder layer: causal self-attention over the target tokens, or cross-attention over
    one fused stream (keys and values projected from the fusion width `hidden_size`). Keys and values are projected
    by the layer (`project_key_value`) so that the layer can cache them."""

    def __init__(self, config: MeterConfig, key_value_size: int, is_cross_attention: bool, layer_idx: int):
        super().__init__()
        self.config = config
        hidden_size = config.decoder_hidden_size
        self.num_heads = config.decoder_num_attention_heads
        self.head_dim = hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = not is_cross_attention  # masks are always explicit; read only by kernels when mask is None
        self.layer_idx = layer_idx
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(key_value_size, hidden_size)
        self.value = nn.Linear(key_value_size, hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def project_key_value(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*states.shape[:-1], -1, self.head_dim)
        return self.key(states).view(shape).transpose(1, 2), self.value(states).view(shape).transpose(1, 2)

    def forward(self, hidden_states, key, value, attention_mask=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        query = self.query(hidden_states).view(*input_shape, -1, self.head_dim).transpose(1, 2)
        implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask, dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling, **kwargs,
        )  # fmt: skip
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


class MeterDecoderLayer(GradientCheckpointingLayer):
    """One decoder layer (paper Sec. 3.1): causal self-attention, cross-attention over the fused text
    representations, a *separate* cross-attention over the fused image representations, feed-forward; each sub-layer
    post-LN as in the fusion layers.

    Caching: the self-attention keys/values go to `cache.self_attention_cache`; the two cross-attention blocks store
    theirs in layer `layer_idx` of `cache.cross_attention_cache`, text keys first and image keys after them along the
    sequence axis (one cache layer per decoder layer, so transformers' caches sized by the decoder depth fit), and are
    computed once per generation.
    """

    def __init__(self, config: MeterConfig, layer_idx: int):
        super().__init__()
        hidden_size = config.decoder_hidden_size
        self.layer_idx = layer_idx
        self.self_attn = MeterDecoderAttention(config, hidden_size, is_cross_attention=False, layer_idx=layer_idx)
        self.self_attn_output = MeterResidualOutput(hidden_size, hidden_size, config)
        self.text_cross_attn = MeterDecoderAttention(config, config.hidden_size, True, layer_idx)
        self.text_cross_attn_output = MeterResidualOutput(hidden_size, hidden_size, config)
        self.image_cross_attn = MeterDecoderAttention(config, config.hidden_size, True, layer_idx)
        self.image_cross_attn_output = MeterResidualOutput(hidden_size, hidden_size, config)
        self.intermediate = nn.Linear(hidden_size, config.decoder_intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.output = MeterResidualOutput(config.decoder_intermediate_size, hidden_size, config)

    def _cross_key_values(self, text_states, image_states, cache):
        cross_cache = cache.cross_attention_cache if isinstance(cache, EncoderDecoderCache) else None
        text_length = text_states.shape[1]
        if cross_cache is not None and cache.is_updated.get(self.layer_idx):
            keys, values = cross_cache.layers[self.layer_idx].keys, cross_cache.layers[self.layer_idx].values
            return ((keys[:, :, :text_length], values[:, :, :text_length]),
                    (keys[:, :, text_length:], values[:, :, text_length:]))  # fmt: skip
        text_kv = self.text_cross_attn.project_key_value(text_states)
        image_kv = self.image_cross_attn.project_key_value(image_states)
        if cross_cache is not None:
            cross_cache.update(torch.cat([text_kv[0], image_kv[0]], dim=2), torch.cat([text_kv[1], image_kv[1]], dim=2),
                               self.layer_idx)  # fmt: skip
            cache.is_updated[self.layer_idx] = True
        return text_kv, image_kv

    def forward(self, hidden_states, self_attention_mask, text_states, text_mask, image_states, image_mask,
                cache: Cache | None = None, **kwargs):  # fmt: skip
        key, value = self.self_attn.project_key_value(hidden_states)
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        if self_cache is not None:
            key, value = self_cache.update(key, value, self.layer_idx)
        attn_output, self_weights = self.self_attn(hidden_states, key, value, self_attention_mask, **kwargs)
        hidden_states = self.self_attn_output(attn_output, hidden_states)
        (text_key, text_value), (image_key, image_value) = self._cross_key_values(text_states, image_states, cache)
        attn_output, text_weights = self.text_cross_attn(hidden_states, text_key, text_value, text_mask, **kwargs)
        hidden_states = self.text_cross_attn_output(attn_output, hidden_states)
        attn_output, image_weights = self.image_cross_attn(hidden_states, image_key, image_value, image_mask, **kwargs)
        hidden_states = self.image_cross_attn_output(attn_output, hidden_states)
        hidden_states = self.output(self.intermediate_act_fn(self.intermediate(hidden_states)), hidden_states)
        return hidden_states, self_weights, text_weights, image_weights


class MeterDecoder(nn.Module):
    """Token + learned position embeddings (LayerNorm, dropout) and `num_decoder_layers` [`MeterDecoderLayer`]s."""

    def __init__(self, config: MeterConfig):
        super().__init__()
        hidden_size = config.decoder_hidden_size
        self.embed_tokens = nn.Embedding(config.text_config.vocab_size, hidden_size)
        self.embed_positions = nn.Embedding(config.max_decoder_position_embeddings, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList([MeterDecoderLayer(config, index) for index in range(config.num_decoder_layers)])

    def forward(self, input_ids, position_ids, self_attention_mask, text_states, text_mask, image_states, image_mask,
                cache=None, output_attentions=False, output_hidden_states=False):  # fmt: skip
        hidden_states = self.dropout(self.LayerNorm(self.embed_tokens(input_ids) + self.embed_positions(position_ids)))
        all_hidden, self_weights, text_weights, image_weights = [], [], [], []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, *weights = layer(hidden_states, self_attention_mask, text_states, text_mask, image_states,
                                            image_mask, cache=cache, output_attentions=output_attentions)  # fmt: skip
            for collected, weight in zip((self_weights, text_weights, image_weights), weights):
                collected.append(weight)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        as_tuple = lambda values: tuple(values) if output_attentions else None  # noqa: E731
        return (hidden_states, tuple(all_hidden) if output_hidden_states else None, as_tuple(self_weights),
                as_tuple(text_weights), as_tuple(image_weights))  # fmt: skip


def _decoder_self_attention_mask(decoder_attention_mask, query_length: int, past_length: int, dtype, device):
    """Additive `(batch or 1, 1, query_length, past_length + query_length)` mask: causal, and padding from
    `decoder_attention_mask` (`(batch_size, past_length + query_length)`; the last `query_length` columns are the
    current tokens)."""
    total = past_length + query_length
    query_positions = torch.arange(past_length, total, device=device)[:, None]
    allowed = (torch.arange(total, device=device)[None, :] <= query_positions)[None, None]
    if decoder_attention_mask is not None:
        allowed = allowed & decoder_attention_mask[:, None, None, :].to(device).bool()
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels, as T5 / BART do: `[start] + labels[:-1]`, with -100 (ignored) replaced by padding."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class MeterForConditionalGeneration(MeterPreTrainedModel, GenerationMixin):
    """Encoder-decoder METER (paper Sec. 3.1, Table 7): the fusion module (the encoder: towers + fusion layers) and
    a decoder whose layers attend to the fused text and, through a second cross-attention, to the fused image. It
    generates text: captions, answers (VQA as generation) and, for image-text matching, the binary answer after a
    class token (pre-training: T5-style span corruption of the text with
    [`~hf_vl.data.VisionLanguageSpanCorruptionCollator`]).

    `labels` `(batch_size, target_length)` are the target token ids (-100 = ignored); the decoder inputs are the labels
    shifted right after `config.decoder_start_token_id` unless `decoder_input_ids` are passed. The loss is the mean
    token cross-entropy. `generate()` works as for any transformers encoder-decoder model (the encoder runs once, the
    decoder caches self- and cross-attention keys/values in an `EncoderDecoderCache`).

    The decoder's token embeddings and output projection are tied to the text tower's word embeddings when
    `config.tie_decoder_embeddings` and the shapes match (same vocabulary, decoder width = text width).

    Example:

    ```python
    >>> import torch
    >>> from hf_vl import MeterConfig, MeterForConditionalGeneration
    >>> config = MeterConfig(num_fusion_layers=3, num_decoder_layers=3)  # the paper's 3 + 3
    >>> model = MeterForConditionalGeneration(config)
    >>> inputs = {"input_ids": torch.tensor([[0, 31414, 2]]), "pixel_values": torch.randn(1, 3, 288, 288)}
    >>> model.generate(**inputs, max_new_tokens=5).shape  # (1, 1 + 5) at most: decoder start token + new tokens
    ```
    """

    _no_split_modules = ["MeterCoAttentionLayer", "MeterMergedAttentionLayer", "MeterDecoderLayer"]
    # the encoder has no poolers (the decoder reads the fused token sequences); a METER checkpoint's are dropped
    _keys_to_ignore_on_load_unexpected = [r"cross_modal_(text|image)_pooler\."]

    def __init__(self, config: MeterConfig, text_model=None, vision_model=None):
        super().__init__(config)
        if config.num_decoder_layers < 1:
            raise ValueError(
                "MeterForConditionalGeneration needs a decoder: set `num_decoder_layers` >= 1 in MeterConfig (the "
                f"paper uses 3), got {config.num_decoder_layers}."
            )
        self.meter = MeterModel(config, text_model=text_model, vision_model=vision_model, add_pooling_layer=False)
        self.decoder = MeterDecoder(config)
        self.lm_head = nn.Linear(config.decoder_hidden_size, config.text_config.vocab_size)
        text_embeddings = self.meter.get_input_embeddings()
        self._text_embeddings_name = next(
            f"{name}.weight" for name, module in self.named_modules() if module is text_embeddings
        )
        # per instance: whether the tables can be shared depends on the config (vocabulary and widths)
        self._tied_weights_keys = (
            {"decoder.embed_tokens.weight": self._text_embeddings_name, "lm_head.weight": self._text_embeddings_name}
            if self.decoder_embeddings_tied() else {}
        )  # fmt: skip
        self.post_init()

    def decoder_embeddings_tied(self) -> bool:
        """Whether the decoder embeddings and `lm_head` share the text tower's word embeddings."""
        text_weight = self.meter.get_input_embeddings().weight
        return bool(self.config.tie_decoder_embeddings) and tuple(text_weight.shape) == tuple(
            self.decoder.embed_tokens.weight.shape
        )

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """transformers ties `_tied_weights_keys` only with `config.tie_word_embeddings` (METER's MLM head is untied);
        the decoder's tables follow `config.tie_decoder_embeddings` instead."""
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        if self.decoder_embeddings_tied():
            tied.update(self._tied_weights_keys)
        return tied

    def get_encoder(self, modality=None):
        return self.meter

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`; a batch's `labels` (which transformers' `Seq2SeqTrainer` passes along with the
        inputs when it evaluates with `predict_with_generate`) are dropped instead of reaching the encoder."""
        kwargs.pop("labels", None)
        return super().generate(*args, **kwargs)

    def get_decoder(self):
        return self.decoder

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Resizes the text tower's word embeddings (the encoder input), the decoder's token embeddings and `lm_head`
        together (new tokens such as span-corruption sentinels)."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        new_size = embeddings.weight.shape[0]
        if self.decoder.embed_tokens.weight.shape[0] != new_size:
            self.decoder.embed_tokens = self._get_resized_embeddings(
                self.decoder.embed_tokens, new_size, mean_resizing=mean_resizing
            )
        if self.lm_head.weight.shape[0] != new_size:
            self.lm_head = self._get_resized_lm_head(self.lm_head, new_size, mean_resizing=mean_resizing)
        self.config.text_config.vocab_size = new_size
        self.tie_weights()
        return embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        encoder_outputs: MeterModelOutput | tuple | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MeterSeq2SeqLMOutput:
        r"""
        Args:
            decoder_input_ids (`(batch_size, target_length)`, *optional*): decoder inputs; by default `labels` shifted
                right after `config.decoder_start_token_id`. With a `cache`, only the tokens not yet cached.
            decoder_attention_mask (`(batch_size, past_length + target_length)`, *optional*): 1 for real decoder
                tokens, 0 for padding; causal masking is always applied.
            encoder_outputs ([`MeterModelOutput`] or a tuple `(text_features, image_features, ...)`, *optional*): the
                fusion module's output (what `generate()` computes once); the encoder inputs are then not needed,
                except `attention_mask` (text padding) and `pixel_mask` (image padding) for the cross-attentions.
            cache (`EncoderDecoderCache`, *optional*): self- and cross-attention keys/values of earlier steps.
            labels (`(batch_size, target_length)`, *optional*): target token ids, -100 where ignored. The loss is
                their mean cross-entropy; given `num_items_in_batch` (the `Trainer` passes the target-token count of
                all gradient-accumulation steps), their summed cross-entropy divided by it.
            use_cache (`bool`, *optional*): return the (new or updated) cache; by default only when a `cache` is
                passed (`generate()` sets it). Off when `labels` are given.
            Other arguments as in [`MeterModel.forward`].
        """
        _reject_unknown_kwargs(self, kwargs)
        output_attentions = kwargs.get("output_attentions")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = kwargs.get("output_hidden_states")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        text_config = self.config.text_config
        if labels is not None:
            if labels.dim() != 2:
                raise ValueError(f"`labels` must be (batch_size, target_length), got shape {tuple(labels.shape)}.")
            use_cache = False
            if decoder_input_ids is None:
                if self.config.decoder_start_token_id is None:
                    raise ValueError("`labels` need `config.decoder_start_token_id` to build `decoder_input_ids`.")
                decoder_input_ids = shift_tokens_right(labels, text_config.pad_token_id or 0,
                                                       self.config.decoder_start_token_id)  # fmt: skip
        if decoder_input_ids is None:
            raise ValueError(
                "MeterForConditionalGeneration needs `decoder_input_ids` or `labels` (use `generate()` to produce text)."
            )
        if decoder_input_ids.dim() != 2 or decoder_input_ids.is_floating_point():
            raise ValueError(
                f"`decoder_input_ids` must be an integer tensor (batch_size, target_length), got shape "
                f"{tuple(decoder_input_ids.shape)} and dtype {decoder_input_ids.dtype}."
            )
        self._check_inputs(decoder_input_ids=decoder_input_ids, labels=labels)

        if encoder_outputs is None:
            encoder_outputs = self.meter(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                pixel_values=pixel_values, pixel_mask=pixel_mask, text_embeds=text_embeds, image_embeds=image_embeds,
                interpolate_pos_encoding=interpolate_pos_encoding, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )  # fmt: skip
        elif not isinstance(encoder_outputs, MeterModelOutput):
            if isinstance(encoder_outputs, dict):
                encoder_outputs = MeterModelOutput(**encoder_outputs)
            else:
                encoder_outputs = MeterModelOutput(*encoder_outputs)
        text_states, image_states = encoder_outputs.text_features, encoder_outputs.image_features
        batch_size = text_states.shape[0]
        if decoder_input_ids.shape[0] != batch_size:
            raise ValueError(
                f"`decoder_input_ids` has {decoder_input_ids.shape[0]} rows but the encoder batch has {batch_size}."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(text_states.shape[:2]):
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} must match the encoded text "
                f"{tuple(text_states.shape[:2])}."
            )

        if use_cache is None:  # a cache only when asked for (generate() asks) or handed one
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        past_length = cache.get_seq_length() if cache is not None else 0
        query_length = decoder_input_ids.shape[1]
        if past_length + query_length > self.config.max_decoder_position_embeddings:
            raise ValueError(
                f"The decoder sequence has {past_length + query_length} tokens but the decoder position table holds "
                f"{self.config.max_decoder_position_embeddings} (`max_decoder_position_embeddings`)."
            )
        if decoder_attention_mask is not None and decoder_attention_mask.shape[-1] != past_length + query_length:
            if past_length == 0 or decoder_attention_mask.shape[-1] != query_length:
                raise ValueError(
                    f"`decoder_attention_mask` must be (batch_size, past_length + target_length) = "
                    f"({batch_size}, {past_length + query_length}), got {tuple(decoder_attention_mask.shape)}."
                )
            decoder_attention_mask = None  # only the new tokens' mask: the cached ones were real tokens
        dtype = text_states.dtype
        position_ids = torch.arange(past_length, past_length + query_length, device=text_states.device)[None]
        self_mask = _decoder_self_attention_mask(decoder_attention_mask, query_length, past_length, dtype,
                                                 text_states.device)  # fmt: skip
        text_mask = None if attention_mask is None else _extended_attention_mask(attention_mask, dtype)
        image_mask = None
        if pixel_mask is not None:
            image_mask = _extended_attention_mask(self.meter._image_token_mask(pixel_mask, image_states), dtype)

        hidden_states, decoder_hidden, self_weights, text_weights, image_weights = self.decoder(
            decoder_input_ids.to(text_states.device), position_ids, self_mask, text_states, text_mask, image_states,
            image_mask, cache=cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )  # fmt: skip
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            # the Trainer passes `num_items_in_batch` (target tokens over the whole accumulated batch) and then leaves
            # the loss undivided: a token mean over all accumulation steps, as transformers' seq2seq losses give
            num_items_in_batch = kwargs.get("num_items_in_batch")
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.to(logits.device).reshape(-1),
                                   ignore_index=-100, reduction="mean" if num_items_in_batch is None else "sum")  # fmt: skip
            if num_items_in_batch is not None:
                if torch.is_tensor(num_items_in_batch):
                    num_items_in_batch = num_items_in_batch.to(loss.device)
                loss = loss / num_items_in_batch
        return MeterSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=cache if use_cache else None,
            decoder_hidden_states=decoder_hidden,
            decoder_attentions=self_weights,
            cross_attentions=text_weights,
            image_cross_attentions=image_weights,
            encoder_last_hidden_state=torch.cat([text_states, image_states], dim=1),
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )

    def validate_input_values(self, decoder_input_ids=None, labels=None, **inputs) -> None:
        super().validate_input_values(**inputs)
        vocab_size = self.config.text_config.vocab_size
        if decoder_input_ids is not None and decoder_input_ids.numel():
            low, high = int(decoder_input_ids.min()), int(decoder_input_ids.max())
            if low < 0 or high >= vocab_size:
                raise ValueError(f"`decoder_input_ids` must be in [0, {vocab_size}), got values in [{low}, {high}].")
        if labels is not None and labels.numel():
            valid = (labels == -100) | ((labels >= 0) & (labels < vocab_size))
            if not bool(valid.all()):
                raise ValueError(f"`labels` must be -100 or token ids in [0, {vocab_size}).")


__all__ = [
    "MeterPreTrainedModel",
    "MeterModel",
    "MeterForPreTraining",
    "MeterForQuestionAnswering",
    "MeterForImageTextClassification",
    "MeterForImagesAndTextClassification",
    "MeterForImageAndTextRetrieval",
    "MeterForConditionalGeneration",
    "MeterModelOutput",
    "MeterSeq2SeqLMOutput",
    "MeterForPreTrainingOutput",
    "MeterClassifierOutput",
]
