"""METER configuration.

METER (Dou et al., "An Empirical Study of Training End-to-End Vision-and-Language Transformers", CVPR 2022,
https://arxiv.org/abs/2111.02387, code: https://github.com/zdou0830/METER) joins a pretrained vision encoder
and a pretrained text encoder with a stack of fusion layers.
"""

import copy
from typing import Literal

from transformers import AutoConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


# Vision towers whose first output token is a [CLS] token; every other tower (Swin, SigLIP, convolutional towers) is
# mean-pooled, as METER does with Swin. The number of prefix tokens per tower lives in modeling_meter.
_CLS_TOKEN_VISION_TYPES = ("clip_vision_model", "vit", "deit", "beit", "dinov2")

METER_DEFAULT_NUM_VQA_LABELS = 3129


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}{why}, got {value!r}.")


def _check_float(name: str, value, low: float, high: float | None, low_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    # written so that NaN fails every comparison
    if not (number and value >= low and (value > low or not low_open) and (high is None or value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


class MeterConfig(PreTrainedConfig):
    r"""Configuration of a [`MeterModel`]; the defaults reproduce METER-CLIP16-RoBERTa (base).

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the text encoder, any `transformers` text encoder (RoBERTa-base by default, BERT works too).
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the vision encoder: CLIP vision (default: ViT-B/16 at 288 px with 11 of CLIP's 12 blocks,
            as METER keeps all but the last CLIP block), Swin or ViT; convolutional towers (ResNet, ConvNeXt) also work:
            their last feature map becomes the image tokens (mean-pooled).
        hidden_size (`int`, defaults to 768): width of the fusion layers.
        num_attention_heads (`int`, defaults to 12): heads of every fusion attention.
        intermediate_size (`int`, defaults to 3072): feed-forward width of the fusion layers.
        num_fusion_layers (`int`, defaults to 6): co-attention layers per stream (M=6 in the paper); for
            `fusion_type="merged_attention"` the number of single-stream layers (the paper uses 12).
        fusion_type (`str`, defaults to `"co_attention"`): `"co_attention"` (two streams, each layer: self-attention,
            cross-attention to the other stream, FFN; both streams updated in parallel) or `"merged_attention"`
            (concatenated streams through single-stream BERT layers).
        hidden_act (`str`, defaults to `"gelu"`): activation of the fusion FFNs and heads.
        hidden_dropout_prob (`float`, defaults to 0.1), attention_probs_dropout_prob (`float`, defaults to 0.1).
        layer_norm_eps (`float`, defaults to 1e-12): LayerNorm eps of the fusion layers and MLM head.
        classifier_layer_norm_eps (`float`, defaults to 1e-5): LayerNorm eps inside the task heads.
        modality_type_vocab_size (`int`, defaults to 2): rows of the token-type (modality) table: 0 = text, 1 = image;
            NLVR2 uses 3 (the second image gets type 2).
        image_pooling (`str`, *optional*): `"cls"` or `"mean"`; by default `"cls"` for towers with a [CLS] token
            (CLIP, ViT) and `"mean"` otherwise (Swin), as in METER.
        initializer_range (`float`, defaults to 0.02): std of the normal init of new weights.
        mim_mask_probability (`float`, defaults to 0.15): share of image patches masked by the masked patch
            classification objective of [`MeterForPreTraining`] (used when `mim_labels` is not given).
        mim_codebook_size (`int`, defaults to 8192): size of the visual-token codebook of masked patch
            classification with discrete codes (paper Sec. 3.2; DALL-E's dVAE has 8,192 codes): the classes of
            [`MeterForPreTraining`]'s `mim_discrete_labels` head.
        num_decoder_layers (`int`, defaults to 0): decoder layers of the encoder-decoder variant (paper Sec. 3.1,
            Table 7: 3 fusion layers + 3 decoder layers); 0 = encoder-only METER. [`MeterForConditionalGeneration`]
            needs at least 1. Each decoder layer: causal self-attention, cross-attention over the fused text, a second
            cross-attention over the fused image, feed-forward (post-LN, as the fusion layers).
        decoder_hidden_size (`int`, *optional*), decoder_num_attention_heads (`int`, *optional*),
            decoder_intermediate_size (`int`, *optional*): the decoder's width, heads and FFN width; default to the
            fusion's (`hidden_size`, `num_attention_heads`, `intermediate_size`).
        max_decoder_position_embeddings (`int`, defaults to 64): rows of the decoder's learned position table (the
            longest caption / answer / span target the decoder reads).
        tie_decoder_embeddings (`bool`, defaults to `True`): tie the decoder's token embeddings and output projection
            to the text tower's word embeddings when their shapes match (same vocabulary and width).
        decoder_start_token_id (`int`, *optional*): first decoder input; defaults to the text tower's
            `bos_token_id` (RoBERTa `<s>`), else its `cls_token_id` / `pad_token_id`.
        pad_token_id (`int`, *optional*), eos_token_id (`int`, *optional*): the decoder's padding and end tokens
            (generation stops at `eos_token_id`); default to the text tower's (`eos_token_id`, else `sep_token_id`).
            A BERT config names no end token: pass the tokenizer's `sep_token_id`.
        check_input_values (`bool`, defaults to `True`): run the value checks of
            [`~MeterPreTrainedModel.validate_input_values`] (token ids in the vocabulary, 0/1 masks, finite pixels,
            labels in range) in eager `forward` calls. They read tensor values (a device sync), are never traced by
            `torch.compile`, and can be switched off for throughput once inputs are known to be valid.
        num_labels (`int`, defaults to 3129): answers of the VQA head (VQAv2's 3,129); set 2 for NLVR2, 3 for SNLI-VE.

    Example:

    ```python
    >>> from hf_vl import MeterConfig, MeterModel
    >>> config = MeterConfig()
    >>> model = MeterModel(config)  # METER-CLIP16-RoBERTa, randomly initialised
    ```
    """

    model_type = "meter"
    # generic tooling (transformers' ConfigTester, output capturing) reads `num_hidden_layers`: the fusion depth
    attribute_map = {"num_hidden_layers": "num_fusion_layers"}
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta"),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_attention_heads": 12,
                "num_hidden_layers": 11,
                "patch_size": 16,
                "image_size": 288,
            },
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_fusion_layers: int = 6
    fusion_type: Literal["co_attention", "merged_attention"] = "co_attention"
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    classifier_layer_norm_eps: float = 1e-5
    modality_type_vocab_size: int = 2
    image_pooling: Literal["cls", "mean"] | None = None
    initializer_range: float = 0.02
    mim_mask_probability: float = 0.15
    mim_codebook_size: int = 8192
    num_decoder_layers: int = 0
    decoder_hidden_size: int | None = None
    decoder_num_attention_heads: int | None = None
    decoder_intermediate_size: int | None = None
    max_decoder_position_embeddings: int = 64
    tie_decoder_embeddings: bool = True
    decoder_start_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    check_input_values: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
        ):
            raise ValueError(f"`num_labels` must be a positive int (the classes of the task head), got {num_labels!r}.")
        if self.id2label is None and num_labels is None:
            kwargs["num_labels"] = METER_DEFAULT_NUM_VQA_LABELS
        for name in ("text_config", "vision_config"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (dict, PreTrainedConfig)):
                raise TypeError(
                    f"`{name}` must be a dict or a PreTrainedConfig (e.g. `AutoConfig.for_model(...)`), got "
                    f"{type(value).__name__} {value!r}."
                )
        super().__post_init__(**kwargs)
        if self.image_pooling is None:
            vision_type = getattr(self.vision_config, "model_type", "")
            self.image_pooling = "cls" if vision_type in _CLS_TOKEN_VISION_TYPES else "mean"
        for name, fusion_name in (("decoder_hidden_size", "hidden_size"), ("decoder_intermediate_size",
                                  "intermediate_size"), ("decoder_num_attention_heads", "num_attention_heads")):
            if getattr(self, name) is None:
                setattr(self, name, getattr(self, fusion_name))
        # generation treats a model as encoder-decoder through this flag (encoder_outputs, decoder_input_ids, cache)
        self.is_encoder_decoder = isinstance(self.num_decoder_layers, int) and self.num_decoder_layers > 0
        if self.is_encoder_decoder:  # the decoder's special tokens default to the text tower's
            text = self.text_config
            first = lambda *names: next((getattr(text, n) for n in names if getattr(text, n, None) is not None), None)  # noqa: E731
            if self.decoder_start_token_id is None:
                self.decoder_start_token_id = first("bos_token_id", "cls_token_id", "pad_token_id")
            if self.pad_token_id is None:
                self.pad_token_id = first("pad_token_id")
            if self.eos_token_id is None:
                self.eos_token_id = first("eos_token_id", "sep_token_id")
        self._validate_meter_fields()

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The text tower's config, except for the decoder end of the encoder-decoder variant
        (`decoder=True` with `num_decoder_layers > 0`): a copy of the text config with the decoder's depth, width and
        heads and `decoder_start_token_id`, which generation reads to size its caches and find its special tokens."""
        if decoder and not encoder and self.num_decoder_layers > 0:
            decoder_config = copy.deepcopy(self.text_config)
            decoder_config.num_hidden_layers = self.num_decoder_layers
            decoder_config.hidden_size = self.decoder_hidden_size
            decoder_config.num_attention_heads = self.decoder_num_attention_heads
            decoder_config.intermediate_size = self.decoder_intermediate_size
            decoder_config.is_decoder = True
            decoder_config.decoder_start_token_id = self.decoder_start_token_id
            decoder_config.pad_token_id, decoder_config.eos_token_id = self.pad_token_id, self.eos_token_id
            return decoder_config
        return super().get_text_config(decoder=decoder, encoder=encoder)

    def _validate_meter_fields(self):
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "num_fusion_layers"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("modality_type_vocab_size", self.modality_type_vocab_size, minimum=2, why=" (text and image)")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        _check_int("num_decoder_layers", self.num_decoder_layers, minimum=0)
        for name in ("decoder_hidden_size", "decoder_num_attention_heads", "decoder_intermediate_size",
                     "max_decoder_position_embeddings", "mim_codebook_size"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.num_decoder_layers > 0 and self.decoder_hidden_size % self.decoder_num_attention_heads != 0:
            raise ValueError(
                f"`decoder_hidden_size` ({self.decoder_hidden_size}) must be a multiple of "
                f"`decoder_num_attention_heads` ({self.decoder_num_attention_heads})."
            )
        if self.fusion_type not in ("co_attention", "merged_attention"):
            raise ValueError(
                f"`fusion_type` must be 'co_attention' or 'merged_attention', got {self.fusion_type!r}."
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(
                f"`hidden_act` must name a transformers activation (`transformers.activations.ACT2FN`: one of "
                f"{sorted(ACT2FN)}), got {self.hidden_act!r}."
            )
        if len(self.id2label) < 1:
            raise ValueError(f"`id2label` must name at least one class of the task head, got {self.id2label!r}.")
        if self.image_pooling not in ("cls", "mean"):
            raise ValueError(f"`image_pooling` must be 'cls' or 'mean', got {self.image_pooling!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "mim_mask_probability"):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        for name in ("layer_norm_eps", "classifier_layer_norm_eps"):
            _check_float(name, getattr(self, name), 0.0, None, low_open=True)
        _check_float("initializer_range", self.initializer_range, 0.0, None)
        if not hasattr(self.vision_config, "hidden_size") and hasattr(self.vision_config, "hidden_sizes"):
            self.vision_config.hidden_size = self.vision_config.hidden_sizes[-1]  # convolutional towers
        for name in ("text_config", "vision_config"):
            if not hasattr(getattr(self, name), "hidden_size"):
                raise ValueError(f"`{name}` must describe an encoder with a `hidden_size`, got {getattr(self, name)!r}.")


__all__ = ["MeterConfig"]
