"""Auto classes for the vision-and-language tasks that transformers has no Auto class for.

They behave like transformers' own (`from_pretrained`, `from_config`, `register`) and know every hf_vl
architecture that has the head, e.g. ``AutoModelForImageAndTextRetrieval.from_pretrained(path)`` gives a
``MeterForImageAndTextRetrieval`` for a METER checkpoint.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES


def _empty_mapping() -> _LazyAutoMapping:
    return _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForImageAndTextRetrieval(_BaseAutoModelClass):
    """Image-text matching / retrieval heads (a matching score per image-text pair)."""

    _model_mapping = _empty_mapping()


class AutoModelForImagesAndTextClassification(_BaseAutoModelClass):
    """Classification of one text against several images (NLVR2)."""

    _model_mapping = _empty_mapping()


class AutoModelForImageTextClassification(_BaseAutoModelClass):
    """Single-label classification of an image-text pair (SNLI-VE visual entailment)."""

    _model_mapping = _empty_mapping()


class AutoModelForReferringExpression(_BaseAutoModelClass):
    """Referring-expression heads: one matching score per region of `visual_feats` (`logits (batch_size,
    num_regions)`), e.g. `SwitchBertForReferringExpression`. The model class of the `"vl-referring-expression"`
    pipeline."""

    _model_mapping = _empty_mapping()


__all__ = [
    "AutoModelForImageAndTextRetrieval",
    "AutoModelForReferringExpression",
    "AutoModelForImagesAndTextClassification",
    "AutoModelForImageTextClassification",
]
