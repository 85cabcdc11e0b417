"""Helpers shared by the hf_vl pipelines: input checks, head checks and score formatting.

Imports only numpy, PIL, torch and the public `transformers` API so that a pipeline saved with
`pipe.save_pretrained(folder, save_pipeline_code=True)` carries this file next to its own (remote code).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from typing import Any, NamedTuple

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


# --- inputs -----------------------------------------------------------------------------------------------------------
# The rules for images and text are those of the model folders (which ship alone as remote code and so cannot import
# this file): copies, kept identical by `utils/check_copies.py`. The pipelines and `hf_vl.regions.RegionProcessor` use
# them from here.


# Copied from hf_vl.models.meter.image_processing_meter.FlatImages
class FlatImages(NamedTuple):
    """`images` flattened by [`flatten_images`]."""

    images: list  # the single images, in order
    names: list  # the argument path of each, for error messages: "images", "images[2]", "images[1][0]"
    batched: bool  # False when `images` was one image
    per_example: int | None  # images per example for grouped inputs (NLVR2 pairs: 2), else None


# Copied from hf_vl.models.meter.image_processing_meter._describe
def _describe(value: Any) -> str:
    """An input as error messages show it: its type, and its shape (arrays, tensors) or size and mode (PIL)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, PIL.Image.Image):
        return f"PIL image of size {value.width}x{value.height} (width x height) in mode {value.mode!r}"
    return type(value).__name__


# Copied from hf_vl.models.meter.image_processing_meter._is_single_image
def _is_single_image(value: Any) -> bool:
    """A PIL image, a path/URL (`str` or `os.PathLike`), or one (H, W), (H, W, C) or (C, H, W) array or tensor."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike)):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


# Copied from hf_vl.models.meter.image_processing_meter._check_single_image
def _check_single_image(image: Any, argument: str) -> Any:
    """`image` if it is one image with at least one pixel (paths as `str`); a `TypeError`/`ValueError` naming
    `argument` otherwise."""
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim not in (2, 3):
        raise ValueError(
            f"`{argument}` must be one image of shape (H, W), (H, W, C) or (C, H, W); got {_describe(image)}."
        )
    if not _is_single_image(image):
        raise TypeError(
            f"`{argument}` must be a PIL image, a path/URL, or an (H, W), (H, W, C) or (C, H, W) array or tensor; "
            f"got {_describe(image)}."
        )
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    size = (image.height, image.width) if isinstance(image, PIL.Image.Image) else tuple(image.shape)
    if 0 in size:
        raise ValueError(f"`{argument}` has no pixels: got {_describe(image)}; height and width must be >= 1.")
    return image


# Copied from hf_vl.models.meter.image_processing_meter.flatten_images
def flatten_images(images: Any, argument: str = "images") -> FlatImages:
    """The one rule for image inputs: which structures are accepted and how they are flattened.

    Accepted: one image; a list/tuple of images (one per example); a list of equally long, non-empty lists of
    images (several images per example, e.g. NLVR2 pairs); a 4-D (B, ...) or 5-D (B, N, ...) array or tensor. Each
    image is a PIL image, a path/URL, or an (H, W), (H, W, C) or (C, H, W) array/tensor with at least one pixel.
    Anything else raises a `TypeError`/`ValueError` naming `argument` (or the entry, e.g. `images[1][0]`).
    """
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim in (4, 5):
        if 0 in images.shape[: images.ndim - 3]:
            raise ValueError(f"`{argument}` is empty: got {_describe(images)}.")
        if images.ndim == 4:
            names = [f"{argument}[{i}]" for i in range(images.shape[0])]
            return FlatImages([_check_single_image(x, n) for x, n in zip(images, names)], names, True, None)
        groups, per_example = images.shape[:2]
        names = [f"{argument}[{i}][{j}]" for i in range(groups) for j in range(per_example)]
        flat = [_check_single_image(x, n) for x, n in zip(images.reshape(-1, *images.shape[2:]), names)]
        return FlatImages(flat, names, True, per_example)
    if not isinstance(images, (list, tuple)):
        return FlatImages([_check_single_image(images, argument)], [argument], False, None)
    if len(images) == 0:
        raise ValueError(f"`{argument}` is empty: pass at least one image.")
    nested = [isinstance(entry, (list, tuple)) for entry in images]
    if not any(nested):
        names = [f"{argument}[{i}]" for i in range(len(images))]
        return FlatImages([_check_single_image(x, n) for x, n in zip(images, names)], names, True, None)
    if not all(nested):
        raise ValueError(
            f"`{argument}` mixes single images and lists of images; pass either one image per example or a list of "
            "images (e.g. an NLVR2 pair) for every example."
        )
    lengths = [len(entry) for entry in images]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(
            f"Every entry of `{argument}` must hold the same non-zero number of images (2 for NLVR2); got {lengths}."
        )
    names = [f"{argument}[{i}][{j}]" for i, entry in enumerate(images) for j in range(len(entry))]
    flat = [image for entry in images for image in entry]
    return FlatImages([_check_single_image(x, n) for x, n in zip(flat, names)], names, True, lengths[0])


# Copied from hf_vl.models.meter.image_processing_meter.convert_image_to_rgb
def convert_image_to_rgb(image: PIL.Image.Image, argument: str = "images") -> PIL.Image.Image:
    """The one RGB rule for PIL images.

    - `"RGB"`: unchanged.
    - With transparency (`"RGBA"`, `"RGBa"`, `"LA"`, `"La"`, `"PA"`, or a `"transparency"` entry in `image.info`,
      e.g. a palette `"P"` image): composited over white, as an image viewer shows it.
    - 16-bit grayscale (`"I;16"`, `"I;16L"`, `"I;16B"`, `"I;16N"`) and 32-bit integer `"I"` (the mode older Pillow
      opens 16-bit PNG/TIFF files in): scaled from [0, 65535] to [0, 255]. (`convert("RGB")` clips instead, which
      turns most 16-bit images white.) `"I"` values outside [0, 65535] raise a `ValueError`.
    - `"L"`, `"1"`, `"P"`, `"CMYK"`, `"YCbCr"`, `"RGBX"`, `"HSV"`, `"LAB"`: PIL's `convert("RGB")`.
    - Any other mode (e.g. 32-bit float `"F"`, which has no agreed pixel range) raises a `ValueError` naming
      `argument`.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"`{argument}` is a PIL image in mode {mode!r} with values in [{values.min()}, {values.max()}]; "
                "integer images are read as 16-bit, so values must lie in [0, 65535]."
            )
        eight_bit = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return PIL.Image.fromarray(eight_bit).convert("RGB")
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV", "LAB"):
        return image.convert("RGB")
    raise ValueError(
        f"`{argument}` is a PIL image in mode {mode!r}, which has no agreed RGB meaning; supported modes are RGB, "
        "RGBA, RGBa, RGBX, L, LA, La, 1, P, PA, CMYK, YCbCr, HSV, LAB, I and I;16 (converted to RGB). Convert it "
        "yourself (e.g. `image.convert('RGB')`) or pass a numpy array."
    )


