"""InterBERT configuration.

InterBERT (Lin et al., "InterBERT: Vision-and-Language Interaction for Multi-modal Pretraining", 2020,
https://arxiv.org/abs/2003.13198; released code without a licence: https://github.com/black4321/InterBERT) runs a
single-stream interaction module (all-attention over the concatenated image regions and words) followed by a
two-stream extraction module (separate image and text layers), and pre-trains with masked group modelling.

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

from typing import Literal

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


INTERBERT_DEFAULT_NUM_VQA_LABELS = 3129


def _check_int(name: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}{why}, got {value!r}.")


def _check_float(name: str, value, low: float, high: float | None, low_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    # written so that NaN fails every comparison
    if not (number and value >= low and (value > low or not low_open) and (high is None or value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"`{name}` must be a float in {interval}, got {value!r}.")


def _check_activation(name: str, value) -> None:
    if not isinstance(value, str) or value not in ACT2FN:
        raise ValueError(
            f"`{name}` must name a transformers activation (`transformers.activations.ACT2FN`: one of "
            f"{sorted(ACT2FN)}), got {value!r}."
        )


class InterBertConfig(PreTrainedConfig):
    r"""Configuration of an [`InterBertModel`]; the defaults reproduce the released InterBERT base model
    (`config/bert_base_6layer_interbert.json`: 6 interaction + 6 text + 6 image layers).

    Where the paper and the released code disagree, the defaults follow the code (conversion parity): the paper's
    interaction module has 12 layers initialised from BERT-base; the code has 6 (set `num_interaction_layers=12`
    for the paper's layout). The code's poolers use ReLU and project to `pooler_size` (1024).

    Args:
        vocab_size (`int`, defaults to 30522): BERT uncased WordPiece vocabulary.
        hidden_size (`int`, defaults to 768): width of every layer. The interaction module runs image regions through
            the text layers' weights, so the image stream has the same width.
        num_attention_heads (`int`, defaults to 12): heads of the interaction and text-extraction layers.
        intermediate_size (`int`, defaults to 3072): FFN width of the interaction and text-extraction layers.
        hidden_act (`str`, defaults to `"gelu"`): activation of those FFNs and of both prediction heads' transforms.
        hidden_dropout_prob (`float`, defaults to 0.1), attention_probs_dropout_prob (`float`, defaults to 0.1).
        max_position_embeddings (`int`, defaults to 512): rows of the text position table.
        type_vocab_size (`int`, defaults to 2): rows of the text segment table.
        pad_token_id (`int`, defaults to 0): padding row of the word embeddings.
        layer_norm_eps (`float`, defaults to 1e-12): every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the normal init of new weights (the paper: N(0, 0.02)).
        num_interaction_layers (`int`, defaults to 6): single-stream layers over `[regions; words]` (image first, as
            in the code). Alias: `num_hidden_layers`.
        num_text_extraction_layers (`int`, defaults to 6): text-only layers after the interaction module.
        num_image_extraction_layers (`int`, defaults to 6): image-only layers after the interaction module.
        image_num_attention_heads (`int`, defaults to 8), image_intermediate_size (`int`, defaults to 3072),
        image_hidden_act (`str`, defaults to `"gelu"`), image_hidden_dropout_prob (`float`, defaults to 0.1),
        image_attention_probs_dropout_prob (`float`, defaults to 0.1): the image-extraction layers.
        visual_feat_dim (`int`, defaults to 2048): region feature size (bottom-up attention Faster R-CNN).
        visual_pos_dim (`int`, defaults to 5): region location size: `x1, y1, x2, y2` normalised to [0, 1] plus the
            area (5) or without it (4).
        prepend_global_region (`bool`, defaults to `True`): the model prepends the global image feature (the mean
            of the unmasked regions, box `[0, 0, 1, 1(, 1)]`) to `visual_feats`; set `False` when the inputs
            already carry it in row 0 (the original data loaders do).
        use_region_type_embedding (`bool`, defaults to `False`): add a learned segment (type) embedding to every
            region (the paper's segment embedding for the image); the released code has none.
        num_region_classes (`int`, defaults to 1601): detector classes predicted by masked region modelling
            (`v_target_size`; Visual Genome's 1600 + background).
        pooler_size (`int`, defaults to 1024): output width of the text and image poolers (`bi_hidden_size`).
        pooler_act (`str`, defaults to `"relu"`): pooler activation (the code uses ReLU on token 0).
        fusion_method (`str`, defaults to `"mul"`): `"mul"` (element-wise product of the two pooled vectors, paper
            and code) or `"sum"`.
        classifier_dropout_prob (`float`, defaults to 0.1): dropout on the fused vector before the task heads.
        msm_anchor_probability (`float`, defaults to 0.1), msm_max_span_extension (`int`, defaults to 2): masked
            segment modelling (an anchor word and 0-2 following words); read by the span masking collator.
        mrm_anchor_probability (`float`, defaults to 0.1), mrm_iou_threshold (`float`, defaults to 0.4): masked
            region modelling (anchor regions plus every region whose IoU with an anchor exceeds the threshold); read
            by the IoU-group region masking collator.
        msm_loss_weight, mrm_loss_weight, itm_loss_weight (`float`, defaults to 1.0): weights of the pre-training
            objectives in the total loss.
        check_input_values (`bool`, defaults to `True`): run [`~InterBertPreTrainedModel.validate_input_values`] in
            eager `forward` calls (never traced by `torch.compile`).
        tie_word_embeddings (`bool`, defaults to `True`): the MSM decoder shares the word embeddings (as in the code).
        num_labels (`int`, defaults to 3129): answers of the VQA head.

    Example:

    ```python
    >>> from hf_vl import InterBertConfig, InterBertModel
    >>> model = InterBertModel(InterBertConfig())  # InterBERT base, randomly initialised
    ```
    """

    model_type = "interbert"
    attribute_map = {"num_hidden_layers": "num_interaction_layers"}

    vocab_size: int = 30522
    hidden_size: int = 768
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
    num_interaction_layers: int = 6
    num_text_extraction_layers: int = 6
    num_image_extraction_layers: int = 6
    image_num_attention_heads: int = 8
    image_intermediate_size: int = 3072
    image_hidden_act: str = "gelu"
    image_hidden_dropout_prob: float = 0.1
    image_attention_probs_dropout_prob: float = 0.1
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 5
    prepend_global_region: bool = True
    use_region_type_embedding: bool = False
    num_region_classes: int = 1601
    pooler_size: int = 1024
    pooler_act: str = "relu"
    fusion_method: Literal["mul", "sum"] = "mul"
    classifier_dropout_prob: float = 0.1
    msm_anchor_probability: float = 0.1
    msm_max_span_extension: int = 2
    mrm_anchor_probability: float = 0.1
    mrm_iou_threshold: float = 0.4
    msm_loss_weight: float = 1.0
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
            kwargs["num_labels"] = INTERBERT_DEFAULT_NUM_VQA_LABELS
        super().__post_init__(**kwargs)
        self._validate_interbert_fields()

    def _validate_interbert_fields(self):
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings",
                     "type_vocab_size", "num_interaction_layers", "image_num_attention_heads",
                     "image_intermediate_size", "visual_feat_dim", "num_region_classes", "pooler_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("num_text_extraction_layers", "num_image_extraction_layers", "msm_max_span_extension"):
            _check_int(name, getattr(self, name), minimum=0)
        _check_int("pad_token_id", self.pad_token_id, minimum=0)
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"`pad_token_id` ({self.pad_token_id}) must be < `vocab_size` ({self.vocab_size}).")
        for heads_name in ("num_attention_heads", "image_num_attention_heads"):
            if self.hidden_size % getattr(self, heads_name) != 0:
                raise ValueError(
                    f"`hidden_size` ({self.hidden_size}) must be a multiple of `{heads_name}` "
                    f"({getattr(self, heads_name)})."
                )
        if self.visual_pos_dim not in (4, 5) or isinstance(self.visual_pos_dim, bool):
            raise ValueError(
                f"`visual_pos_dim` must be 4 (x1, y1, x2, y2) or 5 (+ area), got {self.visual_pos_dim!r}."
            )
        for name in ("hidden_act", "image_hidden_act", "pooler_act"):
            _check_activation(name, getattr(self, name))
        if self.fusion_method not in ("mul", "sum"):
            raise ValueError(f"`fusion_method` must be 'mul' (element-wise product) or 'sum', got {self.fusion_method!r}.")
        for name in ("prepend_global_region", "use_region_type_embedding", "check_input_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "image_hidden_dropout_prob",
                     "image_attention_probs_dropout_prob", "classifier_dropout_prob", "msm_anchor_probability",
                     "mrm_anchor_probability", "mrm_iou_threshold"):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        for name in ("msm_loss_weight", "mrm_loss_weight", "itm_loss_weight", "initializer_range"):
            _check_float(name, getattr(self, name), 0.0, None)
        _check_float("layer_norm_eps", self.layer_norm_eps, 0.0, None, low_open=True)
        if len(self.id2label) < 1:
            raise ValueError(f"`id2label` must name at least one class of the task head, got {self.id2label!r}.")


__all__ = ["InterBertConfig"]
