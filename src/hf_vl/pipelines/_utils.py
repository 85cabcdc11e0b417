"""Helpers shared by the hf_vl pipelines: input checks, head checks and score formatting.

Imports only numpy, PIL, torch and the public `transformers` API so that a pipeline saved with
`pipe.save_pretrained(folder, save_pipeline_code=True)` carries this file next to its own (remote code).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import PIL.Image
import torch


def auto_class_model_names(auto_class: Any, registered_only: bool = False) -> list[str]:
    """Names of the model classes an Auto class knows (transformers' own ones, then those added with `register`).

    Reads the lazy mapping without importing every model module. `registered_only=True` keeps only the classes
    registered at run time (e.g. by `import hf_vl`).
    """
    mapping = getattr(auto_class, "_model_mapping", None)
    if mapping is None:
        return []
    names: list[str] = []
    if not registered_only:
        for value in getattr(mapping, "_model_mapping", {}).values():
            names.extend(value if isinstance(value, (list, tuple)) else [value])
    for value in getattr(mapping, "_extra_content", {}).values():
        for model_class in value if isinstance(value, (list, tuple)) else (value,):
            names.append(model_class if isinstance(model_class, str) else model_class.__name__)
    return list(dict.fromkeys(names))


def model_class_names(model: Any) -> set[str]:
    """The name of the model's class and of its parents (a subclass of a supported head is supported too)."""
    return {cls.__name__ for cls in type(model).__mro__}


# Question-answering heads trained with cross-entropy over answer indices (`labels (batch_size,)`), whatever their
# `config.problem_type` says: their scores are a softmax over the answers. transformers' LXMERT is one
# (`LxmertForQuestionAnswering`: `CrossEntropyLoss` over `config.num_qa_labels`); subclasses count too.
SINGLE_LABEL_QA_HEADS = frozenset({"LxmertForQuestionAnswering"})

# Names under which question-answering models return their answer scores (`logits`; LXMERT:
# `question_answering_score`), in the order they are looked up.
QA_LOGITS_KEYS = ("logits", "question_answering_score")

# The region inputs of detector-feature models (LXMERT's names, shared by every hf_vl region model).
REGION_INPUT_KEYS = ("visual_feats", "visual_pos", "visual_attention_mask")


def is_single_label_qa_head(model: Any) -> bool:
    """Whether a VQA head is single-label (softmax scores, class-index labels) rather than multi-label (sigmoid
    scores, soft-score targets).

    The rule: a known single-label head class (`SINGLE_LABEL_QA_HEADS`, e.g. `LxmertForQuestionAnswering`, or a
    subclass) is single-label; otherwise `config.problem_type == "single_label_classification"` is, and anything
    else (METER, ViLT: soft-score BCE, `problem_type` unset or `"multi_label_classification"`) is multi-label.
    """
    if model_class_names(model) & SINGLE_LABEL_QA_HEADS:
        return True
    return getattr(getattr(model, "config", None), "problem_type", None) == "single_label_classification"


def takes_region_inputs(model: Any) -> bool:
    """Whether the model's forward reads detector regions (`visual_feats`, `visual_pos`) instead of pixels."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "visual_feats" in parameters and "visual_pos" in parameters


def qa_logits(outputs: Any) -> Any:
    """The answer scores of a question-answering output (`logits`, or LXMERT's `question_answering_score`)."""
    if not hasattr(outputs, "get"):
        return None
    for key in QA_LOGITS_KEYS:
        value = outputs.get(key)
        if value is not None:
            return value
    return None


def num_answers(config: Any) -> int:
    """Size of the answer vocabulary of a QA head: `config.num_qa_labels` (LXMERT) when set, else `len(id2label)`."""
    num_qa_labels = getattr(config, "num_qa_labels", None)
    return int(num_qa_labels) if num_qa_labels is not None else len(config.id2label)


def is_single_image(value: Any) -> bool:
    """A PIL image, a path/URL string, or one (H, W[, C]) / (C, H, W) array or tensor."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike)):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim in (2, 3)
    return False


def describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    return type(value).__name__


def as_image_list(images: Any, argument: str) -> list | None:
    """`images` as a list of single images when it is a batch (list/tuple, or a 4-D array/tensor), else None."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"`{argument}` is an empty list: pass at least one image.")
        for index, image in enumerate(images):
            if not is_single_image(image):
                raise TypeError(
                    f"`{argument}[{index}]` must be a PIL image, a path/URL or an (H, W, C) / (C, H, W) array; got "
                    f"{describe(image)}."
                )
        return [os.fspath(image) if isinstance(image, os.PathLike) else image for image in images]
    return None


def check_single_image(image: Any, argument: str, task: str) -> Any:
    if image is None:
        raise ValueError(f"The {task} pipeline needs an image: `{argument}` is missing.")
    if not is_single_image(image):
        raise TypeError(
            f"`{argument}` must be a PIL image, a path/URL or an (H, W, C) / (C, H, W) array; got {describe(image)}."
        )
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    return image


def check_text(text: Any, argument: str, task: str) -> str:
    if text is None:
        raise ValueError(f"The {task} pipeline needs `{argument}` (a non-empty string).")
    if not isinstance(text, str):
        raise TypeError(f"`{argument}` must be a string; got {type(text).__name__}.")
    if not text.strip():
        raise ValueError(f"`{argument}` must be a non-empty string; got {text!r}.")
    return text


def check_text_list(texts: Any, argument: str, task: str, split_commas: bool = False) -> list[str]:
    if texts is None:
        raise ValueError(f"The {task} pipeline needs `{argument}`: a non-empty list of strings.")
    if isinstance(texts, str):
        texts = [part.strip() for part in texts.split(",")] if split_commas else [texts]
    if not isinstance(texts, Iterable):
        raise TypeError(f"`{argument}` must be a list of strings; got {type(texts).__name__}.")
    texts = list(texts)
    if len(texts) == 0:
        raise ValueError(f"`{argument}` is empty: the {task} pipeline needs at least one candidate.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`{argument}[{index}]` must be a string; got {type(text).__name__}.")
        if not text.strip():
            raise ValueError(f"`{argument}[{index}]` must be a non-empty string; got {text!r}.")
    return texts


def check_top_k(top_k: Any) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int or None; got {top_k!r}.")
    return int(top_k)


def to_model_dtype(model_inputs: dict, dtype: torch.dtype | None) -> dict:
    """Cast floating point pixel tensors to the model's dtype (fp16/bf16 checkpoints)."""
    if dtype is None:
        return model_inputs
    for key, value in model_inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            model_inputs[key] = value.to(dtype)
    return model_inputs


def processor_outputs(processor: Any, **kwargs) -> dict:
    """Call the processor with `return_tensors="pt"` and return a plain dict of tensors."""
    return dict(processor(return_tensors="pt", **kwargs))


def require_processor(pipeline: Any, task: str) -> None:
    if pipeline.processor is None:
        raise ValueError(
            f"The {task} pipeline needs a multimodal processor (e.g. `MeterProcessor`) to turn images and text into "
            "model inputs: save one next to the model (`processor.save_pretrained(folder)`) or pass "
            "`pipeline(..., processor=processor)`."
        )


_MISSING = object()


def save_pipeline(pipeline: Any, save_directory: str | os.PathLike, save_pipeline_code: bool = False, **kwargs) -> None:
    """Save the pipeline's model and processor to `save_directory` (so `pipeline(task, model=save_directory)` loads
    it again).

    With `save_pipeline_code=True` the pipeline's source files are copied next to the weights and
    `config.custom_pipelines` names them, so that `pipeline(task, model=folder, trust_remote_code=True)` finds the
    pipeline without `import hf_vl` (the model itself then also needs its remote code / `auto_map`). Note that
    transformers then uses the saved code for that task name even when hf_vl is imported, and asks for
    `trust_remote_code=True`.
    """
    import transformers
    from transformers.dynamic_module_utils import custom_object_save

    if os.path.isfile(save_directory):
        raise ValueError(f"`save_directory` must be a folder; {save_directory!r} is a file.")
    os.makedirs(save_directory, exist_ok=True)
    config = pipeline.model.config
    previous = getattr(config, "custom_pipelines", _MISSING)
    try:
        if save_pipeline_code:
            custom_pipelines = {}
            for task, info in (getattr(pipeline, "_registered_impl", None) or {}).items():
                if info["impl"] is not type(pipeline):
                    continue
                model_classes = tuple(model_class.__name__ for model_class in info.get("pt", ()))
                missing = [name for name in model_classes if not hasattr(transformers, name)]
                if missing:
                    raise ValueError(
                        f"The {task} pipeline cannot be saved as custom pipeline code: transformers resolves the model "
                        f"classes of `custom_pipelines` by name in the `transformers` namespace, and {missing} are "
                        "not there. Save without `save_pipeline_code` and load with `import hf_vl` instead."
                    )
                module = type(pipeline).__module__.split(".")[-1]
                entry = {key: value for key, value in info.items() if key not in ("impl", "pt", "default")}
                custom_pipelines[task] = {"impl": f"{module}.{type(pipeline).__name__}", "pt": model_classes, **entry}
            if not custom_pipelines:
                raise ValueError(
                    f"{type(pipeline).__name__} is not registered with `PIPELINE_REGISTRY`; call "
                    "`hf_vl.pipelines.register_pipelines()` first."
                )
            config.custom_pipelines = custom_pipelines
            custom_object_save(pipeline, save_directory)
        pipeline.model.save_pretrained(save_directory, **kwargs)
    finally:
        if save_pipeline_code:
            if previous is _MISSING:
                try:
                    delattr(config, "custom_pipelines")
                except AttributeError:
                    pass
            else:
                config.custom_pipelines = previous
    if pipeline.processor is not None:
        pipeline.processor.save_pretrained(save_directory)
    else:
        for component in (pipeline.tokenizer, pipeline.image_processor):
            if component is not None:
                component.save_pretrained(save_directory)
