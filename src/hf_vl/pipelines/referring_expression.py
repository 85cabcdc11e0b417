"""Referring expression comprehension: task `"vl-referring-expression"`.

Given an image, a referring expression ("the red triangle") and candidate regions (boxes proposed by a detector, or
precomputed region features), the pipeline scores every region with a referring-expression head (a matching score
per region, trained to regress the region's IoU with the referred box, e.g. `SwitchBertForReferringExpression`)
and returns the best region, its box in pixels in the format of transformers' `"object-detection"` pipeline.

Boxes become region features through a `hf_vl.regions.BoxFeatureExtractor` (crop, frame, describe) and the text
through the model's `hf_vl.regions.RegionProcessor`; both are saved in the model folder (the extractor in
`box_feature_extractor/`) and loaded with it. transformers 5 has no task of that name (its `"object-detection"`
and `"zero-shot-object-detection"` pipelines detect boxes from labels; this one chooses among given boxes).

The models are loaded with `hf_vl.AutoModelForReferringExpression` (transformers has no Auto class for the task),
which knows `SwitchBertForReferringExpression`.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.utils.data
from transformers.pipelines.base import Pipeline, build_pipeline_init_args
from transformers.utils import add_end_docstrings

from ..auto import AutoModelForReferringExpression
from ._utils import (
    auto_class_model_names,
    check_single_image,
    check_text,
    check_top_k,
    describe,
    load_rgb_image,
    model_class_names,
    processor_outputs,
    save_pipeline,
    takes_region_inputs,
    to_model_dtype,
    validate_text_input,
)


TASK = "vl-referring-expression"
_INPUT_KEYS = ("image", "expression", "boxes", "box_format", "visual_feats", "visual_pos", "visual_attention_mask",
               "image_size")  # fmt: skip



@add_end_docstrings(build_pipeline_init_args(has_processor=True))
class ReferringExpressionPipeline(Pipeline):
    """
    Picks the region of an image that a referring expression describes, among candidate regions.

    The model is a referring-expression head (`AutoModelForReferringExpression`, e.g.
    `SwitchBertForReferringExpression`); its per-region logit, through a sigmoid, is the predicted IoU of the region
    with the referred object: that is the `score`. Text goes through a `hf_vl.regions.RegionProcessor` and boxes
    through a `hf_vl.regions.BoxFeatureExtractor`; both load from the model folder (or pass `processor=` and
    `box_feature_extractor=`).

    Example:

    ```python
    >>> import hf_vl  # registers the task
    >>> from transformers import pipeline
    >>> refer = pipeline("vl-referring-expression", model="runs/switch-bert-refcoco-like")
    >>> refer("mosaic.png", expression="the red triangle", boxes=[[0, 0, 64, 64], [70, 8, 120, 50]])
    {'score': 0.91, 'box': {'xmin': 70, 'ymin': 8, 'xmax': 120, 'ymax': 50}, 'region_index': 1}
    >>> refer("mosaic.png", expression=["the red triangle", "the blue circle"], boxes=boxes)  # one result each
    >>> refer("mosaic.png", expression="the red triangle", boxes=boxes, top_k=3)  # the 3 best regions
    >>> refer(expression="the red triangle", visual_feats=feats, visual_pos=pos, image_size=(128, 128))
    ```

    Call arguments:
    - `image`: PIL image, path/URL or array (converted to RGB by hf_vl's one rule); or a dict / list of dicts with the
      keys below (one query each).
    - `expression`: a non-empty string, or a list of them (each one queried against the same image and regions, the
      regions encoded once).
    - `boxes`: the candidate boxes `(num_boxes, 4)` as `x1, y1, x2, y2`, in pixels (`box_format="pixel"`, the
      default) or normalised to [0, 1] (`box_format="normalized"`).
    - or precomputed regions instead of `image` + `boxes`: `visual_feats (num_regions, feat_dim)`, `visual_pos
      (num_regions, pos_dim)` (normalised boxes first), optional `visual_attention_mask (num_regions,)`, and
      `image_size=(width, height)` to express the returned box in pixels.
    - `top_k`: `None` (default) returns the best region as one dict; an int returns a list of the `top_k` best,
      best first (capped at the number of regions).
    - `batch_size`: queries per forward pass.

    Returns `{"score": float, "box": {"xmin", "ymin", "xmax", "ymax"} (ints, pixels), "region_index": int}` (the
    index of the region in `boxes` / `visual_feats`), a list of them with `top_k`, and one such result per query for
    several expressions or a list of dicts.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, box_feature_extractor: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        from hf_vl.regions import BoxFeatureExtractor, RegionProcessor

        folder = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
        if self.processor is None and folder and RegionProcessor.is_saved_in(folder):
            self.processor = RegionProcessor.from_pretrained(folder)
        if self.tokenizer is None and self.processor is not None:
            self.tokenizer = getattr(self.processor, "tokenizer", None)  # pads the text of batched queries
        if box_feature_extractor is None and folder and BoxFeatureExtractor.is_saved_in(folder):
            box_feature_extractor = BoxFeatureExtractor.from_pretrained(folder)
        self.box_feature_extractor = box_feature_extractor
        self._check_model_and_components()

    def _check_model_and_components(self) -> None:
        supported = auto_class_model_names(AutoModelForReferringExpression)
        is_head = bool(model_class_names(self.model) & set(supported)) or (
            type(self.model).__name__.endswith("ForReferringExpression") and takes_region_inputs(self.model)
        )
        if not is_head:
            raise ValueError(
                f"The {TASK} pipeline needs a referring-expression head scoring each region of `visual_feats` "
                f"(AutoModelForReferringExpression: {supported}); got {type(self.model).__name__}."
            )
        if self.processor is None or not hasattr(self.processor, "check_compatible"):
            raise ValueError(
                f"The {TASK} pipeline needs a `hf_vl.regions.RegionProcessor` (tokenizer + region checks): save one in "
                "the model folder (`processor.save_pretrained(folder)`) or pass `processor=`; got "
                f"{type(self.processor).__name__}."
            )
        self.processor.check_compatible(self.model.config)
        if self.box_feature_extractor is not None:
            if not hasattr(self.box_feature_extractor, "check_compatible"):
                raise ValueError(
                    "`box_feature_extractor` must be a hf_vl.regions.BoxFeatureExtractor, got "
                    f"{type(self.box_feature_extractor).__name__}."
                )
            self.box_feature_extractor.check_compatible(self.model.config)

    def save_pretrained(self, save_directory, **kwargs):
        """Save model, processor and box feature extractor so that `pipeline(TASK, model=save_directory)` reloads
        this pipeline."""
        from hf_vl.regions import BOX_FEATURE_EXTRACTOR_SUBFOLDER

        save_pipeline(self, save_directory, **kwargs)
        if self.box_feature_extractor is not None:
            import os

            self.box_feature_extractor.save_pretrained(os.path.join(save_directory, BOX_FEATURE_EXTRACTOR_SUBFOLDER))

    def _sanitize_parameters(self, top_k=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        return {}, {}, {"top_k": check_top_k(top_k)}

    # -- inputs ------------------------------------------------------------------------------------
    def __call__(
        self,
        image: Any = None,
        expression: str | list[str] | None = None,
        boxes: Any = None,
        box_format: str = "pixel",
        visual_feats: Any = None,
        visual_pos: Any = None,
        visual_attention_mask: Any = None,
        image_size: Any = None,
        **kwargs,
    ):
        """Find the region `expression` refers to; see the class docstring for the arguments."""
        if isinstance(image, dict) or (isinstance(image, (list, tuple)) and image and isinstance(image[0], dict)):
            given = [name for name, value in (("expression", expression), ("boxes", boxes),
                     ("visual_feats", visual_feats)) if value is not None]  # fmt: skip
            if given:
                raise ValueError(f"Pass {given} inside the input dict(s), not as well as keyword arguments.")
            return super().__call__(image if isinstance(image, dict) else list(image), **kwargs)
        if isinstance(image, (types.GeneratorType, torch.utils.data.Dataset)) and expression is None:
            return super().__call__(image, **kwargs)  # a stream of query dicts
        if expression is None:
            raise ValueError(f"The {TASK} pipeline needs `expression` (a non-empty string or a list of them).")
        expressions = validate_text_input(expression, "expression")
        regions = self._shared_regions(image, boxes, box_format, visual_feats, visual_pos, visual_attention_mask,
                                       image_size)  # fmt: skip
        queries = [{"expression": text, **regions} for text in expressions]
        return super().__call__(queries if isinstance(expression, (list, tuple)) else queries[0], **kwargs)

    def _shared_regions(self, image, boxes, box_format, visual_feats, visual_pos, visual_attention_mask, image_size):
        """The regions every expression of one call is scored against, encoded once."""
        if visual_feats is not None or visual_pos is not None:
            if image is not None or boxes is not None:
                raise ValueError(
                    "Pass either `image` + `boxes` or precomputed regions (`visual_feats`, `visual_pos`), not both."
                )
            return self._precomputed_regions(visual_feats, visual_pos, visual_attention_mask, image_size)
        if visual_attention_mask is not None or image_size is not None:
            raise ValueError("`visual_attention_mask` and `image_size` go with precomputed `visual_feats`/`visual_pos`.")
        return self._regions_from_boxes(image, boxes, box_format)

    def _regions_from_boxes(self, image: Any, boxes: Any, box_format: str) -> dict:
        image = load_rgb_image(check_single_image(image, "image", TASK), "image")
        if boxes is None:
            raise ValueError(
                f"The {TASK} pipeline needs candidate regions: `boxes` ((num_boxes, 4) x1, y1, x2, y2) with `image`, "
                "or precomputed `visual_feats` + `visual_pos`."
            )
        if self.box_feature_extractor is None:
            raise ValueError(
                f"`boxes` need a `box_feature_extractor` (hf_vl.regions.BoxFeatureExtractor) to become region "
                "features; none was saved with the model: pass `box_feature_extractor=` or precomputed `visual_feats`."
            )
        width, height = image.size if isinstance(image, PIL.Image.Image) else _array_size(image)
        regions = self.box_feature_extractor(image, boxes, box_format=box_format)
        unit = regions["visual_pos"][0, :, :4].double()
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        return {
            "visual_feats": regions["visual_feats"][0], "visual_pos": regions["visual_pos"][0],
            "visual_attention_mask": regions["visual_attention_mask"][0], "region_boxes": (unit * scale).float(),
        }  # fmt: skip

    @staticmethod
    def _precomputed_regions(visual_feats, visual_pos, visual_attention_mask, image_size) -> dict:
        if visual_feats is None or visual_pos is None:
            missing = "visual_feats" if visual_feats is None else "visual_pos"
            raise ValueError(f"Precomputed regions need both `visual_feats` and `visual_pos`: `{missing}` is missing.")
        if getattr(visual_feats, "ndim", None) != 2 or getattr(visual_pos, "ndim", None) != 2:
            raise ValueError(
                "Precomputed regions are ONE image's: `visual_feats (num_regions, feat_dim)` and `visual_pos "
                f"(num_regions, pos_dim)`; got {describe(visual_feats)} and {describe(visual_pos)}."
            )
        if image_size is None:
            raise ValueError(
                "`image_size` (width, height) is needed with precomputed regions to return the box in pixels."
            )
        if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
                or not all(isinstance(side, (int, np.integer)) and side > 0 for side in image_size)):  # fmt: skip
            raise ValueError(f"`image_size` must be (width, height), two positive ints; got {image_size!r}.")
        width, height = (int(side) for side in image_size)
        pos = torch.as_tensor(np.asarray(visual_pos), dtype=torch.float64)
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        return {
            "visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": visual_attention_mask,
            "region_boxes": (pos[:, :4].clamp(0, 1) * scale).float(),
        }  # fmt: skip

    def preprocess(self, inputs: dict) -> dict:
        if not isinstance(inputs, dict):
            raise TypeError(f"Each {TASK} input must be a dict with `image`, `expression` and `boxes`; got "
                            f"{describe(inputs)}.")  # fmt: skip
        if "region_boxes" not in inputs:  # a user's query dict
            unknown = set(inputs) - set(_INPUT_KEYS)
            if unknown:
                raise ValueError(f"Unexpected keys {sorted(unknown)} in a {TASK} input; expected {list(_INPUT_KEYS)}.")
            regions = self._shared_regions(
                inputs.get("image"), inputs.get("boxes"), inputs.get("box_format", "pixel"),
                inputs.get("visual_feats"), inputs.get("visual_pos"), inputs.get("visual_attention_mask"),
                inputs.get("image_size"),
            )  # fmt: skip
            inputs = {"expression": inputs.get("expression"), **regions}
        expression = check_text(inputs["expression"], "expression", TASK)
        model_inputs = processor_outputs(
            self.processor, text=expression, visual_feats=inputs["visual_feats"], visual_pos=inputs["visual_pos"],
            visual_attention_mask=inputs["visual_attention_mask"],
        )  # fmt: skip
        model_inputs = to_model_dtype(model_inputs, self.dtype)
        model_inputs["region_boxes"] = inputs["region_boxes"][None]  # (1, N, 4) pixels, kept for postprocess
        return model_inputs

    def _forward(self, model_inputs: dict) -> dict:
        region_boxes = model_inputs.pop("region_boxes")
        outputs = self.model(**model_inputs)
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        mask = model_inputs["visual_attention_mask"]
        if not isinstance(logits, torch.Tensor) or logits.shape != mask.shape:
            raise ValueError(
                f"The {TASK} pipeline needs `logits (batch_size, num_regions)` = {tuple(mask.shape)} from the model; "
                f"{type(self.model).__name__} returned {describe(logits)}."
            )
        return {"logits": logits, "visual_attention_mask": mask, "region_boxes": region_boxes}

    def postprocess(self, model_outputs: dict, top_k: int | None = None):
        valid = model_outputs["visual_attention_mask"][0].bool()
        indices = torch.nonzero(valid).flatten()  # padded regions (batched queries) left out
        scores = model_outputs["logits"][0].float()[indices].sigmoid()
        boxes = model_outputs["region_boxes"][0][indices]
        order = scores.argsort(descending=True, stable=True)
        keep = order[: 1 if top_k is None else min(top_k, len(order))]
        results = [
            {
                "score": float(scores[position]),
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (int(round(float(v))) for v in boxes[position]))),
                "region_index": int(indices[position]),
            }
            for position in keep.tolist()
        ]
        return results[0] if top_k is None else results


def _array_size(image: Any) -> tuple[int, int]:
    """(width, height) of an (H, W), (H, W, C) or (C, H, W) array / tensor (channels: 1, 3 or 4)."""
    shape = tuple(image.shape)
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return shape[2], shape[1]
    return shape[1], shape[0]


__all__ = [
    "AutoModelForReferringExpression",
    "ReferringExpressionPipeline",
    "register_referring_expression_heads",
]
