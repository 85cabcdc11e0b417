"""Visual question answering over an answer vocabulary: task `"vl-question-answering"` (alias `"vqa"`).

transformers v5 removed its `"visual-question-answering"` pipeline (and the name is refused by `pipeline()`), so
hf_vl registers this classifier-style VQA pipeline under its own name. It works with every model that
`AutoModelForVisualQuestionAnswering` loads and that returns `logits (batch_size, num_labels)` over
`config.id2label` (METER's `MeterForQuestionAnswering`, ViLT, ...), and with region-based question-answering heads
(a `...ForQuestionAnswering` whose forward takes LXMERT's `visual_feats` / `visual_pos` / `visual_attention_mask`,
e.g. transformers' `LxmertForQuestionAnswering`) driven by a `hf_vl.regions.RegionProcessor`: from raw images (its
feature extractor makes the regions) or from precomputed region features.

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
    REGION_INPUT_KEYS,
    as_image_list,
    auto_class_model_names,
    check_inputs_fit_model,
    check_single_image,
    check_text,
    check_top_k,
    describe,
    is_single_label_qa_head,
    model_class_names,
    num_answers,
    processor_outputs,
    qa_logits,
    require_processor,
    save_pipeline,
    takes_region_inputs,
    to_model_dtype,
)


TASK = "vl-question-answering"
_FUNCTIONS = ("sigmoid", "softmax", "none")


@add_end_docstrings(build_pipeline_init_args(has_processor=True))
class VLQuestionAnsweringPipeline(Pipeline):
    """
    Answers a question about an image by classifying over the model's answer vocabulary (`config.id2label`).

    Scores are `softmax(logits)` for single-label heads, `sigmoid(logits)` for multi-label ones; `function_to_apply`
    overrides. Single-label means trained with cross-entropy over answer indices: LXMERT's QA head
    (`LxmertForQuestionAnswering` and subclasses, whatever `problem_type` says) and any model with
    `config.problem_type == "single_label_classification"`. Everything else (METER, ViLT: soft-score BCE) is
    multi-label. See `_utils.is_single_label_qa_head`.

    Region-based models (forward takes `visual_feats`, `visual_pos`, `visual_attention_mask`) need a
    `hf_vl.regions.RegionProcessor` (`pipeline(..., processor=RegionProcessor.from_pretrained(folder))`; its
    extractor must fit `config.visual_feat_dim` / `visual_pos_dim`). They answer from an image (run through the
    processor's feature extractor) or from precomputed regions:
    `vqa(question=..., visual_feats=(N, feat_dim), visual_pos=(N, pos_dim), visual_attention_mask=(N,) or None)` for
    one image, `(B, N, ...)` arrays or lists of per-image arrays for several. The answers are `config.id2label`;
    LXMERT sizes its head with `config.num_qa_labels`, which must equal `len(config.id2label)`.

    Example:

    ```python
    >>> import hf_vl  # registers the task
    >>> from transformers import pipeline
    >>> vqa = pipeline("vl-question-answering", model="path/to/meter-vqa")
    >>> vqa(image="shape.png", question="what color is the shape?", top_k=2)
    [{'answer': 'blue', 'score': 0.93}, {'answer': 'teal', 'score': 0.05}]
    >>> vqa(image=["a.png", "b.png"], question="what shape is it?")  # one list of answers per image
    >>> vqa([{"image": "a.png", "question": "is it red?"}, {"image": "b.png", "question": "what shape is it?"}])
    >>> lxmert_vqa = pipeline("vl-question-answering", model=lxmert_model, processor=region_processor)
    >>> lxmert_vqa(image="shape.png", question="what shape is it?")  # regions from the processor's extractor
    >>> lxmert_vqa(question="what shape is it?", visual_feats=feats, visual_pos=boxes)  # precomputed (N, D), (N, 4)
    ```

    Call arguments: `image` (PIL image, path/URL, numpy array, or a list of them, or a `{"image", "question"}` dict or
    a list of dicts), `question` (string or list of strings; one question is asked of every image, one image is asked
    every question, two lists are paired), `visual_feats` / `visual_pos` / `visual_attention_mask` (region models:
    precomputed regions instead of `image`; a dict input may carry them with `question`), `top_k` (default 5, capped
    at the number of answers),
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
        self.region_model = takes_region_inputs(self.model) and type(self.model).__name__.endswith(
            "ForQuestionAnswering"
        )
        supported = auto_class_model_names(AutoModelForVisualQuestionAnswering)
        if not self.region_model and not model_class_names(self.model) & set(supported):
            raise ValueError(
                f"The {TASK} pipeline needs a visual question answering head (a model that "
                f"`AutoModelForVisualQuestionAnswering` loads, returning `logits` over `config.id2label`, or a "
                f"region-based `...ForQuestionAnswering` taking `visual_feats`): one of {supported}, "
                f"LxmertForQuestionAnswering, ...; got {type(self.model).__name__}."
            )
        config = self.model.config
        self._check_checkpoint_has_qa_head(supported)
        if num_answers(config) != len(config.id2label):
            raise ValueError(
                f"{type(self.model).__name__} has {num_answers(config)} answers (`config.num_qa_labels`) but "
                f"`config.id2label` has {len(config.id2label)} entries; set `model.config.id2label` to the answer "
                "vocabulary (one label per answer index)."
            )
        if self.region_model:
            self._check_region_processor()

    def _check_checkpoint_has_qa_head(self, supported: list[str]) -> None:
        """Refuse a model loaded from a checkpoint saved without a question answering head (a pre-training or
        retrieval checkpoint loaded as `...ForQuestionAnswering`): its answer classifier is freshly initialised, so its
        answers would be noise. The saved classes are `config.architectures`."""
        architectures = list(getattr(self.model.config, "architectures", None) or [])
        if not architectures or type(self.model).__name__ in architectures:
            return
        if any(name in supported or name.endswith("ForQuestionAnswering") for name in architectures):
            return
        raise ValueError(
            f"`model` is a {type(self.model).__name__} loaded from a checkpoint saved as {architectures}, which has no "
            f"question answering head: its answer classifier is randomly initialised, so the {TASK} pipeline would "
            "answer at random. Use a checkpoint fine-tuned for VQA; if you trained this head yourself, save it with "
            "`model.save_pretrained(folder)` (which records `config.architectures`) and load that folder."
        )

    def _check_region_processor(self) -> None:
        check_compatible = getattr(self.processor, "check_compatible", None)
        if check_compatible is None:
            raise ValueError(
                f"{type(self.model).__name__} reads detector regions (`visual_feats`, `visual_pos`), so the {TASK} "
                f"pipeline needs a `hf_vl.regions.RegionProcessor` as `processor=`; got "
                f"{type(self.processor).__name__}."
            )
        check_compatible(self.model.config)

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

    def __call__(
        self,
        image: Any = None,
        question: str | list[str] | None = None,
        visual_feats: Any = None,
        visual_pos: Any = None,
        visual_attention_mask: Any = None,
        **kwargs,
    ):
        """Answer `question` about `image` (or about precomputed regions). See the class docstring for the inputs."""
        regions = dict(visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask)
        if any(value is not None for value in regions.values()):
            inputs = self._build_region_inputs(image, question, **regions)
        else:
            inputs = self._build_inputs(image, question)
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _build_region_inputs(
        image: Any, question: Any, visual_feats: Any, visual_pos: Any, visual_attention_mask: Any
    ) -> Any:
        """Precomputed regions (one image: `(N, D)`; several: `(B, N, D)` or a list of `(N_i, D)`) + question(s) ->
        one `{"question", "visual_feats", "visual_pos", "visual_attention_mask"}` dict per example."""
        if image is not None:
            raise ValueError(
                "Pass either `image` or precomputed regions (`visual_feats`, `visual_pos`, `visual_attention_mask`), "
                "not both."
            )
        if visual_feats is None or visual_pos is None:
            missing = "visual_feats" if visual_feats is None else "visual_pos"
            raise ValueError(f"Precomputed regions need both `visual_feats` and `visual_pos`: `{missing}` is missing.")
        if question is None:
            raise ValueError(f"The {TASK} pipeline needs a question: `question` is missing.")
        per_image = _split_regions(visual_feats, visual_pos, visual_attention_mask)
        questions = list(question) if isinstance(question, (list, tuple)) else None
        if questions is not None and len(questions) == 0:
            raise ValueError("`question` is an empty list: pass at least one question.")
        if per_image is None:  # one image
            single = dict(visual_feats=visual_feats, visual_pos=visual_pos, visual_attention_mask=visual_attention_mask)
            if questions is None:
                return {"question": question, **single}
            return [{"question": text, **single} for text in questions]
        if questions is None:
            return [{"question": question, **regions} for regions in per_image]
        if len(per_image) != len(questions):
            raise ValueError(
                f"`visual_feats` holds {len(per_image)} images but `question` has {len(questions)} questions; pass one "
                "question per image, or a single question (asked of every image)."
            )
        return [{"question": text, **regions} for regions, text in zip(per_image, questions)]

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
        if any(key in inputs for key in REGION_INPUT_KEYS):
            return self._preprocess_regions(inputs)
        unknown = set(inputs) - {"image", "question"}
        if unknown:
            raise ValueError(
                f"Unexpected keys {sorted(unknown)} in a {TASK} input; expected `image` and `question` (or, for region "
                f"models, `question` with {list(REGION_INPUT_KEYS)})."
            )
        image = check_single_image(inputs.get("image"), "image", TASK)
        question = check_text(inputs.get("question"), "question", TASK)
        model_inputs = processor_outputs(self.processor, images=image, text=question)
        check_inputs_fit_model(self.model, model_inputs, text_argument="question", image_argument="image")
        return to_model_dtype(model_inputs, self.dtype)

    def _preprocess_regions(self, inputs: dict) -> dict:
        unknown = set(inputs) - {"question", *REGION_INPUT_KEYS}
        if unknown:
            raise ValueError(
                f"Unexpected keys {sorted(unknown)} in a {TASK} input with precomputed regions; expected `question`, "
                f"{list(REGION_INPUT_KEYS)} (pass `image` or regions, not both)."
            )
        if not self.region_model:
            raise ValueError(
                f"{type(self.model).__name__} reads pixels, not precomputed regions: pass `image=` instead of "
                "`visual_feats` / `visual_pos`."
            )
        for key in ("visual_feats", "visual_pos"):
            if inputs.get(key) is None:
                raise ValueError(f"A {TASK} input with precomputed regions needs `{key}`.")
        question = check_text(inputs.get("question"), "question", TASK)
        feats = inputs["visual_feats"]
        if isinstance(feats, (list, tuple)) or getattr(feats, "ndim", 2) != 2:
            raise ValueError(
                f"Each {TASK} input holds the regions of ONE image: `visual_feats` of shape (num_regions, feat_dim); "
                f"got {describe(feats)}."
            )
        model_inputs = processor_outputs(
            self.processor, text=question, visual_feats=feats, visual_pos=inputs["visual_pos"],
            visual_attention_mask=inputs.get("visual_attention_mask"),
        )  # fmt: skip
        check_inputs_fit_model(self.model, model_inputs, text_argument="question", image_argument="image")
        return to_model_dtype(model_inputs, self.dtype)

    def _forward(self, model_inputs: dict):
        outputs = self.model(**model_inputs)
        logits = qa_logits(outputs)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError(
                f"The {TASK} pipeline needs a model returning `logits` (or LXMERT's `question_answering_score`) of "
                f"shape (batch_size, num_labels); {type(self.model).__name__} returned {describe(logits)}."
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
            function_to_apply = "softmax" if is_single_label_qa_head(self.model) else "sigmoid"
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


def _split_regions(visual_feats: Any, visual_pos: Any, visual_attention_mask: Any) -> list[dict] | None:
    """Several images' regions -> one dict per image; `None` when the arrays hold one image (`(N, D)`)."""
    if isinstance(visual_feats, (list, tuple)):
        if not visual_feats:
            raise ValueError("`visual_feats` is an empty list: pass the regions of at least one image.")
        count = len(visual_feats)
        masks = [None] * count if visual_attention_mask is None else visual_attention_mask
        for name, value in (("visual_pos", visual_pos), ("visual_attention_mask", masks)):
            if not isinstance(value, (list, tuple)) or len(value) != count:
                raise ValueError(
                    f"`visual_feats` is a list of {count} images' regions, so `{name}` must be a list of {count} too; "
                    f"got {describe(value)}."
                )
        return [
            {"visual_feats": feats, "visual_pos": pos, "visual_attention_mask": mask}
            for feats, pos, mask in zip(visual_feats, visual_pos, masks)
        ]
    ndim = getattr(visual_feats, "ndim", None)
    if ndim == 2:
        return None
    if ndim != 3:
        raise ValueError(
            "`visual_feats` must be (num_regions, feat_dim) for one image, (batch_size, num_regions, feat_dim) or a "
            f"list of per-image arrays; got {describe(visual_feats)}."
        )
    batch_size = visual_feats.shape[0]
    for name, value in (("visual_pos", visual_pos), ("visual_attention_mask", visual_attention_mask)):
        if value is not None and (getattr(value, "ndim", None) is None or value.shape[0] != batch_size):
            raise ValueError(
                f"`visual_feats` holds {batch_size} images, so `{name}` must have batch size {batch_size}; got "
                f"{describe(value)}."
            )
    return [
        {
            "visual_feats": visual_feats[index],
            "visual_pos": visual_pos[index],
            "visual_attention_mask": None if visual_attention_mask is None else visual_attention_mask[index],
        }
        for index in range(batch_size)
    ]


__all__ = ["VLQuestionAnsweringPipeline", "is_single_label_qa_head"]
