"""VLMo configuration.

VLMo (Bao et al., "VLMo: Unified Vision-Language Pre-Training with Mixture-of-Modality-Experts", NeurIPS 2022,
https://arxiv.org/abs/2111.02358, code (MIT): https://github.com/microsoft/unilm/tree/master/vlmo) is one Multiway
Transformer: every block shares its self-attention across modalities and routes each token to a modality expert
FFN (V-FFN for image tokens, L-FFN for text tokens, VL-FFN in the top layers of the fusion encoder).

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

import math

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


VLMO_DEFAULT_NUM_VQA_LABELS = 3129


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}{why}, got {value!r}.")


def _check_float(name: str, value, low: float, high: float | None, low_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    # written so that NaN fails every comparison
    if not (number and value >= low and (value > low or not low_open) and (high is None or value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


class VlmoConfig(PreTrainedConfig):
    r"""Configuration of a [`VlmoModel`]; the defaults reproduce VLMo-Base (`vlmo_base_patch16` of the original code).

    Presets: [`VlmoConfig.base`], [`VlmoConfig.large`] (VLMo-Large) and [`VlmoConfig.base_plus`] (VLMo-Base-Plus).

    Args:
        vocab_size (`int`, defaults to 30522): text vocabulary (BERT uncased WordPiece).
        hidden_size (`int`, defaults to 768): width of the Multiway Transformer.
        num_hidden_layers (`int`, defaults to 12): Multiway Transformer blocks.
        num_attention_heads (`int`, defaults to 12): heads of the shared self-attention.
        intermediate_size (`int`, defaults to 3072): hidden width of every expert FFN (mlp_ratio 4).
        hidden_act (`str`, defaults to `"gelu"`): expert FFN activation (exact erf GELU, as `nn.GELU`).
        vl_ffn_start_layer (`int`, defaults to 10): first block with a VL-FFN expert (`vlffn_start_layer_index`);
            blocks `vl_ffn_start_layer ... num_hidden_layers - 1` have one (VLMo-Base: the top 2).
        image_size (`int`, defaults to 224), patch_size (`int`, defaults to 16), num_channels (`int`, defaults to 3):
            square input images cut into `(image_size // patch_size) ** 2` patches plus an [I_CLS] token.
        max_text_len (`int`, defaults to 40): rows of the absolute text position table (used when
            `use_relative_position_bias=False`) and the processor's default `max_length`.
        max_relative_text_length (`int`, defaults to 196): `max_text_len_of_initckpt` of the original code: the text
            part of the relative position table holds `2 * max_relative_text_length` distances; with relative
            position bias a text may have up to this many tokens.
        use_relative_position_bias (`bool`, defaults to `True`): one relative position bias table shared by all blocks
            (one column block per layer) with separate image, text and image-text index layouts. When `False`
            (VLMo-Base-Plus) the text gets absolute position embeddings instead, as in the original.
        use_absolute_position_embeddings (`bool`, defaults to `False`): learnable absolute image positions
            (VLMo-Base-Plus).
        layer_scale_init_value (`float`, *optional*, defaults to 0.1): initial value of the layer scale vectors
            `gamma_1` / `gamma_2`; `None` disables layer scale (VLMo-Base-Plus).
        qkv_bias (`bool`, defaults to `True`): q and v biases of the fused qkv projection (k never has one).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and inside the FFNs (`drop_rate`).
        attention_probs_dropout_prob (`float`, defaults to 0.0): attention dropout (`attn_drop_rate`).
        drop_path_rate (`float`, defaults to 0.1): stochastic depth, linearly increasing over the blocks.
        embedding_dropout_prob (`float`, defaults to 0.1): dropout of the text embeddings (the original builds its
            `BertEmbeddings` with `hidden_dropout_prob=drop_path_rate`).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorms of the Multiway Transformer.
        text_layer_norm_eps (`float`, defaults to 1e-12): LayerNorm of the text embeddings and of the MLM head.
        classifier_layer_norm_eps (`float`, defaults to 1e-5): LayerNorm inside the VQA / NLVR2 classifiers and the
            image classification head.
        type_vocab_size (`int`, defaults to 2): BERT token types of the text embeddings (`token_type_ids`).
        modality_type_vocab_size (`int`, defaults to 2): rows of the modality table added to every token: 0 = text,
            1 = image; NLVR2 needs 3 (the second image uses row 2).
        pad_token_id (`int`, defaults to 0): [PAD] of the BERT vocabulary.
        initializer_range (`float`, defaults to 0.02): std of the normal init of new weights.
        logit_scale_init_value (`float`, defaults to log(1 / 0.07)): initial contrastive temperature (log space).
        mlm_loss_weight (`float`, defaults to 0.25): weight of the MLM loss in the pre-training total
            (`compute_mlm` of the original code returns `mlm_loss * 0.25`).
        check_input_values (`bool`, defaults to `True`): run [`~VlmoPreTrainedModel.validate_input_values`] (token ids
            in the vocabulary, 0/1 masks, finite pixels, labels in range) in eager `forward` calls; never traced by
            `torch.compile`.
        num_labels (`int`, defaults to 3129): answers of the VQA head; 2 for NLVR2, the classes of an image
            classification head.

    Example:

    ```python
    >>> from hf_vl import VlmoConfig, VlmoModel
    >>> model = VlmoModel(VlmoConfig())  # VLMo-Base, randomly initialised
    >>> large = VlmoConfig.large(num_labels=2)
    ```
    """

    model_type = "vlmo"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    vl_ffn_start_layer: int = 10
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    max_text_len: int = 40
    max_relative_text_length: int = 196
    use_relative_position_bias: bool = True
    use_absolute_position_embeddings: bool = False
    layer_scale_init_value: float | None = 0.1
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    embedding_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-6
    text_layer_norm_eps: float = 1e-12
    classifier_layer_norm_eps: float = 1e-5
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    logit_scale_init_value: float = math.log(1 / 0.07)
    mlm_loss_weight: float = 0.25
    check_input_values: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
        ):
            raise ValueError(f"`num_labels` must be a positive int (the classes of the task head), got {num_labels!r}.")
        if self.id2label is None and num_labels is None:
            kwargs["num_labels"] = VLMO_DEFAULT_NUM_VQA_LABELS
        super().__post_init__(**kwargs)
        self._validate_vlmo_fields()

    # --- presets ------------------------------------------------------------------------------------------------------

    @classmethod
    def base(cls, **kwargs) -> "VlmoConfig":
        """VLMo-Base (`vlmo_base_patch16`): 12 layers, 768 wide, 12 heads, VL-FFN in the top 2 layers."""
        return cls(**kwargs)

    @classmethod
    def large(cls, **kwargs) -> "VlmoConfig":
        """VLMo-Large (`vlmo_large_patch16`): 24 layers, 1024 wide, 16 heads, VL-FFN in the top 3 layers."""
        preset = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                      vl_ffn_start_layer=21)
        return cls(**{**preset, **kwargs})

    @classmethod
    def base_plus(cls, **kwargs) -> "VlmoConfig":
        """VLMo-Base-Plus (`vlmo_base_plus_patch16`): 24 layers, 544 wide, 16 heads, VL-FFN in the top 3 layers,
        absolute image and text positions instead of relative position bias, no layer scale."""
        preset = dict(hidden_size=544, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2176,
                      vl_ffn_start_layer=21, use_relative_position_bias=False, use_absolute_position_embeddings=True,
                      layer_scale_init_value=None)
        return cls(**{**preset, **kwargs})

    # --- derived sizes ------------------------------------------------------------------------------------------------

    @property
    def image_grid_size(self) -> int:
        """Patches per image side (the original's `window_size`)."""
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        """[I_CLS] + patches."""
        return self.image_grid_size**2 + 1

    @property
    def num_image_relative_distances(self) -> int:
        """Rows of the image part of the relative position table: `(2W - 1)^2` patch offsets + 3 [I_CLS] rows."""
        return (2 * self.image_grid_size - 1) ** 2 + 3

    @property
    def num_relative_distances(self) -> int:
        """Rows of the whole table: image rows, `2 * max_relative_text_length` text rows, 2 text<->image rows."""
        return self.num_image_relative_distances + 2 * self.max_relative_text_length + 2

    @property
    def max_text_length(self) -> int:
        """Longest text the model accepts (the text position table or the relative text distances)."""
        return self.max_relative_text_length if self.use_relative_position_bias else self.max_text_len

    # --- validation ---------------------------------------------------------------------------------------------------

    def _validate_vlmo_fields(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "image_size", "patch_size", "num_channels", "max_text_len", "max_relative_text_length"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("type_vocab_size", self.type_vocab_size, minimum=1)
        _check_int("modality_type_vocab_size", self.modality_type_vocab_size, minimum=2, why=" (text and image)")
        _check_int("vl_ffn_start_layer", self.vl_ffn_start_layer, minimum=0)
        if self.vl_ffn_start_layer > self.num_hidden_layers:
            raise ValueError(
                f"`vl_ffn_start_layer` ({self.vl_ffn_start_layer}) must be <= `num_hidden_layers` "
                f"({self.num_hidden_layers})."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"`image_size` ({self.image_size}) must be a multiple of `patch_size` ({self.patch_size})."
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` must name a transformers activation (ACT2FN), got {self.hidden_act!r}.")
        for name in ("use_relative_position_bias", "use_absolute_position_embeddings", "qkv_bias",
                     "check_input_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        if self.layer_scale_init_value is not None:
            _check_float("layer_scale_init_value", self.layer_scale_init_value, 0.0, None, low_open=True)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate",
                     "embedding_dropout_prob"):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        for name in ("layer_norm_eps", "text_layer_norm_eps", "classifier_layer_norm_eps"):
            _check_float(name, getattr(self, name), 0.0, None, low_open=True)
        _check_float("initializer_range", self.initializer_range, 0.0, None)
        _check_float("logit_scale_init_value", self.logit_scale_init_value, -100.0, 100.0)
        _check_float("mlm_loss_weight", self.mlm_loss_weight, 0.0, None)
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"`pad_token_id` must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}.")
        if len(self.id2label) < 1:
            raise ValueError(f"`id2label` must name at least one class of the task head, got {self.id2label!r}.")


__all__ = ["VlmoConfig"]
