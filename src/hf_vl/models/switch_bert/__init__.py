"""Switch-BERT (Guo, Yao and Chu, ECCV 2022) for Hugging Face transformers."""

from .configuration_switch_bert import SwitchBertConfig
from .modeling_switch_bert import (
    SwitchBertClassifierOutput,
    SwitchBertForImageAndTextRetrieval,
    SwitchBertForPreTraining,
    SwitchBertForPreTrainingOutput,
    SwitchBertForQuestionAnswering,
    SwitchBertForReferringExpression,
    SwitchBertModel,
    SwitchBertModelOutput,
    SwitchBertPreTrainedModel,
    prepend_global_region,
)
from .processing_switch_bert import SwitchBertProcessor
