"""VLMo (Bao et al., NeurIPS 2022) for Hugging Face transformers."""

from .configuration_vlmo import VlmoConfig
from .image_processing_vlmo import VlmoImageProcessor
from .modeling_vlmo import (
    VlmoClassifierOutput,
    VlmoForImageAndTextRetrieval,
    VlmoForImageClassification,
    VlmoForImagesAndTextClassification,
    VlmoForMaskedLM,
    VlmoForPreTraining,
    VlmoForPreTrainingOutput,
    VlmoForQuestionAnswering,
    VlmoModel,
    VlmoModelOutput,
    VlmoPreTrainedModel,
    VlmoRetrievalOutput,
)
from .processing_vlmo import VlmoProcessor
