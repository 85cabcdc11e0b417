"""Shared parts of the pipelines that score (image, text) pairs with an image-text matching head.

Two kinds of heads give a match score:

- retrieval heads (`AutoModelForImageAndTextRetrieval`, e.g. `MeterForImageAndTextRetrieval`): `logits (B, 1)`, a
  match logit (sigmoid = match probability);
- pre-training checkpoints with an ITM head (`AutoModelForPreTraining`, e.g. `MeterForPreTraining`): `itm_logits
  (B, 2)`, index 1 = match. Their match logit is `itm_logits[:, 1] - itm_logits[:, 0]` (sigmoid of it = softmax
  index 1). Two-way `logits (B, 2)` of a retrieval head are read the same way.

Dual encoders (VLMo's `VlmoForImageAndTextRetrieval`, CLIP-like models: a class of
`AutoModelForZeroShotImageClassification`, or any model exposing `get_image_features` and `get_text_features`) are
not run on pairs at all: the query and every candidate go through their own tower once, and the match logit of a pair
is the temperature-scaled dot product of the L2-normalised embeddings, `exp(logit_scale) * image . text`
(`+ logit_bias` where the model has one, as SigLIP), exactly the model's `logits_per_image`. No fusion forward runs.

`AutoModelForImageTextMatching` loads whichever of the three heads a checkpoint was saved with (its
`config.architectures`), so `pipeline("image-text-retrieval", model=folder)` never silently swaps a trained ITM head or
dual encoder for a randomly initialised head.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    PreTrainedConfig,
)
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


def dual_encoder_names() -> list[str]:
    """Dual encoders: the classes of `AutoModelForZeroShotImageClassification` (CLIP, SigLIP, ... and hf_vl's
    `VlmoForImageAndTextRetrieval`), which return `logits_per_image`."""
    return auto_class_model_names(AutoModelForZeroShotImageClassification)


def is_dual_encoder(model: Any) -> bool:
    """Whether the pipelines score `model` as a dual encoder: its class (or a parent) is a dual-encoder class of
    [`dual_encoder_names`], or, not being a matching head, it has `get_image_features` and `get_text_features` itself
    (a bare `VlmoModel`, a CLIP-like remote-code model)."""
    names = model_class_names(model)
    if names & set(dual_encoder_names()):
        return True
    if names & (set(retrieval_head_names()) | set(itm_pretraining_head_names())):
        return False
    return callable(getattr(model, "get_image_features", None)) and callable(getattr(model, "get_text_features", None))


class AutoModelForImageTextMatching(_BaseAutoModelClass):
    """Loads the image-text matching head a checkpoint was saved with.

    `config.architectures` naming a retrieval head -> `AutoModelForImageAndTextRetrieval`; naming an hf_vl pre-training
    head (ITM) -> `AutoModelForPreTraining`; naming a dual encoder (`VlmoForImageAndTextRetrieval`, `CLIPModel`, ...)
    -> `AutoModelForZeroShotImageClassification`. Otherwise the first of those Auto classes that knows the config
    (a new head is initialised, with transformers' usual warning), `AutoModelForImageAndTextRetrieval` when none does.
    This is the model class of the `"image-text-retrieval"` and `"itm-zero-shot-image-classification"` pipelines.
    """

    _model_mapping = AutoModelForImageAndTextRetrieval._model_mapping

    @classmethod
    def auto_class_for_config(cls, config: PreTrainedConfig) -> type:
        architectures = list(getattr(config, "architectures", None) or [])
        if set(architectures) & set(retrieval_head_names()):
            return AutoModelForImageAndTextRetrieval
        if set(architectures) & set(itm_pretraining_head_names()):
            return AutoModelForPreTraining
        if set(architectures) & set(dual_encoder_names()):
            return AutoModelForZeroShotImageClassification
        config_class = type(config)
        for auto_class in (
            AutoModelForImageAndTextRetrieval, AutoModelForPreTraining, AutoModelForZeroShotImageClassification
        ):
            if config_class in auto_class._model_mapping:
                return auto_class
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
    forward pass (default `default_batch_size`), so candidate sets of any size run in bounded memory.

    With a dual encoder ([`is_dual_encoder`]; `self.dual_encoder`) a subclass's `preprocess` encodes the query once
    with [`~ImageTextMatchingPipeline.encode_query`] and yields only the candidates' own inputs (plus
    `candidate_key`, [`candidate_key`]); `_forward` runs the candidates' tower, `batch_size` candidates per pass, and
    scores them against the query embedding. Within one call a candidate met again (the same candidate texts for
    several query images) is not re-encoded: its embedding is kept (at most `candidate_cache_size` of them).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    task_name = "image-text matching"
    default_batch_size = 8
    candidate_cache_size = 4096

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_processor(self, self.task_name)
        self.dual_encoder = is_dual_encoder(self.model)
        retrieval, itm = retrieval_head_names(), itm_pretraining_head_names()
        if not self.dual_encoder and not model_class_names(self.model) & (set(retrieval) | set(itm)):
            raise ValueError(
                f"The {self.task_name} pipeline needs an image-text matching head: a retrieval head "
                f"(AutoModelForImageAndTextRetrieval: {retrieval}), a pre-training model with an ITM head returning "
                f"`itm_logits` (AutoModelForPreTraining: {itm}), or a dual encoder "
                "(AutoModelForZeroShotImageClassification, e.g. VlmoForImageAndTextRetrieval or CLIPModel, or a model "
                f"with `get_image_features` and `get_text_features`); got {type(self.model).__name__}."
            )
        self._candidate_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self._batch_size is None:
            self._batch_size = self.default_batch_size

    def __call__(self, inputs, *args, **kwargs):
        self._candidate_cache.clear()  # embeddings are shared within one call only
        return super().__call__(inputs, *args, **kwargs)

    def save_pretrained(self, save_directory, save_pipeline_code: bool = False, **kwargs):
        """Save model and processor so that `pipeline(task, model=save_directory)` reloads this pipeline."""
        save_pipeline(self, save_directory, save_pipeline_code=save_pipeline_code, **kwargs)

    def _forward(self, inputs: dict) -> dict:
        model_inputs = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        bookkeeping = {key: value for key, value in inputs.items() if not isinstance(value, torch.Tensor)}
        if self.dual_encoder:
            keys = bookkeeping.pop("candidate_key")
            keys = [keys] if isinstance(keys, str) else list(keys)  # batch_size=1 runs single items, uncollated
            match_logit = self._dual_encoder_logits(model_inputs, keys)
            return {"match_logit": match_logit, "score": match_logit, **bookkeeping}
        outputs = self.model(**model_inputs)
        match_logit, score = self._match_scores(outputs)
        # the first entry must be a tensor: the chunk iterator reads the batch size from it
        return {"match_logit": match_logit, "score": score, **bookkeeping}

    # --- dual encoders ------------------------------------------------------------------------------------------------

    def encode_query(self, inputs: dict, modality: str) -> dict:
        """The processed query (`pixel_values` for `modality="image"`, token ids for `"text"`) replaced by
        `query_embeds (1, dim)`: its L2-normalised embedding from the model's own tower, on the CPU."""
        with torch.inference_mode():
            device_inputs = {key: value.to(self.device) for key, value in inputs.items()
                             if isinstance(value, torch.Tensor)}
            return {"query_embeds": self._tower_embeddings(device_inputs, modality).cpu()}

    def _tower_embeddings(self, inputs: dict, modality: str) -> torch.Tensor:
        """L2-normalised `(batch_size, dim)` embeddings of one modality: `get_image_features` / `get_text_features` of
        the model (or of its base model, VLMo's `VlmoModel`), given the inputs that function names."""
        features = _tower_function(self.model, modality)
        names = _named_parameters(features)
        accepted = _TOWER_INPUTS[modality]
        outputs = features(**{key: value for key, value in inputs.items() if key in accepted and key in names})
        embeds = outputs if isinstance(outputs, torch.Tensor) else getattr(outputs, "pooler_output", None)
        if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2:
            raise ValueError(
                f"The {self.task_name} pipeline reads a dual encoder's embeddings from `get_{modality}_features` "
                f"(a `(batch_size, dim)` tensor or an output with `pooler_output`); {type(self.model).__name__} "
                f"returned {describe(embeds)}."
            )
        return torch.nn.functional.normalize(embeds.float(), dim=-1)

    def _dual_encoder_logits(self, inputs: dict, candidate_keys: list[str]) -> torch.Tensor:
        """`exp(logit_scale) * query . candidate (+ logit_bias)` per row: the model's `logits_per_image` entry of the
        pair. Candidates already encoded in this call (same `candidate_key`) are taken from the cache."""
        query_embeds = inputs.pop("query_embeds").float()  # (B, dim)
        modality = "text" if "input_ids" in inputs else "image"
        cache = self._candidate_cache
        first_rows: dict[str, int] = {}  # candidates new to this call, each encoded once even if repeated in a batch
        for row, key in enumerate(candidate_keys):
            if key not in cache and key not in first_rows:
                first_rows[key] = row
        if first_rows:
            index = torch.tensor(list(first_rows.values()), device=query_embeds.device)
            embeds = self._tower_embeddings({name: value[index] for name, value in inputs.items()}, modality)
            cache.update(zip(first_rows, embeds))
        candidate_embeds = torch.stack([cache[key] for key in candidate_keys])  # (B, dim)
        for key in candidate_keys:
            cache.move_to_end(key)
        while len(cache) > self.candidate_cache_size:
            cache.popitem(last=False)
        logit_scale, logit_bias = _dual_encoder_temperature(self.model)
        logits = (query_embeds * candidate_embeds.to(query_embeds.device)).sum(-1)
        if logit_scale is not None:
            logits = logits * logit_scale.float().exp().to(logits.device)
        if logit_bias is not None:
            logits = logits + logit_bias.float().to(logits.device)
        return logits

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


_TOWER_INPUTS = {
    "image": ("pixel_values", "pixel_mask"),
    "text": ("input_ids", "attention_mask", "token_type_ids", "position_ids"),
}


def _tower_function(model: Any, modality: str) -> Any:
    name = f"get_{modality}_features"
    for owner in (model, getattr(model, "base_model", None)):
        features = getattr(owner, name, None)
        if callable(features):
            return features
    raise ValueError(f"{type(model).__name__} is used as a dual encoder but has no `{name}` (nor its base model).")


def _named_parameters(function: Any) -> set[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {parameter.name for parameter in parameters if parameter.kind not in (parameter.VAR_KEYWORD,
                                                                                 parameter.VAR_POSITIONAL)}


def _dual_encoder_temperature(model: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The dual encoder's `logit_scale` (log temperature) and `logit_bias` (SigLIP), from the model or its base model
    (VLMo keeps `logit_scale` on `VlmoModel`); None where it has none."""
    found = {}
    for name in ("logit_scale", "logit_bias"):
        for owner in (model, getattr(model, "base_model", None)):
            value = getattr(owner, name, None)
            if isinstance(value, torch.Tensor):
                found[name] = value
                break
    return found.get("logit_scale"), found.get("logit_bias")


def candidate_key(inputs: dict, modality: str) -> str:
    """A digest of one processed candidate (`(1, ...)` tensors): the unpadded token ids (and token types) of a text,
    the pixels of an image. Equal inputs give equal keys, so a candidate is encoded once per call."""
    digest = hashlib.blake2b(modality.encode(), digest_size=16)
    mask = inputs.get("attention_mask") if modality == "text" else None
    for name in _TOWER_INPUTS[modality]:
        value = inputs.get(name)
        if not isinstance(value, torch.Tensor) or name == "attention_mask":
            continue
        value = value[0]
        if mask is not None and value.shape == mask[0].shape:
            value = value[mask[0].bool()]
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = [
    "AutoModelForImageTextMatching",
    "ImageTextMatchingPipeline",
    "candidate_key",
    "dual_encoder_names",
    "is_dual_encoder",
]