# Copied from hf_vl.models.meter.processing_meter.validate_text_input
def validate_text_input(text: Any, argument: str = "text") -> list[str]:
    """The one rule for text inputs: a non-empty string, or a non-empty list/tuple of non-empty strings.

    Returns the texts as a list; raises a `TypeError`/`ValueError` naming `argument` (or the entry, `text[1]`).
    """
    if isinstance(text, str):
        texts, names = [text], [argument]
    elif isinstance(text, (list, tuple)):
        if len(text) == 0:
            raise ValueError(f"`{argument}` is an empty list: pass at least one string.")
        texts, names = list(text), [f"{argument}[{index}]" for index in range(len(text))]
    else:
        raise TypeError(f"`{argument}` must be a string or a list of strings; got {type(text).__name__}.")
    for name, sample in zip(names, texts):
        if not isinstance(sample, str):
            raise TypeError(f"`{name}` must be a string; got {type(sample).__name__}.")
        if not sample.strip():
            raise ValueError(f"`{name}` must be a non-empty string; got {sample!r}.")
    return texts


describe = _describe
is_single_image = _is_single_image


def as_image_list(images: Any, argument: str) -> list | None:
    """`images` ([`flatten_images`]) as a list of single images when it is a batch (a list/tuple, or a 4-D array or
    tensor), `None` when it is one image. Lists of image lists (several images per example) raise a `TypeError`."""
    flat = flatten_images(images, argument)
    if flat.per_example is not None:
        raise TypeError(
            f"`{argument}` must be one image or a list of images (one per example); got {describe(images)} holding "
            "several images per example, which this pipeline does not take."
        )
    return flat.images if flat.batched else None


