"""Switch-BERT configuration.

Switch-BERT (Guo, Yao and Chu, "Switch-BERT: Learning to Model Multimodal Interactions by Switching Attention and
Input", ECCV 2022, https://arxiv.org/abs/2306.14182; no code was released) is a single-stream BERT over text tokens
and detector regions whose every layer picks, per sample, one of four attention modes (Switch-Attention Block, SAB)
and, from the second layer on, picks each modality's input from the previous or the one-before-previous layer
(Switch-Input Block, SIB).

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


SWITCH_BERT_DEFAULT_NUM_VQA_LABELS = 3129

#: the interaction modes of the paper's Table 1, as (text queries attend, image queries attend)
SWITCH_BERT_ATTENTION_MODES = {
    0: ("self", "self"),  # M0 self-self: no interaction (two streams side by side)
    1: ("self", "cross"),  # M1 self-cross: text attends text, image attends text
    2: ("cross", "self"),  # M2 cross-self: text attends image, image attends image
    3: ("joint", "joint"),  # M3 joint: every token attends every token (single-stream, UNITER)
}
SWITCH_BERT_MODE_NAMES = ("self-self", "self-cross", "cross-self", "joint")
SWITCH_BERT_ROUTING = ("auto", "soft", "hard")


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}{why}, got {value!r}.")


def _check_float(name: str, value, low: float, high: float | None, low_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    # written so that NaN fails every comparison
    if not (number and value >= low and (value > low or not low_open) and (high is None or value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


class SwitchBertConfig(PreTrainedConfig):
    r"""Configuration of a [`SwitchBertModel`]; the defaults give the paper's base model (BERT-base width and depth,
    12 Switch-BERT layers, the four attention modes, SAB and SIB on, top-K = 4).

    Args:
        vocab_size (`int`, defaults to 30522), hidden_size (`int`, defaults to 768), num_hidden_layers (`int`, defaults
            to 12), num_attention_heads (`int`, defaults to 12), intermediate_size (`int`, defaults to 3072),
            hidden_act (`str`, defaults to `"gelu"`), hidden_dropout_prob (`float`, defaults to 0.1),
            attention_probs_dropout_prob (`float`, defaults to 0.1), max_position_embeddings (`int`, defaults to
            512), type_vocab_size (`int`, defaults to 2), pad_token_id (`int`, defaults to 0), layer_norm_eps
            (`float`, defaults to 1e-12), initializer_range (`float`, defaults to 0.02): the BERT encoder (one set of
            weights for both modalities, as in UNITER).
        visual_feat_dim (`int`, defaults to 2048): region feature size (bottom-up attention Faster R-CNN).
        visual_pos_dim (`int`, defaults to 5): region location size, `x1, y1, x2, y2` normalised to [0, 1] (4) plus
            the area (5).
        region_token_type_id (`int`, defaults to 1): row of the (shared) token-type table added to every region
            (UNITER / VOLTA: 1).
        prepend_global_region (`bool`, defaults to `True`): prepend the [IMG] token, the global image region (mean of
            the unmasked region features, box `[0, 0, 1, 1(, 1)]`); the image pooler reads it. Set `False` when row 0
            of `visual_feats` already holds it (VOLTA's `add_global_imgfeat="first"` loaders).
        num_region_classes (`int`, defaults to 1601): detector classes of masked region classification (MRC-KL).
        pooler_size (`int`, defaults to 1024): output width of the text and image poolers (VOLTA's `pooler_size`).
        pooler_act (`str`, defaults to `"relu"`): pooler activation (VOLTA's `fusion_act`).
        qa_hidden_size (`int`, defaults to 1536): width of the first of the VQA head's two FC layers.
        classifier_dropout_prob (`float`, defaults to 0.1): dropout on the fused vector before the task heads.
        use_switch_attention (`bool`, defaults to `True`): the Switch-Attention Block (paper Sec. 2.3). When False
            every layer runs `fixed_attention_mode`.
        fixed_attention_mode (`int`, defaults to 3): the mode of every layer without SAB (3 = joint: with
            `use_switch_input=False` the model is a plain single-stream UNITER-like BERT).
        allowed_modes (`list[int]`, defaults to `[0, 1, 2, 3]`): the modes the switcher chooses from (ablations,
            e.g. `[0, 1, 2]` without joint attention). Mode ids: 0 self-self, 1 self-cross (text attends text, image
            attends text), 2 cross-self (text attends image, image attends image), 3 joint.
        switch_top_k (`int`, defaults to 4): the K of top-K routing (paper Table 7: 1, 2 or 4): in training only the K
            most probable modes (after Gumbel noise) are kept and their weights renormalised; K = 1 is a
            straight-through hard sample. Clamped to `len(allowed_modes)`.
        use_switch_input (`bool`, defaults to `True`): the Switch-Input Block: from the second layer on, each
            modality's input is chosen between the outputs of the two previous layers.
        switcher_hidden_size (`int`, defaults to 128): hidden width of every switcher's MLP (the paper gives no size;
            a narrow MLP keeps the 3 switchers per layer at ~1% of the parameters).
        switcher_act (`str`, defaults to `"relu"`): activation of the switchers' MLP.
        gumbel_temperature (`float`, defaults to 1.0): tau of the Gumbel-softmax (paper Eq. 7); annealed during
            training by `hf_vl.training.GumbelTemperatureCallback`.
        switch_routing (`str`, defaults to `"auto"`): `"auto"` = soft Gumbel-softmax weighting in training and hard
            argmax selection in eval (paper Eq. 8); `"soft"` / `"hard"` force one of them (without noise in eval).
        mrm_mask_probability (`float`, defaults to 0.15): regions masked for MRC-KL (read by the collator).
        mlm_loss_weight, mrm_loss_weight, itm_loss_weight (`float`, defaults to 1.0): weights of the pre-training
            objectives.
        check_input_values (`bool`, defaults to `True`): run [`~SwitchBertPreTrainedModel.validate_input_values`]
            in eager `forward` calls (never traced by `torch.compile`).
        tie_word_embeddings (`bool`, defaults to `True`): the MLM decoder shares the word embeddings.
        num_labels (`int`, defaults to 3129): answers of the VQA head.

    Example:

    ```python
    >>> from hf_vl import SwitchBertConfig, SwitchBertModel
    >>> model = SwitchBertModel(SwitchBertConfig(num_hidden_layers=2))  # randomly initialised
    >>> plain = SwitchBertConfig(use_switch_attention=False, use_switch_input=False)  # single-stream UNITER-like
    ```
    """

    model_type = "switch_bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 5
    region_token_type_id: int = 1
    prepend_global_region: bool = True
    num_region_classes: int = 1601
    pooler_size: int = 1024
    pooler_act: str = "relu"
    qa_hidden_size: int = 1536
    classifier_dropout_prob: float = 0.1
    use_switch_attention: bool = True
    fixed_attention_mode: int = 3
    allowed_modes: list[int] | tuple[int, ...] = (0, 1, 2, 3)
    switch_top_k: int = 4
    use_switch_input: bool = True
    switcher_hidden_size: int = 128
    switcher_act: str = "relu"
    gumbel_temperature: float = 1.0
    switch_routing: str = "auto"
    mrm_mask_probability: float = 0.15
    mlm_loss_weight: float = 1.0
    mrm_loss_weight: float = 1.0
    itm_loss_weight: float = 1.0
    check_input_values: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
        ):
            raise ValueError(f"`num_labels` must be a positive int (the classes of the task head), got {num_labels!r}.")
        if self.id2label is None and num_labels is None:
            kwargs["num_labels"] = SWITCH_BERT_DEFAULT_NUM_VQA_LABELS
        if isinstance(self.allowed_modes, tuple):
            self.allowed_modes = list(self.allowed_modes)
        super().__post_init__(**kwargs)
        self._validate_switch_bert_fields()

    def _validate_switch_bert_fields(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "visual_feat_dim", "num_region_classes",
                     "pooler_size", "qa_hidden_size", "switcher_hidden_size", "switch_top_k"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("pad_token_id", self.pad_token_id, minimum=0)
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"`pad_token_id` ({self.pad_token_id}) must be < `vocab_size` ({self.vocab_size}).")
        _check_int("region_token_type_id", self.region_token_type_id, minimum=0)
        if self.region_token_type_id >= self.type_vocab_size:
            raise ValueError(
                f"`region_token_type_id` ({self.region_token_type_id}) must be < `type_vocab_size` "
                f"({self.type_vocab_size})."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be a multiple of `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if isinstance(self.visual_pos_dim, bool) or self.visual_pos_dim not in (4, 5):
            raise ValueError(f"`visual_pos_dim` must be 4 (x1, y1, x2, y2) or 5 (+ area), got {self.visual_pos_dim!r}.")
        for name in ("hidden_act", "pooler_act", "switcher_act"):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in ACT2FN:
                raise ValueError(f"`{name}` must name a transformers activation (ACT2FN), got {value!r}.")
        for name in ("prepend_global_region", "use_switch_attention", "use_switch_input", "check_input_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        modes = self.allowed_modes
        if (not isinstance(modes, list) or not modes or len(set(modes)) != len(modes)
                or any(isinstance(m, bool) or m not in SWITCH_BERT_ATTENTION_MODES for m in modes)):
            raise ValueError(
                "`allowed_modes` must be a non-empty list of distinct mode ids from {0: self-self, 1: self-cross, "
                f"2: cross-self, 3: joint}}, got {modes!r}."
            )
        if sorted(modes) != list(modes):
            raise ValueError(f"`allowed_modes` must be sorted, got {modes!r}.")
        if isinstance(self.fixed_attention_mode, bool) or self.fixed_attention_mode not in SWITCH_BERT_ATTENTION_MODES:
            raise ValueError(f"`fixed_attention_mode` must be a mode id in 0..3, got {self.fixed_attention_mode!r}.")
        if self.switch_routing not in SWITCH_BERT_ROUTING:
            raise ValueError(f"`switch_routing` must be one of {SWITCH_BERT_ROUTING}, got {self.switch_routing!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob",
                     "mrm_mask_probability"):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        for name in ("mlm_loss_weight", "mrm_loss_weight", "itm_loss_weight", "initializer_range"):
            _check_float(name, getattr(self, name), 0.0, None)
        _check_float("layer_norm_eps", self.layer_norm_eps, 0.0, None, low_open=True)
        _check_float("gumbel_temperature", self.gumbel_temperature, 0.0, None, low_open=True)
        if len(self.id2label) < 1:
            raise ValueError(f"`id2label` must name at least one class of the task head, got {self.id2label!r}.")


__all__ = ["SwitchBertConfig"]
