"""hf_vl: vision-and-language transformers as native Hugging Face models.

Importing ``hf_vl`` registers every configuration, model, processor and pipeline with the
``transformers`` Auto classes and ``pipeline()``.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from .auto import (
    AutoModelForImageAndTextRetrieval,
    AutoModelForImagesAndTextClassification,
    AutoModelForImageTextClassification,
)
from .models.meter import (
    MeterClassifierOutput,
    MeterConfig,
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
)

__version__ = "0.1.0"


def _register_meter() -> None:
    AutoConfig.register("meter", MeterConfig, exist_ok=True)
    AutoModel.register(MeterConfig, MeterModel, exist_ok=True)
    AutoModelForPreTraining.register(MeterConfig, MeterForPreTraining, exist_ok=True)
    AutoModelForVisualQuestionAnswering.register(MeterConfig, MeterForQuestionAnswering, exist_ok=True)
    AutoModelForImageAndTextRetrieval.register(MeterConfig, MeterForImageAndTextRetrieval, exist_ok=True)
    AutoModelForImagesAndTextClassification.register(MeterConfig, MeterForImagesAndTextClassification, exist_ok=True)
    AutoModelForImageTextClassification.register(MeterConfig, MeterForImageTextClassification, exist_ok=True)
    # one PIL/numpy implementation for both backends (no torchvision needed)
    AutoImageProcessor.register(
        MeterConfig,
        image_processor_classes={"pil": MeterImageProcessor, "torchvision": MeterImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(MeterConfig, MeterProcessor, exist_ok=True)


_register_meter()

__all__ = [
    "AutoModelForImageAndTextRetrieval",
    "AutoModelForImagesAndTextClassification",
    "AutoModelForImageTextClassification",
    "MeterClassifierOutput",
    "MeterConfig",
    "MeterForImageAndTextRetrieval",
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
]
