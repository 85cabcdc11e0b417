"""hf_vl: vision-and-language transformers as native Hugging Face models.

Importing ``hf_vl`` registers every configuration, model, processor and pipeline with the
``transformers`` Auto classes and ``pipeline()``.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .pipelines import SUPPORTED_TASKS as PIPELINE_TASKS
from .pipelines import register_pipelines
from .auto import (
    AutoModelForImageAndTextRetrieval,
    AutoModelForImagesAndTextClassification,
    AutoModelForImageTextClassification,
    AutoModelForReferringExpression,
)
from .models.adaptive_lxmert import (
    AdaptiveLxmertConfig,
    AdaptiveLxmertForPreTraining,
    AdaptiveLxmertForPreTrainingOutput,
    AdaptiveLxmertForQuestionAnswering,
    AdaptiveLxmertForQuestionAnsweringOutput,
    AdaptiveLxmertModel,
    AdaptiveLxmertModelOutput,
    AdaptiveLxmertPreTrainedModel,
    AdaptiveLxmertProcessor,
)
from .models.meter import (
    MeterClassifierOutput,
    MeterConfig,
    MeterForConditionalGeneration,
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForImageTextClassification,
    MeterForPreTraining,
    MeterForPreTrainingOutput,
    MeterForQuestionAnswering,
    MeterImageProcessor,
    MeterModel,
    MeterModelOutput,
    MeterPreTrainedModel,
    MeterProcessor,
    MeterSeq2SeqLMOutput,
)
from .models.interbert import (
    InterBertClassifierOutput,
    InterBertConfig,
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
    InterBertForPreTraining,
    InterBertForPreTrainingOutput,
    InterBertForQuestionAnswering,
    InterBertForSequenceClassification,
    InterBertModel,
    InterBertModelOutput,
    InterBertPreTrainedModel,
    InterBertProcessor,
)
from .models.vlmo import (
    VlmoClassifierOutput,
    VlmoConfig,
    VlmoForImageAndTextRetrieval,
    VlmoForImageClassification,
    VlmoForImagesAndTextClassification,
    VlmoForMaskedLM,
    VlmoForPreTraining,
    VlmoForPreTrainingOutput,
    VlmoForQuestionAnswering,
    VlmoImageProcessor,
    VlmoModel,
    VlmoModelOutput,
    VlmoPreTrainedModel,
    VlmoProcessor,
    VlmoRetrievalOutput,
)
from .models.switch_bert import (
    SwitchBertClassifierOutput,
    SwitchBertConfig,
    SwitchBertForImageAndTextRetrieval,
    SwitchBertForPreTraining,
    SwitchBertForPreTrainingOutput,
    SwitchBertForQuestionAnswering,
    SwitchBertForReferringExpression,
    SwitchBertModel,
    SwitchBertModelOutput,
    SwitchBertPreTrainedModel,
    SwitchBertProcessor,
)

__version__ = "0.1.0"


# (Auto class, hf_vl class) pairs; transformers' own Auto classes also go into a saved checkpoint's `auto_map`.
MODEL_AUTO_CLASSES = {
    "adaptive_lxmert": (
        (AutoModel, AdaptiveLxmertModel),
        (AutoModelForPreTraining, AdaptiveLxmertForPreTraining),
        (AutoModelForVisualQuestionAnswering, AdaptiveLxmertForQuestionAnswering),
    ),
    "meter": (
        (AutoModel, MeterModel),
        (AutoModelForPreTraining, MeterForPreTraining),
        (AutoModelForVisualQuestionAnswering, MeterForQuestionAnswering),
        (AutoModelForImageAndTextRetrieval, MeterForImageAndTextRetrieval),
        (AutoModelForImagesAndTextClassification, MeterForImagesAndTextClassification),
        (AutoModelForImageTextClassification, MeterForImageTextClassification),
        # encoder-decoder METER: transformers' "image-text-to-text" pipeline (and "image-to-text", its old name)
        (AutoModelForImageTextToText, MeterForConditionalGeneration),
    ),
    "vlmo": (
        (AutoModel, VlmoModel),
        (AutoModelForPreTraining, VlmoForPreTraining),
        (AutoModelForMaskedLM, VlmoForMaskedLM),
        (AutoModelForImageClassification, VlmoForImageClassification),
        (AutoModelForVisualQuestionAnswering, VlmoForQuestionAnswering),
        (AutoModelForZeroShotImageClassification, VlmoForImageAndTextRetrieval),
        (AutoModelForImagesAndTextClassification, VlmoForImagesAndTextClassification),
    ),
    "interbert": (
        (AutoModel, InterBertModel),
        (AutoModelForPreTraining, InterBertForPreTraining),
        (AutoModelForVisualQuestionAnswering, InterBertForQuestionAnswering),
        (AutoModelForMultipleChoice, InterBertForMultipleChoice),
        (AutoModelForSequenceClassification, InterBertForSequenceClassification),
        (AutoModelForImageAndTextRetrieval, InterBertForImageAndTextRetrieval),
    ),
    "switch_bert": (
        (AutoModel, SwitchBertModel),
        (AutoModelForPreTraining, SwitchBertForPreTraining),
        (AutoModelForVisualQuestionAnswering, SwitchBertForQuestionAnswering),
        (AutoModelForImageAndTextRetrieval, SwitchBertForImageAndTextRetrieval),
        (AutoModelForReferringExpression, SwitchBertForReferringExpression),
    ),
}


def _register_meter() -> None:
    AutoConfig.register("meter", MeterConfig, exist_ok=True)
    for auto_class, model_class in MODEL_AUTO_CLASSES["meter"]:
        auto_class.register(MeterConfig, model_class, exist_ok=True)
    # one PIL/numpy implementation for both backends (no torchvision needed)
    AutoImageProcessor.register(
        MeterConfig,
        image_processor_classes={"pil": MeterImageProcessor, "torchvision": MeterImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(MeterConfig, MeterProcessor, exist_ok=True)


def _register_vlmo() -> None:
    AutoConfig.register("vlmo", VlmoConfig, exist_ok=True)
    for auto_class, model_class in MODEL_AUTO_CLASSES["vlmo"]:
        auto_class.register(VlmoConfig, model_class, exist_ok=True)
    # VLMo's retrieval head is a dual encoder (logits_per_image), not an ITM scorer: hf_vl's
    # AutoModelForImageAndTextRetrieval (fusion matching scores) keeps METER-style heads only.
    AutoImageProcessor.register(
        VlmoConfig,
        image_processor_classes={"pil": VlmoImageProcessor, "torchvision": VlmoImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(VlmoConfig, VlmoProcessor, exist_ok=True)


def _register_interbert() -> None:
    AutoConfig.register("interbert", InterBertConfig, exist_ok=True)
    for auto_class, model_class in MODEL_AUTO_CLASSES["interbert"]:
        auto_class.register(InterBertConfig, model_class, exist_ok=True)
    # precomputed regions; raw images go through hf_vl.regions.RegionProcessor (its extractor holds weights)
    AutoProcessor.register(InterBertConfig, InterBertProcessor, exist_ok=True)


def _register_switch_bert() -> None:
    AutoConfig.register("switch_bert", SwitchBertConfig, exist_ok=True)
    for auto_class, model_class in MODEL_AUTO_CLASSES["switch_bert"]:
        auto_class.register(SwitchBertConfig, model_class, exist_ok=True)
    # precomputed regions; raw images go through hf_vl.regions.RegionProcessor (its extractor holds weights)
    AutoProcessor.register(SwitchBertConfig, SwitchBertProcessor, exist_ok=True)


def _register_adaptive_lxmert() -> None:
    AutoConfig.register("adaptive_lxmert", AdaptiveLxmertConfig, exist_ok=True)
    for auto_class, model_class in MODEL_AUTO_CLASSES["adaptive_lxmert"]:
        auto_class.register(AdaptiveLxmertConfig, model_class, exist_ok=True)
    # precomputed regions; raw images go through hf_vl.regions.RegionProcessor (its extractor holds weights)
    AutoProcessor.register(AdaptiveLxmertConfig, AdaptiveLxmertProcessor, exist_ok=True)


_register_adaptive_lxmert()
_register_meter()
_register_vlmo()
_register_interbert()
_register_switch_bert()
register_pipelines()

__all__ = [
    "PIPELINE_TASKS",
    "register_pipelines",
    "AdaptiveLxmertConfig",
    "AdaptiveLxmertForPreTraining",
    "AdaptiveLxmertForPreTrainingOutput",
    "AdaptiveLxmertForQuestionAnswering",
    "AdaptiveLxmertForQuestionAnsweringOutput",
    "AdaptiveLxmertModel",
    "AdaptiveLxmertModelOutput",
    "AdaptiveLxmertPreTrainedModel",
    "AdaptiveLxmertProcessor",
    "AutoModelForImageAndTextRetrieval",
    "AutoModelForImagesAndTextClassification",
    "AutoModelForImageTextClassification",
    "AutoModelForReferringExpression",
    "InterBertClassifierOutput",
    "InterBertConfig",
    "InterBertForImageAndTextRetrieval",
    "InterBertForMultipleChoice",
    "InterBertForPreTraining",
    "InterBertForPreTrainingOutput",
    "InterBertForQuestionAnswering",
    "InterBertForSequenceClassification",
    "InterBertModel",
    "InterBertModelOutput",
    "InterBertPreTrainedModel",
    "InterBertProcessor",
    "MeterClassifierOutput",
    "MeterConfig",
    "MeterForImageAndTextRetrieval",
    "MeterForConditionalGeneration",
    "MeterSeq2SeqLMOutput",
    "MeterForImagesAndTextClassification",
    "MeterForImageTextClassification",
    "MeterForPreTraining",
    "MeterForPreTrainingOutput",
    "MeterForQuestionAnswering",
    "MeterImageProcessor",
    "MeterModel",
    "MeterModelOutput",
    "MeterPreTrainedModel",
    "MeterProcessor",
    "VlmoClassifierOutput",
    "VlmoConfig",
    "VlmoForImageAndTextRetrieval",
    "VlmoForImageClassification",
    "VlmoForImagesAndTextClassification",
    "VlmoForMaskedLM",
    "VlmoForPreTraining",
    "VlmoForPreTrainingOutput",
    "VlmoForQuestionAnswering",
    "VlmoImageProcessor",
    "VlmoModel",
    "VlmoModelOutput",
    "VlmoPreTrainedModel",
    "VlmoProcessor",
    "VlmoRetrievalOutput",
    "SwitchBertClassifierOutput",
    "SwitchBertConfig",
    "SwitchBertForImageAndTextRetrieval",
    "SwitchBertForPreTraining",
    "SwitchBertForPreTrainingOutput",
    "SwitchBertForQuestionAnswering",
    "SwitchBertForReferringExpression",
    "SwitchBertModel",
    "SwitchBertModelOutput",
    "SwitchBertPreTrainedModel",
    "SwitchBertProcessor",
]
