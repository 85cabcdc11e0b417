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

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

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
        text_hidden_states, image_hidden_states (`tuple` of `num_fusion_layers + 1` tensors): fusion inputs and every
            fusion layer's output, per stream (`output_hidden_states=True`).
        text_attentions, image_attentions (`tuple` of `(batch, heads, len, len)`): self-attention weights per
            co-attention layer (`output_attentions=True`, eager attention).
        text_cross_attentions, image_cross_attentions: cross-attention weights per co-attention layer
            (text->image is `(batch, heads, text_length, image_length)`).
        attentions (`tuple` of `(batch, heads, text_length + image_length, text_length + image_length)`): attention
            weights of the merged-attention layers (`fusion_type="merged_attention"` only).
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MeterForPreTrainingOutput(ModelOutput):
    """Outputs of [`MeterForPreTraining`].

    Args:
        loss: sum of the objectives that received labels. mlm_loss, itm_loss, mim_loss: each objective alone.
        mlm_logits (`(batch_size, text_length, vocab_size)`), itm_logits (`(batch_size, 2)`, index 1 = match),
        mim_logits (`(num_masked_patches, num_masked_patches)`): masked patch classification scores against every
            masked patch of the batch (in-batch negatives).
        pooler_output and the fusion hidden states / attentions as in [`MeterModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    mim_logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


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
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


_FUSION_OUTPUT_FIELDS = (
    "text_hidden_states",
    "image_hidden_states",
    "text_attentions",
    "image_attentions",
    "text_cross_attentions",
    "image_cross_attentions",
    "attentions",
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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MeterMLMHead):
            init.zeros_(module.bias)

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_model_name_or_path: str,
        vision_model_name_or_path,
        text_model_kwargs: dict | None = None,
        vision_model_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "MeterModel":
        """Builds METER from a pretrained text encoder and a pretrained vision encoder; fusion layers and heads are
        randomly initialised (the paper's recipe).

        Args:
            text_model_name_or_path: any transformers text encoder (RoBERTa, BERT, MiniLM ...).
            vision_model_name_or_path: a CLIP (vision or full), ViT or Swin checkpoint; a `PreTrainedConfig` or a
                config dict instead builds a randomly initialised vision tower.
            text_model_kwargs / vision_model_kwargs: passed to `from_pretrained` of the tower (e.g.
                `{"num_hidden_layers": 3}` keeps the first 3 layers).
            config_kwargs: [`MeterConfig`] fields (e.g. `hidden_size=384, num_fusion_layers=2, num_labels=13`).

        Called on a head class (`MeterForQuestionAnswering.from_text_vision_pretrained(...)`) it returns that head.

        Example:

        ```python
        >>> model = MeterForQuestionAnswering.from_text_vision_pretrained("roberta-base", "openai/clip-vit-base-patch16")
        ```
        """
        text_model_kwargs = dict(text_model_kwargs or {})
        text_config = AutoConfig.from_pretrained(text_model_name_or_path, **text_model_kwargs)
        text_model = AutoModel.from_pretrained(
            text_model_name_or_path, config=text_config, **_text_encoder_kwargs(text_config)
        )
        vision_model = None
        if isinstance(vision_model_name_or_path, (dict, PreTrainedConfig)):
            vision_config = vision_model_name_or_path
            vision_config = vision_config.to_dict() if isinstance(vision_config, PreTrainedConfig) else vision_config
        else:
            loaded = AutoConfig.from_pretrained(vision_model_name_or_path, **(vision_model_kwargs or {}))
            loaded = getattr(loaded, "vision_config", loaded)  # CLIPConfig -> CLIPVisionConfig
            vision_model = AutoModel.from_pretrained(
                vision_model_name_or_path, config=loaded, **_vision_encoder_kwargs(loaded)
            )
            vision_config = loaded.to_dict()
        config = MeterConfig(text_config=text_config.to_dict(), vision_config=vision_config, **config_kwargs)
        model = cls(config)
        base = model.base_model
        base.text_model.load_state_dict(text_model.state_dict())
        if vision_model is not None:
            base.vision_model.load_state_dict(vision_model.state_dict())
        return model

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


def _extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> additive (B, 1, 1, L) mask for every query."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MeterModel(MeterPreTrainedModel):
    """METER: vision tower + text tower + fusion layers, returning the fused features and `cat(text, image)` pools.

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

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.text_model = _text_encoder_from_config(config.text_config)
        self.vision_model = AutoModel.from_config(config.vision_config, **_vision_encoder_kwargs(config.vision_config))

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
        self.cross_modal_text_pooler = MeterPooler(config)
        self.cross_modal_image_pooler = MeterPooler(config)
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
        resolution than pre-training, e.g. 288 -> 576); bicubic, [CLS] row kept. No-op for Swin (relative bias)."""
        embeddings = getattr(self.vision_model, "embeddings", None)
        position_embedding = getattr(embeddings, "position_embedding", None)
        if position_embedding is None and getattr(embeddings, "position_embeddings", None) is None:
            return
        patch_size = self.config.vision_config.patch_size
        new_grid = image_size // patch_size
        if isinstance(position_embedding, nn.Embedding):  # CLIP
            table = position_embedding.weight.data[None]
        else:  # ViT: nn.Parameter (1, 1 + N, D)
            table = embeddings.position_embeddings.data
        cls_row, grid_rows = table[:, :1], table[:, 1:]
        old_grid = int(grid_rows.shape[1] ** 0.5)
        grid = grid_rows.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        new_table = torch.cat([cls_row, grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1)
        if isinstance(position_embedding, nn.Embedding):
            new_embedding = nn.Embedding(new_table.shape[1], new_table.shape[2]).to(table.device, table.dtype)
            new_embedding.weight.data.copy_(new_table[0])
            embeddings.position_embedding = new_embedding
            embeddings.num_patches = new_grid * new_grid
            embeddings.num_positions = new_table.shape[1]
            embeddings.register_buffer("position_ids", torch.arange(embeddings.num_positions)[None], persistent=False)
        else:
            embeddings.position_embeddings = nn.Parameter(new_table)
        embeddings.image_size = image_size
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
        """Last hidden state of the text tower, `(batch_size, text_length, text_config.hidden_size)`."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.text_model(**kwargs).last_hidden_state

    def get_image_encoder_hidden_states(self, pixel_values, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        """Vision tower tokens as METER uses them, `(batch_size, image_length, vision_config.hidden_size)`: CLIP's
        final LayerNorm is applied to every token (not only [CLS]); ViT and Swin already end with a LayerNorm."""
        vision_type = self.config.vision_config.model_type
        kwargs = {}
        if vision_type in ("clip_vision_model", "vit"):
            image_size = self.config.vision_config.image_size
            if interpolate_pos_encoding is None:
                interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != (image_size, image_size)
            kwargs["interpolate_pos_encoding"] = interpolate_pos_encoding
        hidden_states = self.vision_model(pixel_values=pixel_values, **kwargs).last_hidden_state
        if vision_type == "clip_vision_model":
            hidden_states = self.vision_model.post_layernorm(hidden_states)
        if hidden_states.dim() == 4:  # convolutional towers (ResNet, ConvNeXt): (B, C, H, W) -> (B, H * W, C) tokens
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        return hidden_states

    # --- forward ------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        image_token_type_idx: int = 1,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MeterModelOutput | tuple:
        r"""
        Args:
            input_ids (`(batch_size, text_length)`): token ids of the text tower's tokenizer (see [`MeterProcessor`]).
            attention_mask (`(batch_size, text_length)`): 1 for real tokens, 0 for padding.
            token_type_ids (`(batch_size, text_length)`, *optional*): passed to the text tower (BERT).
            pixel_values (`(batch_size, 3, height, width)`): normalised images (see [`MeterImageProcessor`]).
            pixel_mask (`(batch_size, height, width)`, *optional*): 1 for real pixels when images were padded; image
                tokens covering only padding are masked in the fusion layers.
            image_token_type_idx (`int`, defaults to 1): modality-table row of the image (2 for NLVR2's second image).
            interpolate_pos_encoding (`bool`, *optional*): interpolate the vision position table; by default on when
                the image size differs from `vision_config.image_size`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._validate_inputs(input_ids, attention_mask, pixel_values, pixel_mask, image_token_type_idx)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        text_tower = self.get_text_encoder_hidden_states(input_ids, attention_mask, token_type_ids)
        image_tower = self.get_image_encoder_hidden_states(pixel_values, interpolate_pos_encoding)
        image_mask = self._image_token_mask(pixel_mask, image_tower)

        # METER adds the modality embedding after the projections (text: row 0, image: `image_token_type_idx`).
        text_embeds = self.cross_modal_text_transform(text_tower) + self.token_type_embeddings(
            torch.zeros_like(attention_mask)
        )
        image_embeds = self.cross_modal_image_transform(image_tower) + self.token_type_embeddings(
            torch.full_like(image_mask, image_token_type_idx)
        )

        if self.config.fusion_type == "co_attention":
            fused = self._co_attention(
                text_embeds, image_embeds, attention_mask, image_mask, output_attentions, output_hidden_states
            )
        else:
            fused = self._merged_attention(
                text_embeds, image_embeds, attention_mask, image_mask, output_attentions, output_hidden_states
            )
        text_features, image_features = fused.pop("text_features"), fused.pop("image_features")

        if self.config.image_pooling == "cls":
            image_summary = image_features[:, 0]
        else:  # Swin: average over the (unpadded) image tokens
            weights = image_mask.to(image_features.dtype).unsqueeze(-1)
            image_summary = (image_features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooler_output = torch.cat(
            [self.cross_modal_text_pooler(text_features[:, 0]), self.cross_modal_image_pooler(image_summary)], dim=-1
        )
        output = MeterModelOutput(
            text_features=text_features, image_features=image_features, pooler_output=pooler_output, **fused
        )
        return output if return_dict else output.to_tuple()

    def _co_attention(self, text, image, text_mask, image_mask, output_attentions, output_hidden_states) -> dict:
        ext_text_mask = _extended_attention_mask(text_mask, text.dtype)
        ext_image_mask = _extended_attention_mask(image_mask, image.dtype)
        collect = {name: [] for name in _FUSION_OUTPUT_FIELDS if name != "attentions"}
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
        if output_hidden_states:
            collect["text_hidden_states"].append(text)
            collect["image_hidden_states"].append(image)
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
            "text_hidden_states": tuple(h[:, :text_length] for h in all_hidden) if output_hidden_states else None,
            "image_hidden_states": tuple(h[:, text_length:] for h in all_hidden) if output_hidden_states else None,
            "attentions": tuple(all_attentions) if output_attentions else None,
        }

    def _image_token_mask(self, pixel_mask, image_tower) -> torch.LongTensor:
        batch_size, num_tokens = image_tower.shape[:2]
        mask = torch.ones(batch_size, num_tokens, dtype=torch.long, device=image_tower.device)
        if pixel_mask is None:
            return mask
        has_cls = self.config.image_pooling == "cls"
        num_patches = num_tokens - int(has_cls)
        height, width = pixel_mask.shape[-2:]
        stride = (height * width / num_patches) ** 0.5
        grid = (round(height / stride), round(width / stride))
        patch_mask = F.adaptive_max_pool2d(pixel_mask[:, None].float(), grid).flatten(1).long()
        mask[:, int(has_cls) :] = patch_mask
        return mask

    def _validate_inputs(self, input_ids, attention_mask, pixel_values, pixel_mask, image_token_type_idx):
        if input_ids is None:
            raise ValueError("METER needs text: `input_ids` is None (tokenise the text with MeterProcessor).")
        if pixel_values is None:
            raise ValueError("METER needs an image: `pixel_values` is None (process the image with MeterProcessor).")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch_size, text_length), got shape {tuple(input_ids.shape)}.")
        if input_ids.shape[1] == 0:
            raise ValueError("`input_ids` is empty (text_length 0): every example needs at least one token.")
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"`attention_mask` shape {tuple(attention_mask.shape)} must equal `input_ids` shape "
                    f"{tuple(input_ids.shape)}."
                )
            if not bool((attention_mask.sum(-1) > 0).all()):
                raise ValueError("`attention_mask` has a row of zeros: empty text is not allowed.")
        num_channels = getattr(self.config.vision_config, "num_channels", 3)
        if pixel_values.dim() != 4 or pixel_values.shape[1] != num_channels:
            raise ValueError(
                f"`pixel_values` must be (batch_size, {num_channels}, height, width), got shape "
                f"{tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Text and image batch sizes differ: `input_ids` has {input_ids.shape[0]} rows, `pixel_values` has "
                f"{pixel_values.shape[0]}."
            )
        if not pixel_values.is_floating_point():
            raise TypeError(f"`pixel_values` must be a floating point tensor, got {pixel_values.dtype}.")
        if bool(torch.isnan(pixel_values).any()):
            raise ValueError("`pixel_values` contains NaN.")
        if pixel_mask is not None and pixel_mask.shape != (pixel_values.shape[0], *pixel_values.shape[-2:]):
            raise ValueError(
                f"`pixel_mask` must be (batch_size, height, width) = "
                f"{(pixel_values.shape[0], *pixel_values.shape[-2:])}, got {tuple(pixel_mask.shape)}."
            )
        if not 0 <= image_token_type_idx < self.config.modality_type_vocab_size:
            raise ValueError(
                f"`image_token_type_idx` must be in [0, {self.config.modality_type_vocab_size}), got "
                f"{image_token_type_idx} (NLVR2 needs `modality_type_vocab_size=3`)."
            )


def _text_encoder_kwargs(name_or_config) -> dict:
    config = name_or_config if not isinstance(name_or_config, str) else AutoConfig.from_pretrained(name_or_config)
    return {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}


def _text_encoder_from_config(text_config):
    return AutoModel.from_config(text_config, **_text_encoder_kwargs(text_config))


def _vision_encoder_kwargs(vision_config) -> dict:
    return {"add_pooling_layer": False} if vision_config.model_type in ("vit", "swin") else {}


# ----------------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------------


class MeterForPreTraining(MeterPreTrainedModel):
    """METER with its pre-training heads: masked language modelling (MLM), image-text matching (ITM) and, as an
    option, masked patch classification with in-batch negatives (MIM; paper Sec. 4.4).

    Losses are computed for the objectives whose labels are passed: `mlm_labels` (`-100` = ignore), `itm_labels`
    (1 = match) and `bool_masked_pos` (patches to mask for MIM). When `itm_labels` is given, the MLM loss only counts
    rows with `itm_labels == 1` (masked words of a mismatched caption cannot be predicted from the image).
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.meter = MeterModel(config)
        self.mlm_score = MeterMLMHead(config)
        self.itm_score = MeterITMHead(config)
        patch_dim = config.vision_config.num_channels * self.image_token_stride() ** 2
        self.mim_score = nn.Linear(config.hidden_size, patch_dim)
        self.post_init()

    def image_token_stride(self) -> int:
        """Pixels per image token side: the patch size (CLIP/ViT), patch size * 2^(stages-1) (Swin) or the stem
        stride 4 * 2^(stages-1) of convolutional towers (ResNet, ConvNeXt: stride-4 stem, one downsampling per
        later stage)."""
        vision = self.config.vision_config
        depths = getattr(vision, "depths", None)
        patch_size = getattr(vision, "patch_size", 4)
        stages_downsampling = len(depths) - 1 if depths else 0
        if vision.model_type == "resnet" and getattr(vision, "downsample_in_first_stage", False):
            stages_downsampling += 1
        return patch_size * 2**stages_downsampling

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        pixel_mask=None,
        mlm_labels=None,
        itm_labels=None,
        bool_masked_pos=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MeterForPreTrainingOutput | tuple:
        r"""
        Args:
            mlm_labels (`(batch_size, text_length)`): original ids at masked positions, -100 elsewhere.
            itm_labels (`(batch_size,)`): 1 when the text describes the image, 0 otherwise.
            bool_masked_pos (`(batch_size, num_image_patches)` bool): image patches (row-major, no [CLS]) to mask for
                masked patch classification; masked patches are zeroed in pixel space before the vision tower.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        stride = self.image_token_stride()
        target_patches = None
        if bool_masked_pos is not None:
            pixel_values, target_patches = self._mask_patches(pixel_values, bool_masked_pos, stride)

        outputs = self.meter(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        mlm_logits = self.mlm_score(outputs.text_features)
        itm_logits = self.itm_score(outputs.pooler_output)

        losses = {}
        if mlm_labels is not None:
            labels = mlm_labels.to(mlm_logits.device)
            if itm_labels is not None:
                labels = labels.masked_fill(itm_labels.to(labels.device)[:, None] == 0, -100)
            losses["mlm_loss"] = F.cross_entropy(
                mlm_logits.reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        if itm_labels is not None:
            losses["itm_loss"] = F.cross_entropy(itm_logits, itm_labels.to(itm_logits.device).long())
        mim_logits = None
        if bool_masked_pos is not None:
            image_tokens = outputs.image_features[:, 1:] if self.config.image_pooling == "cls" else outputs.image_features
            predictions = self.mim_score(image_tokens[bool_masked_pos])  # (M, C * s * s)
            # paper Sec. 4.4: classify each masked patch among all masked patches of the batch (in-batch negatives)
            mim_logits = predictions @ target_patches.t()  # (M, M)
            targets = torch.arange(mim_logits.shape[0], device=mim_logits.device)
            losses["mim_loss"] = F.cross_entropy(mim_logits, targets)

        loss = sum(losses.values()) if losses else None
        output = MeterForPreTrainingOutput(
            loss=loss,
            mlm_loss=losses.get("mlm_loss"),
            itm_loss=losses.get("itm_loss"),
            mim_loss=losses.get("mim_loss"),
            mlm_logits=mlm_logits,
            itm_logits=itm_logits,
            mim_logits=mim_logits,
            pooler_output=outputs.pooler_output,
            **_fusion_outputs(outputs),
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _mask_patches(pixel_values, bool_masked_pos, stride):
        """Zeroes the masked patches (the mean colour after normalisation) and returns the original patches."""
        if pixel_values is None:
            raise ValueError("`bool_masked_pos` was given without `pixel_values`.")
        batch_size, channels, height, width = pixel_values.shape
        grid_h, grid_w = height // stride, width // stride
        if bool_masked_pos.shape != (batch_size, grid_h * grid_w):
            raise ValueError(
                f"`bool_masked_pos` must be (batch_size, num_patches) = {(batch_size, grid_h * grid_w)}, got "
                f"{tuple(bool_masked_pos.shape)}."
            )
        if not bool(bool_masked_pos.any()):
            raise ValueError("`bool_masked_pos` masks no patch.")
        patches = F.unfold(pixel_values, kernel_size=stride, stride=stride).transpose(1, 2)  # (B, N, C * s * s)
        target_patches = patches[bool_masked_pos.bool()]
        keep = (~bool_masked_pos.bool()).to(pixel_values.dtype).reshape(batch_size, 1, grid_h, grid_w)
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

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.meter = MeterModel(config)
        self.classifier = _classifier(config, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        pixel_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MeterClassifierOutput | tuple:
        r"""
        Args:
            labels (`(batch_size, num_labels)` float): soft VQA scores of every answer.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.meter(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        output = MeterClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_fusion_outputs(outputs)
        )
        return output if return_dict else output.to_tuple()


class MeterForImageTextClassification(MeterPreTrainedModel):
    """METER for single-label classification of an (image, text) pair, e.g. SNLI-VE visual entailment
    (`num_labels=3`: entailment / neutral / contradiction). `labels`: `(batch_size,)` class ids, cross-entropy loss."""

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.meter = MeterModel(config)
        self.classifier = _classifier(config, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        pixel_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MeterClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.meter(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = _single_label_loss(logits, labels)
        output = MeterClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_fusion_outputs(outputs)
        )
        return output if return_dict else output.to_tuple()


def _single_label_loss(logits, labels):
    if labels is None:
        return None
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"`labels` must be (batch_size,) = ({logits.shape[0]},), got {tuple(labels.shape)}.")
    return F.cross_entropy(logits, labels.to(logits.device).long())


class MeterForImagesAndTextClassification(MeterPreTrainedModel):
    """METER for NLVR2: one statement about two images. Each image is fused with the text separately (the second
    one with modality type 2, so `config.modality_type_vocab_size` must be 3); the two pooled outputs are concatenated
    and classified (`num_labels=2`).

    `pixel_values`: `(batch_size, 2, 3, height, width)` (the [`MeterProcessor`] output for pairs of images).
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig):
        if config.modality_type_vocab_size < 3:
            raise ValueError(
                "MeterForImagesAndTextClassification needs `modality_type_vocab_size=3` (one row per image plus text), "
                f"got {config.modality_type_vocab_size}; call `model.meter.resize_modality_type_embeddings(3)` on a "
                "loaded base model or set it in the config."
            )
        super().__init__(config)
        self.meter = MeterModel(config)
        self.classifier = _classifier(config, 4 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        pixel_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MeterClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values is None or pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"`pixel_values` must be (batch_size, 2, 3, height, width) for NLVR2, got {shape}.")
        per_image = []
        for image_index in range(2):
            per_image.append(
                self.meter(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    pixel_values=pixel_values[:, image_index],
                    pixel_mask=None if pixel_mask is None else pixel_mask[:, image_index],
                    image_token_type_idx=image_index + 1,
                    output_attentions=output_attentions,
                    output_hidden_states=output_hidden_states,
                    return_dict=True,
                )
            )
        pooled = torch.cat([o.pooler_output for o in per_image], dim=-1)  # (B, 4 * hidden)
        logits = self.classifier(pooled)
        loss = _single_label_loss(logits, labels)
        stacked = {}
        for name in _FUSION_OUTPUT_FIELDS:
            first, second = getattr(per_image[0], name), getattr(per_image[1], name)
            stacked[name] = None if first is None else tuple(torch.stack(pair, dim=1) for pair in zip(first, second))
        output = MeterClassifierOutput(loss=loss, logits=logits, pooler_output=pooled, **stacked)
        return output if return_dict else output.to_tuple()


class MeterForImageAndTextRetrieval(MeterPreTrainedModel):
    """METER for image-text retrieval: a matching score per (image, text) pair (`rank_output`, initialised from the
    ITM head's "match" row when converted from a pre-trained checkpoint, as METER does).

    Two ways to train:
    - pairs: `input_ids (B, L)`, `pixel_values (B, 3, H, W)`, `labels (B,)` 1/0 -> binary cross-entropy;
    - ranking (METER's IRTR): `input_ids (B, K, L)` = K candidate texts per image, `labels (B,)` = index of the true
      text -> cross-entropy over the K scores. `logits` are then `(B, K)`.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: MeterConfig):
        super().__init__(config)
        self.meter = MeterModel(config)
        self.rank_output = nn.Linear(2 * config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        pixel_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MeterClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        num_candidates = None
        if input_ids is not None and input_ids.dim() == 3:
            batch_size, num_candidates, text_length = input_ids.shape
            if pixel_values is None or pixel_values.shape[0] != batch_size:
                raise ValueError(
                    f"Ranking mode: `pixel_values` must have batch_size {batch_size} like `input_ids`, got "
                    f"{None if pixel_values is None else tuple(pixel_values.shape)}."
                )
            input_ids = input_ids.reshape(batch_size * num_candidates, text_length)
            if attention_mask is not None:
                attention_mask = attention_mask.reshape(batch_size * num_candidates, text_length)
            if token_type_ids is not None:
                token_type_ids = token_type_ids.reshape(batch_size * num_candidates, text_length)
            pixel_values = pixel_values.repeat_interleave(num_candidates, dim=0)
            if pixel_mask is not None:
                pixel_mask = pixel_mask.repeat_interleave(num_candidates, dim=0)
        outputs = self.meter(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
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
        output = MeterClassifierOutput(
            loss=loss, logits=logits, pooler_output=outputs.pooler_output, **_fusion_outputs(outputs)
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "MeterPreTrainedModel",
    "MeterModel",
    "MeterForPreTraining",
    "MeterForQuestionAnswering",
    "MeterForImageTextClassification",
    "MeterForImagesAndTextClassification",
    "MeterForImageAndTextRetrieval",
    "MeterModelOutput",
    "MeterForPreTrainingOutput",
    "MeterClassifierOutput",
]
