"""Visual question answering over an answer vocabulary: task `"vl-question-answering"` (alias `"vqa"`).

transformers v5 removed its `"visual-question-answering"` pipeline (and the name is refused by `pipeline()`), so
hf_vl registers this classifier-style VQA pipeline under its own name. It works with every model that
`AutoModelForVisualQuestionAnswering` loads and that returns `logits (batch_size, num_labels)` over
`config.id2label` (METER's `MeterForQuestionAnswering`, ViLT, ...).

This file imports only torch, the public `transformers` API and its sibling `_utils.py`, so
`pipe.save_pretrained(folder, save_pipeline_code=True)` can ship it as remote code.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.utils.data
from transformers import AutoModelForVisualQuestionAnswering
from transformers.pipelines.base import Pipeline, build_pipeline_init_args
from transformers.utils import add_end_docstrings

from ._utils import (
    as_image_list,
    auto_class_model_names,
    check_single_image,
    check_text,
    check_top_k,
    describe,
    model_class_names,
    processor_outputs,
    require_processor,
    save_pipeline,
    to_model_dtype,
)


TASK = "vl-question-answering"
_FUNCTIONS = ("sigmoid", "softmax", "none")


@add_end_docstrings(build_pipeline_init_args(has_processor=True))
class VLQuestionAnsweringPipeline(Pipeline):
    """
    Answers a question about an image by classifying over the model's answer vocabulary (`config.id2label`).

    Scores are `sigmoid(logits)` for multi-label VQA heads (METER, ViLT: soft-score BCE training, the default) and
    `softmax(logits)` when `config.problem_type == "single_label_classification"`; `function_to_apply` overrides.

    Example:

    ```python
    >>> import hf_vl  # registers the task
    >>> from transformers import pipeline
    >>> vqa = pipeline("vl-question-answering", model="path/to/meter-vqa")
    >>> vqa(image="shape.png", question="what color is the shape?", top_k=2)
    [{'answer': 'blue', 'score': 0.93}, {'answer': 'teal', 'score': 0.05}]
    >>> vqa(image=["a.png", "b.png"], question="what shape is it?")  # one list of answers per image
    >>> vqa([{"image": "a.png", "question": "is it red?"}, {"image": "b.png", "question": "what shape is it?"}])
    ```

    Call arguments: `image` (PIL image, path/URL, numpy array, or a list of them, or a `{"image", "question"}` dict or
    a list of dicts), `question` (string or list of strings; one question is asked of every image, one image is asked
    every question, two lists are paired), `top_k` (default 5, capped at the number of answers),
    `function_to_apply` (`"sigmoid"`, `"softmax"` or `"none"`), `batch_size` (examples per forward pass).

    Returns a list of `{"answer": str, "score": float}` sorted by decreasing score, or one such list per example for
    batched inputs.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_processor(self, TASK)
        supported = auto_class_model_names(AutoModelForVisualQuestionAnswering)
        if not model_class_names(self.model) & set(supported):
            raise ValueError(
                f"The {TASK} pipeline needs a visual question answering head (a model that "
                f"`AutoModelForVisualQuestionAnswering` loads, returning `logits` over `config.id2label`): one of "
                f"{supported}; got {type(self.model).__name__}."
            )

    def save_pretrained(self, save_directory, save_pipeline_code: bool = False, **kwargs):
        """Save model and processor; `save_pipeline_code=True` also ships this file as a custom pipeline."""
        save_pipeline(self, save_directory, save_pipeline_code=save_pipeline_code, **kwargs)

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        postprocess_params = {}
        if top_k is not None:
            postprocess_params["top_k"] = check_top_k(top_k)
        if function_to_apply is not None:
            if function_to_apply not in _FUNCTIONS:
                raise ValueError(f"`function_to_apply` must be one of {_FUNCTIONS}; got {function_to_apply!r}.")
            postprocess_params["function_to_apply"] = function_to_apply
        return {}, {}, postprocess_params

    def __call__(self, image: Any = None, question: str | list[str] | None = None, **kwargs):
        """Answer `question` about `image`. See the class docstring for the accepted inputs."""
        return super().__call__(self._build_inputs(image, question), **kwargs)

    @staticmethod
    def _build_inputs(image: Any, question: Any) -> Any:
        if isinstance(image, dict):
            if question is not None:
                raise ValueError(
                    "Pass the question inside the `{'image', 'question'}` dict or as `question=`, not both."
                )
            return image
        if isinstance(image, (list, tuple)) and image and all(isinstance(entry, dict) for entry in image):
            if question is not None:
                raise ValueError(
                    "Pass the questions inside the `{'image', 'question'}` dicts or as `question=`, not both."
                )
            return list(image)
        if question is None and isinstance(image, (types.GeneratorType, torch.utils.data.Dataset)):
            return image  # a dataset / generator of {"image", "question"} dicts, streamed by `Pipeline.__call__`
        if image is None:
            raise ValueError(f"The {TASK} pipeline needs an image: `image` is missing.")
        if question is None:
            raise ValueError(f"The {TASK} pipeline needs a question: `question` is missing.")
        images = as_image_list(image, "image")
        questions = list(question) if isinstance(question, (list, tuple)) else None
        if questions is not None and len(questions) == 0:
            raise ValueError("`question` is an empty list: pass at least one question.")
        if images is None and questions is None:
            return {"image": image, "question": question}
        if images is None:
            return [{"image": image, "question": text} for text in questions]
        if questions is None:
            return [{"image": picture, "question": question} for picture in images]
        if len(images) != len(questions):
            raise ValueError(
                f"`image` and `question` are lists of different lengths ({len(images)} and {len(questions)}); pass "
                "one question per image, or a single question (asked of every image) or a single image."
            )
        return [{"image": picture, "question": text} for picture, text in zip(images, questions)]

    def preprocess(self, inputs: dict):
        if not isinstance(inputs, dict):
            raise TypeError(f"Each {TASK} input must be a dict with `image` and `question`; got {describe(inputs)}.")
        unknown = set(inputs) - {"image", "question"}
        if unknown:
            raise ValueError(f"Unexpected keys {sorted(unknown)} in a {TASK} input; expected `image` and `question`.")
        image = check_single_image(inputs.get("image"), "image", TASK)
        question = check_text(inputs.get("question"), "question", TASK)
        model_inputs = processor_outputs(self.processor, images=image, text=question)
        return to_model_dtype(model_inputs, self.dtype)

    def _forward(self, model_inputs: dict):
        outputs = self.model(**model_inputs)
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError(
                f"The {TASK} pipeline needs a model returning `logits` of shape (batch_size, num_labels); "
                f"{type(self.model).__name__} returned {describe(logits)}."
            )
        return {"logits": logits}

    def postprocess(self, model_outputs: dict, top_k: int = 5, function_to_apply: str | None = None):
        logits = model_outputs["logits"][0].float()
        id2label = self.model.config.id2label
        if logits.shape[-1] != len(id2label):
            raise ValueError(
                f"The model returned {logits.shape[-1]} answer logits but `config.id2label` has {len(id2label)} "
                "entries; set `id2label` to the answer vocabulary."
            )
        if function_to_apply is None:
            single_label = getattr(self.model.config, "problem_type", None) == "single_label_classification"
            function_to_apply = "softmax" if single_label else "sigmoid"
        if function_to_apply == "sigmoid":
            scores = logits.sigmoid()
        elif function_to_apply == "softmax":
            scores = logits.softmax(-1)
        else:
            scores = logits
        top_k = min(top_k, scores.shape[-1])
        values, indices = scores.topk(top_k)
        return [
            {"answer": id2label[index], "score": value}
            for value, index in zip(values.tolist(), indices.tolist())
        ]


__all__ = ["VLQuestionAnsweringPipeline"]
