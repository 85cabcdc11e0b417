"""Adaptive LXMERT (Bhargava, 2020): LXMERT with adaptive attention span, alpha-entmax attention and LayerDrop."""

from .configuration_adaptive_lxmert import AdaptiveLxmertConfig
from .modeling_adaptive_lxmert import (
    AdaptiveLxmertForPreTraining,
    AdaptiveLxmertForPreTrainingOutput,
    AdaptiveLxmertForQuestionAnswering,
    AdaptiveLxmertForQuestionAnsweringOutput,
    AdaptiveLxmertModel,
    AdaptiveLxmertModelOutput,
    AdaptiveLxmertPreTrainedModel,
    entmax15,
    entmax_bisect_newton,
    sparsemax,
)
from .processing_adaptive_lxmert import AdaptiveLxmertProcessor
