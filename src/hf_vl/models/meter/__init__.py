"""METER (Dou et al., CVPR 2022) for Hugging Face transformers."""

from .configuration_meter import MeterConfig
from .image_processing_meter import MeterImageProcessor
from .modeling_meter import (
    MeterClassifierOutput,
    MeterForConditionalGeneration,
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForImageTextClassification,
    MeterForPreTraining,
    MeterForPreTrainingOutput,
    MeterForQuestionAnswering,
    MeterModel,
    MeterModelOutput,
    MeterPreTrainedModel,
    MeterSeq2SeqLMOutput,
)
from .processing_meter import MeterProcessor
