"""Adaptive LXMERT configuration.

Adaptive LXMERT (Bhargava, "Adaptive Transformers for Learning Multimodal Representations", ACL SRW 2020,
https://arxiv.org/abs/2005.07486) is LXMERT (Tan & Bansal, 2019; airsplay/lxmert, MIT) whose attention can learn its
span (adaptive span, Sukhbaatar et al. 2019), its sparsity (alpha-entmax with a learnable alpha per head, Correia et
al. 2019) and be pruned in depth (LayerDrop, Fan et al. 2019). The released code (prajjwal1/adaptive_transformer) has
no licence: this is a re-implementation from the papers and from the behaviour of that code.

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _check_float(name: str, value, low: float, high: float | None, low_open: bool = False,
                 high_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    # written so that NaN fails every comparison
    ok = number and value >= low and (value > low or not low_open)
    ok = ok and (high is None or (value <= high and (value < high or not high_open)))
    if not ok:
        interval = (f"{'(' if low_open else '['}{low:g}, "
                    f"{'inf)' if high is None else f'{high:g}' + (')' if high_open else ']')}")
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


class AdaptiveLxmertConfig(PreTrainedConfig):
    r"""Configuration of an [`AdaptiveLxmertModel`]. The LXMERT fields and their defaults are those of
    `transformers.LxmertConfig` (LXMERT base: 9 language, 5 vision ("relationship"), 5 cross-modality layers, 2048-d
    region features, 4-d boxes), so `AdaptiveLxmertConfig(**LxmertConfig().to_dict())` describes the same network.
    The three adaptive mechanisms are off by default; with all three off the model is numerically LXMERT.

    Args:
        vocab_size (`int`, defaults to 30522), hidden_size (`int`, defaults to 768), num_attention_heads (`int`,
            defaults to 12), intermediate_size (`int`, defaults to 3072), hidden_act (`str`, defaults to `"gelu"`),
            hidden_dropout_prob (`float`, defaults to 0.1), attention_probs_dropout_prob (`float`, defaults to 0.1),
            max_position_embeddings (`int`, defaults to 512), type_vocab_size (`int`, defaults to 2),
            initializer_range (`float`, defaults to 0.02): as in BERT.
        l_layers (`int`, defaults to 9), r_layers (`int`, defaults to 5), x_layers (`int`, defaults to 5): language,
            vision and cross-modality layers.
        visual_feat_dim (`int`, defaults to 2048), visual_pos_dim (`int`, defaults to 4): region feature and box sizes.
        num_qa_labels (`int`, defaults to 9500): answers of the QA heads (LXMERT pre-training: 9500; VQA: 3129).
        num_object_labels (`int`, defaults to 1600), num_attr_labels (`int`, defaults to 400): masked object
            prediction classes. visual_loss_normalizer (`float`, defaults to 6.67): weight of each visual loss.
        task_matched, task_mask_lm, task_obj_predict, task_qa, visual_obj_loss, visual_attr_loss, visual_feat_loss
            (`bool`, default `True`): pre-training objectives of [`AdaptiveLxmertForPreTraining`].
        pad_token_id (`int`, defaults to 0): the tokenizer's padding id. As in LXMERT, row 0 of the word, position
            and token-type embeddings is the padding row whatever its value (`None` is accepted, as in `LxmertConfig`).
        tie_word_embeddings (`bool`, defaults to `True`): the masked-LM decoder shares the word embeddings.

        adaptive_span (`bool`, defaults to `False`): learn one attention span per head in every attention module
            (Sukhbaatar et al. 2019). The soft mask over a key at distance `x` is `clamp((R + z - x) / R, 0, 1)`;
            as in the released code the distance of key `j` among `K` keys is `K - 1 - j` (counted from the last key;
            see `adaptive_span_anchor`) and the span is `z = span * min(K, adaptive_span_max_span)` with `span` the
            learned fraction in [0, 1].
            The mask is applied to the attention probabilities, which are then renormalised (with softmax: an additive
            `log m` mask, so any attention backend runs it); keys the mask zeroes for every head are not computed at
            all (with entmax every score is still needed for its threshold: only the value product is cut).
        adaptive_span_anchor (`str`, defaults to `"last"`): where the span distance is counted from. `"last"` (the
            released code): key `j` of `K` is `K - 1 - j` from the last key, so a short span covers the last keys;
            `"first"`: `j` from the first key, so a short span covers the first keys ([CLS] and the words of
            right-padded text, the most confident regions of confidence-sorted detector outputs).
        adaptive_span_max_span (`int`, defaults to 1024): the largest span in keys (`attn_span` of the code).
        adaptive_span_ramp (`float`, defaults to 4): the ramp `R` of the soft mask, in keys.
        adaptive_span_init (`float`, defaults to 0.002): initial span fraction.
        adaptive_span_loss_coeff (`float`, defaults to 5e-6): the span penalty `coeff * max_span * mean(span)` summed
            over attention modules and added to the training loss of the heads.
        attention_entmax (`bool`, defaults to `False`): alpha-entmax instead of softmax in every attention (Correia et
            al. 2019).
        entmax_learn_alpha (`bool`, defaults to `True`): one learnable alpha per head and attention module, kept in
            [1.01, 2]. With `False`, alpha is fixed to `entmax_alpha_init` (1.5: exact entmax15; 2: sparsemax).
        entmax_alpha_init (`float`, defaults to 1.5): initial (or fixed) alpha, in (1, 2].
        entmax_bisect_iter (`int`, defaults to 2), entmax_newton_iter (`int`, defaults to 4): the alpha-entmax
            threshold is bracketed by bisection, then refined by Newton steps (which converge quadratically and
            monotonically from the lower bracket end: the threshold equation is convex); 6 passes instead of the 50
            bisection steps of `entmax.entmax_bisect`, same values to ~1e-6.
        language_layerdrop, vision_layerdrop, cross_layerdrop (`float`, default 0.0): LayerDrop rate of each stack
            (Fan et al. 2019): during training each layer is skipped with this probability.
        layerdrop_in_eval (`bool`, defaults to `False`): keep dropping layers in `eval()` (the released code does;
            by default evaluation is deterministic).
        check_input_values (`bool`, defaults to `True`): run [`~AdaptiveLxmertPreTrainedModel.validate_input_values`]
            in eager `forward` calls (never traced by `torch.compile`).

    Example:

    ```python
    >>> from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertModel
    >>> config = AdaptiveLxmertConfig(adaptive_span=True, attention_entmax=True, cross_layerdrop=0.2)
    >>> model = AdaptiveLxmertModel(config)
    ```
    """

    model_type = "adaptive_lxmert"
    attribute_map = {}

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    num_qa_labels: int = 9500
    num_object_labels: int = 1600
    num_attr_labels: int = 400
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    l_layers: int = 9
    x_layers: int = 5
    r_layers: int = 5
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    visual_loss_normalizer: float = 6.67
    task_matched: bool = True
    task_mask_lm: bool = True
    task_obj_predict: bool = True
    task_qa: bool = True
    visual_obj_loss: bool = True
    visual_attr_loss: bool = True
    visual_feat_loss: bool = True
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    adaptive_span: bool = False
    adaptive_span_anchor: str = "last"
    adaptive_span_max_span: int = 1024
    adaptive_span_ramp: float = 4.0
    adaptive_span_init: float = 0.002
    adaptive_span_loss_coeff: float = 5e-6
    attention_entmax: bool = False
    entmax_learn_alpha: bool = True
    entmax_alpha_init: float = 1.5
    entmax_bisect_iter: int = 2
    entmax_newton_iter: int = 4
    language_layerdrop: float = 0.0
    vision_layerdrop: float = 0.0
    cross_layerdrop: float = 0.0
    layerdrop_in_eval: bool = False
    check_input_values: bool = True

    def __post_init__(self, **kwargs):
        kwargs.pop("num_hidden_layers", None)  # LxmertConfig.to_dict() carries this derived dict
        kwargs.pop("model_type", None)  # a transformers LXMERT config.json loads as an adaptive_lxmert config
        super().__post_init__(**kwargs)
        if self.__dict__.get("model_type", type(self).model_type) != type(self).model_type:
            del self.__dict__["model_type"]
        self.num_hidden_layers = {"vision": self.r_layers, "cross_encoder": self.x_layers, "language": self.l_layers}
        self._validate_adaptive_lxmert_fields()

    @property
    def modifies_attention(self) -> bool:
        """Whether a mechanism changes the attention itself (span: an additive mask, any backend; entmax: eager)."""
        return bool(self.adaptive_span or self.attention_entmax)

    def _validate_adaptive_lxmert_fields(self):
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings",
                     "type_vocab_size", "visual_feat_dim", "visual_pos_dim", "num_qa_labels", "num_object_labels",
                     "num_attr_labels", "adaptive_span_max_span"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("l_layers", "x_layers", "r_layers", "entmax_bisect_iter", "entmax_newton_iter"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                             f"({self.num_attention_heads}).")
        if self.pad_token_id is not None:
            _check_int("pad_token_id", self.pad_token_id, minimum=0)
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(f"`pad_token_id` ({self.pad_token_id}) must be < `vocab_size` ({self.vocab_size}).")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` must name a transformers activation, got {self.hidden_act!r}.")
        for name in ("task_matched", "task_mask_lm", "task_obj_predict", "task_qa", "visual_obj_loss",
                     "visual_attr_loss", "visual_feat_loss", "adaptive_span", "attention_entmax",
                     "entmax_learn_alpha", "layerdrop_in_eval", "check_input_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "adaptive_span_init"):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        for name in ("language_layerdrop", "vision_layerdrop", "cross_layerdrop"):
            _check_float(name, getattr(self, name), 0.0, 1.0, high_open=True)
        for name in ("initializer_range", "visual_loss_normalizer", "adaptive_span_loss_coeff"):
            _check_float(name, getattr(self, name), 0.0, None)
        _check_float("adaptive_span_ramp", self.adaptive_span_ramp, 0.0, None, low_open=True)
        if self.adaptive_span_anchor not in ("last", "first"):
            raise ValueError(f"`adaptive_span_anchor` must be 'last' (distance from the last key, as the released "
                             f"code) or 'first', got {self.adaptive_span_anchor!r}.")
        _check_float("entmax_alpha_init", self.entmax_alpha_init, 1.0, 2.0, low_open=True)
        if self.entmax_learn_alpha and self.attention_entmax and self.entmax_alpha_init < 1.01:
            raise ValueError(f"`entmax_alpha_init` must be in [1.01, 2] for a learnable alpha, got "
                             f"{self.entmax_alpha_init!r}.")


__all__ = ["AdaptiveLxmertConfig"]
