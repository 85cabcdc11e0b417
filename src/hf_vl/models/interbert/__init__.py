"""InterBERT (Lin et al., 2020) for Hugging Face transformers."""

from .configuration_interbert import InterBertConfig
from .modeling_interbert import (
    InterBertClassifierOutput,
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
    InterBertForPreTraining,
    InterBertForPreTrainingOutput,
    InterBertForQuestionAnswering,
    InterBertForSequenceClassification,
    InterBertModel,
    InterBertModelOutput,
    InterBertPreTrainedModel,
    prepend_global_region,
)
from .processing_interbert import InterBertProcessor
