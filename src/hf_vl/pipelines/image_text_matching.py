"""Shared parts of the pipelines that score (image, text) pairs with an image-text matching head.

Two kinds of heads give a match score:

- retrieval heads (`AutoModelForImageAndTextRetrieval`, e.g. `MeterForImageAndTextRetrieval`): `logits (B, 1)`, a
  match logit (sigmoid = match probability);
- pre-training checkpoints with an ITM head (`AutoModelForPreTraining`, e.g. `MeterForPreTraining`): `itm_logits
  (B, 2)`, index 1 = match. Their match logit is `itm_logits[:, 1] - itm_logits[:, 0]` (sigmoid of it = softmax
  index 1). Two-way `logits (B, 2)` of a retrieval head are read the same way.

`AutoModelForImageTextMatching` loads whichever of the two heads a checkpoint was saved with (its
`config.architectures`), so `pipeline("image-text-retrieval", model=folder)` never silently swaps a trained ITM head for
a randomly initialised retrieval head.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForPreTraining, PreTrainedConfig
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.pipelines.base import ChunkPipeline

from hf_vl.auto import AutoModelForImageAndTextRetrieval

from ._utils import auto_class_model_names, describe, model_class_names, require_processor, save_pipeline


_CONFIG_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "revision",
    "local_files_only",
    "subfolder",
    "trust_remote_code",
    "code_revision",
    "_from_pipeline",
)


def retrieval_head_names() -> list[str]:
    return auto_class_model_names(AutoModelForImageAndTextRetrieval)


def itm_pretraining_head_names() -> list[str]:
    """Pre-training heads registered by hf_vl (they return `itm_logits`)."""
    return auto_class_model_names(AutoModelForPreTraining, registered_only=True)


class AutoModelForImageTextMatching(_BaseAutoModelClass):
    """Loads the image-text matching head a checkpoint was saved with.

    `config.architectures` naming a retrieval head -> `AutoModelForImageAndTextRetrieval`; naming an hf_vl pre-training
    head (ITM) -> `AutoModelForPreTraining`; otherwise `AutoModelForImageAndTextRetrieval` (a new retrieval head is
    initialised, with transformers' usual warning). This is the model class of the `"image-text-retrieval"` and
    `"itm-zero-shot-image-classification"` pipelines.
    """

    _model_mapping = AutoModelForImageAndTextRetrieval._model_mapping

    @classmethod
    def auto_class_for_config(cls, config: PreTrainedConfig) -> type:
        architectures = list(getattr(config, "architectures", None) or [])
        if set(architectures) & set(retrieval_head_names()):
            return AutoModelForImageAndTextRetrieval
        if set(architectures) & set(itm_pretraining_head_names()):
            return AutoModelForPreTraining
        config_class = type(config)
        if (
            config_class not in AutoModelForImageAndTextRetrieval._model_mapping
            and config_class in AutoModelForPreTraining._model_mapping
        ):
            return AutoModelForPreTraining
        return AutoModelForImageAndTextRetrieval

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls.auto_class_for_config(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            config_kwargs = {key: kwargs[key] for key in _CONFIG_KWARGS if key in kwargs}
            config = AutoConfig.from_pretrained(config or pretrained_model_name_or_path, **config_kwargs)
        auto_class = cls.auto_class_for_config(config)
        return auto_class.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def register(cls, *args, **kwargs):
        raise TypeError(
            "Register heads with `AutoModelForImageAndTextRetrieval` or `AutoModelForPreTraining`; "
            "`AutoModelForImageTextMatching` only chooses between them."
        )


class ImageTextMatchingPipeline(ChunkPipeline):
    """Base class: scores each (image, text) candidate pair with the model's matching head, `batch_size` pairs per
    forward pass (default `default_batch_size`), so candidate sets of any size run in bounded memory."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    task_name = "image-text matching"
    default_batch_size = 8

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_processor(self, self.task_name)
        retrieval, itm = retrieval_head_names(), itm_pretraining_head_names()
        if not model_class_names(self.model) & (set(retrieval) | set(itm)):
            raise ValueError(
                f"The {self.task_name} pipeline needs an image-text matching head: a retrieval head "
                f"(AutoModelForImageAndTextRetrieval: {retrieval}) or a pre-training model with an ITM head returning "
                f"`itm_logits` (AutoModelForPreTraining: {itm}); got {type(self.model).__name__}."
            )
        if self._batch_size is None:
            self._batch_size = self.default_batch_size

    def save_pretrained(self, save_directory, save_pipeline_code: bool = False, **kwargs):
        """Save model and processor so that `pipeline(task, model=save_directory)` reloads this pipeline."""
        save_pipeline(self, save_directory, save_pipeline_code=save_pipeline_code, **kwargs)

    def _forward(self, inputs: dict) -> dict:
        model_inputs = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        bookkeeping = {key: value for key, value in inputs.items() if not isinstance(value, torch.Tensor)}
        outputs = self.model(**model_inputs)
        match_logit, score = self._match_scores(outputs)
        # the first entry must be a tensor: the chunk iterator reads the batch size from it
        return {"match_logit": match_logit, "score": score, **bookkeeping}

    def _match_scores(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(match logit, pipeline score) per pair: retrieval head -> (logit, logit); ITM -> (l1 - l0, softmax[1])."""
        itm_logits = outputs.get("itm_logits") if hasattr(outputs, "get") else None
        logits = itm_logits if itm_logits is not None else (outputs.get("logits") if hasattr(outputs, "get") else None)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[-1] not in (1, 2):
            raise ValueError(
                f"The {self.task_name} pipeline needs `itm_logits (batch_size, 2)` (ITM head, index 1 = match) or "
                f"`logits (batch_size, 1)` (retrieval head) from the model; {type(self.model).__name__} returned "
                f"{describe(logits)}."
            )
        logits = logits.float()
        if logits.shape[-1] == 1:
            return logits[:, 0], logits[:, 0]
        return logits[:, 1] - logits[:, 0], logits.softmax(-1)[:, 1]


__all__ = ["AutoModelForImageTextMatching", "ImageTextMatchingPipeline"]