def check_single_image(image: Any, argument: str, task: str) -> Any:
    """One image ([`flatten_images`]'s rule; paths as `str`); a missing one names the pipeline."""
    if image is None:
        raise ValueError(f"The {task} pipeline needs an image: `{argument}` is missing.")
    return _check_single_image(image, argument)


def load_rgb_image(image: Any, argument: str) -> Any:
    """One checked image with paths/URLs loaded and PIL images converted by [`convert_image_to_rgb`]; arrays and
    tensors are returned as they are."""
    image = _check_single_image(image, argument)
    if isinstance(image, str):
        from transformers.image_utils import load_image

        image = load_image(image)
    return convert_image_to_rgb(image, argument) if isinstance(image, PIL.Image.Image) else image


def check_text(text: Any, argument: str, task: str) -> str:
    """One non-empty string ([`validate_text_input`]); a missing one names the pipeline."""
    if text is None:
        raise ValueError(f"The {task} pipeline needs `{argument}` (a non-empty string).")
    if not isinstance(text, str):
        raise TypeError(f"`{argument}` must be a string; got {type(text).__name__}.")
    return validate_text_input(text, argument)[0]


def check_text_list(
    texts: Any, argument: str, task: str, split_commas: bool = False, unique: bool = False
) -> list[str]:
    """A non-empty list of non-empty strings ([`validate_text_input`]; any iterable is listed; with
    `split_commas`, a string is split at commas). `unique=True` refuses duplicates (same words, ignoring case and
    spacing): scores that are a softmax over the candidates would split between them."""
    if texts is None:
        raise ValueError(f"The {task} pipeline needs `{argument}`: a non-empty list of strings.")
    if isinstance(texts, str):
        texts = [part.strip() for part in texts.split(",")] if split_commas else [texts]
    elif not isinstance(texts, (list, tuple)):
        if not isinstance(texts, Iterable):
            raise TypeError(f"`{argument}` must be a list of strings; got {type(texts).__name__}.")
        texts = list(texts)
    if len(texts) == 0:
        raise ValueError(f"`{argument}` is empty: the {task} pipeline needs at least one candidate.")
    texts = validate_text_input(list(texts), argument)
    if unique:
        seen: dict[str, int] = {}
        for index, text in enumerate(texts):
            key = " ".join(text.split()).casefold()
            if key in seen:
                first = seen[key]
                raise ValueError(
                    f"`{argument}` must not repeat a candidate: `{argument}[{first}]` = {texts[first]!r} and "
                    f"`{argument}[{index}]` = {text!r} are the same; the {task} pipeline's scores are a softmax over "
                    "the candidates, so a duplicate would split its score."
                )
            seen[key] = index
    return texts


def check_inputs_fit_model(model: Any, model_inputs: dict, text_argument: str, image_argument: str) -> None:
    """Refuse processed inputs the model cannot take, naming the pipeline argument they came from: text longer than
    the text tower's position table, or pixels smaller than one patch of the vision tower."""
    config = getattr(model, "config", None)
    input_ids = model_inputs.get("input_ids")
    text_config = getattr(config, "text_config", None) or config
    max_positions = getattr(text_config, "max_position_embeddings", None)
    if isinstance(input_ids, torch.Tensor) and isinstance(max_positions, int):
        if getattr(text_config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
            max_positions -= (getattr(text_config, "pad_token_id", None) or 0) + 1  # positions start after padding
        if input_ids.shape[-1] > max_positions:
            raise ValueError(
                f"`{text_argument}` is {input_ids.shape[-1]} tokens long once processed, but the text tower of "
                f"{type(model).__name__} has {max_positions} positions (`max_position_embeddings`); let the "
                "processor truncate it (`truncation=True` with a `max_length` / `max_text_len` of at most that)."
            )
    pixel_values = model_inputs.get("pixel_values")
    patch_size = getattr(getattr(config, "vision_config", None), "patch_size", None)
    if isinstance(pixel_values, torch.Tensor) and patch_size is not None:
        patch = tuple(patch_size)[:2] if isinstance(patch_size, (list, tuple)) else (patch_size, patch_size)
        height, width = pixel_values.shape[-2:]
        if height < patch[0] or width < patch[1]:
            raise ValueError(
                f"`{image_argument}` is {height}x{width} pixels (height x width) once processed, smaller than one "
                f"{patch[0]}x{patch[1]} patch of the vision tower of {type(model).__name__}; let the processor resize "
                "it (`do_resize=True`) or pass a larger image."
            )


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
