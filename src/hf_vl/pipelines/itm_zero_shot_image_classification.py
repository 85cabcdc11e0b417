"""Zero-shot image classification with an image-text matching head: task `"itm-zero-shot-image-classification"`.

Each candidate label is turned into a caption with `hypothesis_template` and scored against the image by the ITM /
retrieval head; the scores are the softmax over the labels of the match logits. (transformers' own
`"zero-shot-image-classification"` needs a CLIP-style dual encoder with `logits_per_image`; fusion models like METER
score one (image, caption) pair per forward pass instead, hence a separate task.) A dual encoder (VLMo's
`VlmoForImageAndTextRetrieval`, CLIP) also works here: the image and each caption are encoded once by their own towers,
which gives the scores of transformers' pipeline for the same captions.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.utils.data
from transformers.pipelines.base import build_pipeline_init_args
from transformers.utils import add_end_docstrings

from ._utils import (
    as_image_list,
    check_inputs_fit_model,
    check_single_image,
    check_text_list,
    check_top_k,
    processor_outputs,
    to_model_dtype,
)
from .image_text_matching import ImageTextMatchingPipeline, candidate_key


TASK = "itm-zero-shot-image-classification"
DEFAULT_HYPOTHESIS_TEMPLATE = "a photo of a {}."


def _check_template(template: Any) -> str:
    if not isinstance(template, str):
        raise TypeError(f"`hypothesis_template` must be a string with a `{{}}` slot; got {type(template).__name__}.")
    if template.format("label") == template:
        raise ValueError(
            f"`hypothesis_template` must contain a `{{}}` slot for the label (e.g. {DEFAULT_HYPOTHESIS_TEMPLATE!r}); "
            f"got {template!r}."
        )
    return template


@add_end_docstrings(build_pipeline_init_args(has_processor=True))
class ITMZeroShotImageClassificationPipeline(ImageTextMatchingPipeline):
    """
    Classifies an image into labels chosen at call time, scoring the caption `hypothesis_template.format(label)` of
    each label with an image-text matching head (retrieval head: its logit; ITM head of a pre-training checkpoint:
    `itm_logits[1] - itm_logits[0]`; dual encoder: `exp(logit_scale)` times the dot product of the image and caption
    embeddings, each encoded once) and taking the softmax over the labels.

    Example:

    ```python
    >>> import hf_vl  # registers the task
    >>> from transformers import pipeline
    >>> classify = pipeline("itm-zero-shot-image-classification", model="path/to/meter-pretrained")
    >>> classify("shape.png", candidate_labels=["circle", "triangle", "rectangle"])
    [{'label': 'circle', 'score': 0.71}, {'label': 'rectangle', 'score': 0.18}, {'label': 'triangle', 'score': 0.11}]
    ```

    Call arguments:
        image: PIL image, path/URL or numpy array, a list of them, or `{"image", "candidate_labels"}` dict(s).
        candidate_labels (`list[str]`): the labels (a comma-separated string is split).
        hypothesis_template (`str`, defaults to `"a photo of a {}."`): caption built for each label.
        top_k (`int`, *optional*): keep the best `top_k` labels (default: all; scores still sum to 1 over all labels).
        batch_size (`int`, *optional*, defaults to 8): (image, caption) pairs per forward pass.

    Returns `[{"label": str, "score": float}]` sorted by decreasing score (one list per image for lists of images).
    """

    task_name = TASK

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, top_k=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        preprocess_params, postprocess_params = {}, {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = check_text_list(
                candidate_labels, "candidate_labels", TASK, split_commas=True, unique=True
            )
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = _check_template(hypothesis_template)
        if top_k is not None:
            postprocess_params["top_k"] = check_top_k(top_k)
        return preprocess_params, {}, postprocess_params

    def __call__(self, image: Any = None, candidate_labels: list[str] | str | None = None, **kwargs):
        """Classify `image` into `candidate_labels`. See the class docstring."""
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        has_labels = "candidate_labels" in kwargs or "candidate_labels" in self._preprocess_params
        return super().__call__(self._build_inputs(image, has_labels), **kwargs)

    @staticmethod
    def _build_inputs(image: Any, has_labels: bool) -> Any:
        if isinstance(image, dict):
            return image
        if isinstance(image, (list, tuple)) and image and all(isinstance(entry, dict) for entry in image):
            return list(image)
        if isinstance(image, (types.GeneratorType, torch.utils.data.Dataset)):
            return image
        if image is None:
            raise ValueError(f"The {TASK} pipeline needs an image: `image` is missing.")
        if not has_labels:
            check_text_list(None, "candidate_labels", TASK)  # raises: the labels are missing
        images = as_image_list(image, "image")
        if images is None:
            return {"image": check_single_image(image, "image", TASK)}
        return [{"image": picture} for picture in images]

    def preprocess(self, inputs: Any, candidate_labels=None, hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE):
        if not isinstance(inputs, dict):
            inputs = {"image": inputs}
        unknown = set(inputs) - {"image", "candidate_labels", "hypothesis_template"}
        if unknown:
            raise ValueError(
                f"Unexpected keys {sorted(unknown)} in a {TASK} input; expected `image` and `candidate_labels`."
            )
        image = check_single_image(inputs.get("image"), "image", TASK)
        labels = inputs.get("candidate_labels", candidate_labels)
        labels = check_text_list(labels, "candidate_labels", TASK, split_commas=True, unique=True)
        template = _check_template(inputs.get("hypothesis_template", hypothesis_template))
        pixels = processor_outputs(self.processor, images=image)
        check_inputs_fit_model(self.model, pixels, text_argument="candidate_labels", image_argument="image")
        pixels = to_model_dtype(pixels, self.dtype)
        if self.dual_encoder:
            pixels = self.encode_query(pixels, "image")
        for index, label in enumerate(labels):
            tokens = processor_outputs(self.processor, text=template.format(label))
            check_inputs_fit_model(self.model, tokens, f"candidate_labels[{index}]", image_argument="image")
            if self.dual_encoder:
                tokens["candidate_key"] = candidate_key(tokens, "text")
            yield {
                **tokens,
                **pixels,
                "candidate_label": label,
                "is_last": index == len(labels) - 1,
            }

    def postprocess(self, model_outputs: list[dict], top_k: int | None = None):
        labels = [output["candidate_label"] for output in model_outputs]
        logits = torch.cat([output["match_logit"].reshape(-1) for output in model_outputs])
        scores = logits.softmax(-1).tolist()
        results = [{"label": label, "score": score} for label, score in zip(labels, scores)]
        results.sort(key=lambda entry: -entry["score"])
        return results if top_k is None else results[:top_k]


__all__ = ["DEFAULT_HYPOTHESIS_TEMPLATE", "ITMZeroShotImageClassificationPipeline"]
