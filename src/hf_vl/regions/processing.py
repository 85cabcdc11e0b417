"""``RegionProcessor``: text + detector-style regions for the region-based models.

The region models (adaptive LXMERT, InterBERT, Switch-BERT, and transformers' ``LxmertForQuestionAnswering``)
read ``input_ids``, ``attention_mask``, ``token_type_ids`` and LXMERT's region inputs ``visual_feats (B, N,
feat_dim)``, ``visual_pos (B, N, pos_dim)`` (boxes normalised to ``[0, 1]``) and ``visual_attention_mask (B, N)``.
A :class:`RegionProcessor` makes all of them from one of two region sources:

* raw images (``images=``), run through its ``feature_extractor`` (a
  :class:`~hf_vl.regions.extractors.RegionFeatureExtractor`: the grid extractor by default, or a DETR-style
  detector);
* precomputed regions (``visual_feats=``, ``visual_pos=``, optional ``visual_attention_mask=``), e.g. columns
  from :func:`~hf_vl.regions.formats.load_region_features` or
  :func:`~hf_vl.regions.extract.extract_region_features`, checked with
  :func:`~hf_vl.regions.boxes.validate_region_inputs` (finite features, boxes in ``[0, 1]``, ``feat_dim`` /
  ``pos_dim`` of the model).

It is a plain class, not a ``transformers.ProcessorMixin``: the region source is an ``nn.Module`` with weights,
which ``ProcessorMixin`` cannot hold. It has the same surface (``__call__``, ``save_pretrained``,
``from_pretrained``, ``model_input_names``, ``decode``), so the ``Trainer`` (as a collator's processor) and the
``"vl-question-answering"`` pipeline (``processor=``) use it directly; ``AutoProcessor`` does not load it (use
``RegionProcessor.from_pretrained(folder)``).

Example:
    >>> from transformers import AutoTokenizer
    >>> from hf_vl.training import local_pretrained_path
    >>> from PIL import Image
    >>> processor = RegionProcessor(AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2")))
    >>> batch = processor(images=[Image.new("RGB", (64, 64), "red")], text=["what color is the shape?"])
    >>> batch["visual_feats"].shape, batch["visual_pos"].shape, batch["input_ids"].shape
    (torch.Size([1, 16, 31]), torch.Size([1, 16, 4]), torch.Size([1, 8]))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from ..pipelines._utils import describe, flatten_images, load_rgb_image, validate_text_input
from .boxes import pad_regions, validate_region_inputs
from .extractors import GridFeatureExtractor, RegionFeatureExtractor, load_region_extractor

__all__ = ["REGION_EXTRACTOR_SUBFOLDER", "REGION_PROCESSOR_CONFIG_NAME", "RegionProcessor"]

#: File that marks a ``RegionProcessor.save_pretrained`` folder and holds its settings.
REGION_PROCESSOR_CONFIG_NAME = "region_processor_config.json"
#: Subfolder that holds the feature extractor's config and weights (its ``model.safetensors`` / ``config.json``
#: would otherwise collide with the model's own files when model and processor share a folder).
REGION_EXTRACTOR_SUBFOLDER = "region_extractor"

_REGION_KEYS = ("visual_feats", "visual_pos", "visual_attention_mask")


def _check_dim(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int or None, got {value!r}")
    return int(value)


def _check_text(text: Any) -> int | None:
    """Validate ``text`` (the shared text rule, :func:`hf_vl.pipelines._utils.validate_text_input`); return the
    number of examples (``None`` when no text is given)."""
    return None if text is None else len(validate_text_input(text, "text"))


def _image_list(images: Any) -> list[Any]:
    """``images`` -> a list of single images (the shared image rule, :func:`hf_vl.pipelines._utils.flatten_images`),
    paths / URLs opened and PIL images converted to RGB by the shared rule
    (:func:`hf_vl.pipelines._utils.convert_image_to_rgb`: transparency over white, 16-bit scaled to 8 bits)."""
    flat = flatten_images(images, "images")
    if flat.per_example is not None:
        raise TypeError(
            f"`images` must be one image or a list of images (one per example); got {describe(images)} holding "
            "several images per example, which the region processor does not take."
        )
    return [load_rgb_image(image, name) for image, name in zip(flat.images, flat.names)]


def _as_tensor(value: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(dtype)
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"`{name}` could not be read as one array ({error}); pass a list of per-image arrays to pad regions"
        ) from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(
            f"`{name}` must hold numbers (a numpy array, torch tensor or nested lists), got dtype {array.dtype}"
        )
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def _is_per_image_list(value: Any) -> bool:
    """A list of per-image ``(N_i, D)`` arrays (regions may differ in number), not one nested-list batch."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 2 for item in value)
    )


def _precomputed_regions(visual_feats: Any, visual_pos: Any, visual_attention_mask: Any) -> dict[str, torch.Tensor]:
    """Precomputed regions in any accepted layout -> ``(B, N, D)``, ``(B, N, P)`` float32, ``(B, N)`` int64."""
    if _is_per_image_list(visual_feats):
        if not _is_per_image_list(visual_pos) or len(visual_pos) != len(visual_feats):
            raise ValueError(
                f"`visual_feats` is a list of {len(visual_feats)} per-image arrays, so `visual_pos` must be a list of "
                f"as many (num_regions, pos_dim) arrays; got {_describe(visual_pos)}"
            )
        if visual_attention_mask is not None:
            raise ValueError(
                "`visual_attention_mask` must be None when `visual_feats` is a list of per-image arrays: the regions "
                "are padded to the longest image and the mask is built from that"
            )
        max_regions = max(int(feats.shape[0]) for feats in visual_feats)
        padded = [
            pad_regions(_as_tensor(feats, f"visual_feats[{i}]", torch.float32),
                        _as_tensor(pos, f"visual_pos[{i}]", torch.float32), max(max_regions, 1))
            for i, (feats, pos) in enumerate(zip(visual_feats, visual_pos))
        ]  # fmt: skip
        feats, pos, mask = (torch.stack(parts) for parts in zip(*padded))
        return {"visual_feats": feats, "visual_pos": pos, "visual_attention_mask": mask}
    feats = _as_tensor(visual_feats, "visual_feats", torch.float32)
    pos = _as_tensor(visual_pos, "visual_pos", torch.float32)
    mask = None
    if visual_attention_mask is not None:
        mask = _as_tensor(visual_attention_mask, "visual_attention_mask", torch.long)
    if feats.ndim == 2:  # one image: (N, D) -> (1, N, D)
        feats = feats[None]
        pos = pos[None] if pos.ndim == 2 else pos
        mask = mask[None] if mask is not None and mask.ndim == 1 else mask
    if mask is None and feats.ndim == 3:
        mask = torch.ones(feats.shape[:2], dtype=torch.long)
    return {"visual_feats": feats, "visual_pos": pos, "visual_attention_mask": mask}


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)} items"
    return type(value).__name__


def _model_config_field(model_config: Any, name: str) -> Any:
    if isinstance(model_config, Mapping):
        return model_config.get(name)
    return getattr(model_config, name, None)


class RegionProcessor:
    """Tokenizer + region source (raw images through a feature extractor, or precomputed regions).

    Args:
        tokenizer: any ``transformers`` tokenizer (e.g. the uncased WordPiece of all-MiniLM-L6-v2 / BERT).
        feature_extractor: a :class:`~hf_vl.regions.extractors.RegionFeatureExtractor` that turns images into
            regions; ``"grid"`` (the default) builds ``GridFeatureExtractor(pos_dim=pos_dim or 4)`` (pixel
            descriptors, made for easy-VQA-like images); ``None`` makes a processor for precomputed regions only
            (``images=`` then raises).
        feat_dim, pos_dim: the region sizes the model expects; precomputed regions are checked against them.
            Default: the extractor's ``feature_dim`` / ``pos_dim`` (they must agree with it when both are given),
            or no check without an extractor.

    Call ``processor(images=..., text=...)`` or ``processor(text=..., visual_feats=..., visual_pos=...,
    visual_attention_mask=None)``; see :meth:`__call__`.

    Example:
        >>> import numpy as np
        >>> from transformers import AutoTokenizer
        >>> from hf_vl.training import local_pretrained_path
        >>> tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))
        >>> processor = RegionProcessor(tokenizer, feature_extractor=None, feat_dim=8, pos_dim=4)
        >>> batch = processor(text="is it red?", visual_feats=np.zeros((36, 8)), visual_pos=np.zeros((36, 4)))
        >>> batch["visual_feats"].shape, batch["visual_attention_mask"].shape
        (torch.Size([1, 36, 8]), torch.Size([1, 36]))
    """

    attributes = ("tokenizer", "feature_extractor")
    config_name = REGION_PROCESSOR_CONFIG_NAME

    def __init__(
        self,
        tokenizer: Any,
        feature_extractor: RegionFeatureExtractor | str | None = "grid",
        feat_dim: int | None = None,
        pos_dim: int | None = None,
    ):
        if tokenizer is None or not callable(tokenizer):
            raise ValueError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}")
        feat_dim, pos_dim = _check_dim(feat_dim, "feat_dim"), _check_dim(pos_dim, "pos_dim")
        if isinstance(feature_extractor, str):
            if feature_extractor != "grid":
                raise ValueError(
                    f"`feature_extractor` must be a RegionFeatureExtractor, 'grid' or None, got {feature_extractor!r}"
                )
            grid_kwargs = {"pos_dim": pos_dim or 4}
            if feat_dim is not None:
                grid_kwargs["projection_dim"] = feat_dim
            feature_extractor = GridFeatureExtractor(**grid_kwargs)
        elif feature_extractor is not None and not isinstance(feature_extractor, RegionFeatureExtractor):
            raise ValueError(
                "`feature_extractor` must be a hf_vl.regions RegionFeatureExtractor (GridFeatureExtractor, "
                f"DetectorFeatureExtractor), 'grid' or None, got {type(feature_extractor).__name__}"
            )
        if feature_extractor is not None:
            for name, given, actual in (("feat_dim", feat_dim, feature_extractor.feature_dim),
                                        ("pos_dim", pos_dim, feature_extractor.pos_dim)):  # fmt: skip
                if given is not None and given != actual:
                    raise ValueError(
                        f"`{name}`={given} does not match the feature extractor's {actual} "
                        f"({type(feature_extractor).__name__}); leave `{name}` unset to use the extractor's"
                    )
            feat_dim, pos_dim = feature_extractor.feature_dim, feature_extractor.pos_dim
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.feat_dim = feat_dim
        self.pos_dim = pos_dim

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model_config: Any, tokenizer: Any, **grid_kwargs: Any) -> RegionProcessor:
        """A processor with a :class:`GridFeatureExtractor` sized for ``model_config`` (``visual_feat_dim``,
        ``visual_pos_dim``); ``grid_kwargs`` go to the extractor (``grid_size``, ``image_size``, ...)."""
        return cls(tokenizer, GridFeatureExtractor.for_model(model_config, **grid_kwargs))

    # -- inputs ------------------------------------------------------------------------------------
    @property
    def model_input_names(self) -> list[str]:
        names = list(getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        return names + [name for name in _REGION_KEYS if name not in names]

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        visual_feats: Any = None,
        visual_pos: Any = None,
        visual_attention_mask: Any = None,
        padding: bool | str = "longest",
        truncation: bool | str = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **tokenizer_kwargs: Any,
    ) -> BatchFeature:
        """Tokenize ``text`` and produce the regions of ``images`` or check the precomputed ones.

        Args:
            images: one image or a list (PIL, path / URL, ``(H, W[, C])`` array or ``(C, H, W)`` tensor, or a
                ``(B, C, H, W)`` batch), run through ``feature_extractor`` without gradients.
            text: one string or a list of strings, one per image (or None: region inputs only).
            visual_feats: precomputed features ``(B, N, feat_dim)``, ``(N, feat_dim)`` for one image, or a list of
                per-image ``(N_i, feat_dim)`` arrays (padded to the longest, with the mask built to match).
            visual_pos: the matching normalised boxes ``(B, N, pos_dim)`` / ``(N, pos_dim)`` / list.
            visual_attention_mask: ``(B, N)`` / ``(N,)`` 0/1 mask; default all ones.
            padding, truncation, max_length, tokenizer_kwargs: passed to the tokenizer.
            return_tensors: ``"pt"`` (default) or ``"np"``.

        At most one region source: ``images`` or ``visual_feats`` + ``visual_pos``; without one only the text is
        encoded, without ``text`` only the regions (the pipelines encode a query and its candidates apart). Raises
        ``ValueError`` naming the argument for both / neither, a missing ``visual_pos``, NaN / inf features,
        boxes outside ``[0, 1]``, a ``feat_dim`` / ``pos_dim`` other than the model's, a different number of
        texts and images, or an empty text.

        Returns:
            ``BatchFeature`` with ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` when the tokenizer
            makes them) and ``visual_feats`` (float32), ``visual_pos`` (float32), ``visual_attention_mask``
            (int64), on the CPU.
        """
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"`return_tensors` must be 'pt' or 'np', got {return_tensors!r}")
        precomputed = {
            "visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": visual_attention_mask,
        }  # fmt: skip
        given = sorted(name for name, value in precomputed.items() if value is not None)
        if images is not None and given:
            raise ValueError(
                f"Pass either `images` (run through the feature extractor) or precomputed regions "
                f"(`visual_feats`, `visual_pos`, `visual_attention_mask`), not both; got `images` and {given}"
            )
        if given and visual_feats is None:
            raise ValueError(f"{given} given without `visual_feats`: pass the region features too")
        if visual_feats is not None and visual_pos is None:
            raise ValueError("`visual_feats` needs `visual_pos` (the regions' boxes, normalised to [0, 1])")
        if images is None and visual_feats is None and text is None:
            raise ValueError(
                "Pass `text=` and/or a region source: `images=` (raw images, run through the feature extractor) or "
                "`visual_feats=` + `visual_pos=` (precomputed regions)"
            )
        num_texts = _check_text(text)

        data: dict[str, Any] = {}
        regions = None
        if images is not None:
            regions = self._regions_from_images(images)
        elif visual_feats is not None:
            regions = _precomputed_regions(visual_feats, visual_pos, visual_attention_mask)
        if regions is not None:
            validate_region_inputs(
                regions["visual_feats"], regions["visual_pos"], regions["visual_attention_mask"],
                feat_dim=self.feat_dim, pos_dim=self.pos_dim,
            )  # fmt: skip
            num_images = int(regions["visual_feats"].shape[0])
            if num_texts is not None and num_texts != num_images:
                source = "`images`" if images is not None else "`visual_feats`"
                raise ValueError(
                    f"`text` and {source} must describe the same number of examples; got {num_texts} text(s) and "
                    f"{num_images} image(s)"
                )
        if text is not None:
            encoding = self.tokenizer(
                text, padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                **tokenizer_kwargs,
            )  # fmt: skip
            data.update(encoding)
        if regions is not None:
            for key in _REGION_KEYS:
                value = regions[key]
                data[key] = value.numpy() if return_tensors == "np" else value
        return BatchFeature(data)

    def _regions_from_images(self, images: Any) -> dict[str, torch.Tensor]:
        if self.feature_extractor is None:
            raise ValueError(
                "This RegionProcessor has no `feature_extractor`, so it cannot turn `images` into regions; pass "
                "precomputed `visual_feats` / `visual_pos`, or build it with a feature extractor"
            )
        with torch.no_grad():
            outputs = self.feature_extractor(_image_list(images), return_tensors="pt")
        return {
            "visual_feats": outputs["visual_feats"].detach().float().cpu(),
            "visual_pos": outputs["visual_pos"].detach().float().cpu(),
            "visual_attention_mask": outputs["visual_attention_mask"].detach().long().cpu(),
        }

    # -- model compatibility -----------------------------------------------------------------------
    def check_compatible(self, model_config: Any) -> None:
        """Raise ``ValueError`` unless the regions fit ``model_config`` (``visual_feat_dim``, ``visual_pos_dim``).

        Delegates to the feature extractor's ``check_compatible``; without one, compares ``feat_dim`` /
        ``pos_dim`` (when set).
        """
        if self.feature_extractor is not None:
            self.feature_extractor.check_compatible(model_config)
            return
        for name, own in (("visual_feat_dim", self.feat_dim), ("visual_pos_dim", self.pos_dim)):
            expected = _model_config_field(model_config, name)
            if expected is None:
                raise ValueError(f"`model_config` has no `{name}`; it is not the config of a region-based model")
            if own is not None and own != expected:
                own_name = "feat_dim" if name == "visual_feat_dim" else "pos_dim"
                raise ValueError(
                    f"RegionProcessor.{own_name}={own} does not match the model's config.{name}={expected}"
                )

    # -- tokenizer pass-through --------------------------------------------------------------------
    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        extractor = self.feature_extractor
        return {
            "processor_class": type(self).__name__,
            "tokenizer_class": type(self.tokenizer).__name__,
            "feature_extractor": None if extractor is None else REGION_EXTRACTOR_SUBFOLDER,
            "extractor_type": None if extractor is None else extractor.extractor_type,
            "feat_dim": self.feat_dim,
            "pos_dim": self.pos_dim,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write the tokenizer, the extractor (``region_extractor/``) and ``region_processor_config.json``.

        ``save_directory`` may be the model's own folder: the extractor's files live in the subfolder.
        ``kwargs`` go to the tokenizer's ``save_pretrained``. Returns the written top-level paths.
        """
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` must be a folder; {save_directory!r} is a file")
        os.makedirs(save_directory, exist_ok=True)
        written = list(self.tokenizer.save_pretrained(save_directory, **kwargs))
        if self.feature_extractor is not None:
            extractor_directory = os.path.join(save_directory, REGION_EXTRACTOR_SUBFOLDER)
            self.feature_extractor.save_pretrained(extractor_directory)
            written.append(extractor_directory)
        config_path = os.path.join(save_directory, REGION_PROCESSOR_CONFIG_NAME)
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        written.append(config_path)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_directory: str | os.PathLike, **tokenizer_kwargs: Any) -> RegionProcessor:
        """Load a folder written by :meth:`save_pretrained` (tokenizer with ``AutoTokenizer``, extractor with
        :func:`~hf_vl.regions.extractors.load_region_extractor`). Local folders only."""
        from transformers import AutoTokenizer

        directory = os.fspath(pretrained_directory)
        config_path = os.path.join(directory, REGION_PROCESSOR_CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise ValueError(
                f"`pretrained_directory` {directory!r} holds no {REGION_PROCESSOR_CONFIG_NAME}; it was not written by "
                "RegionProcessor.save_pretrained"
            )
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        tokenizer = AutoTokenizer.from_pretrained(directory, **tokenizer_kwargs)
        subfolder = config.get("feature_extractor")
        extractor = None if subfolder is None else load_region_extractor(os.path.join(directory, subfolder))
        return cls(tokenizer, extractor, feat_dim=config.get("feat_dim"), pos_dim=config.get("pos_dim"))

    @staticmethod
    def is_saved_in(directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a saved ``RegionProcessor``."""
        return os.path.isfile(os.path.join(os.fspath(directory), REGION_PROCESSOR_CONFIG_NAME))

    def __repr__(self) -> str:
        extractor = "None" if self.feature_extractor is None else type(self.feature_extractor).__name__
        return (
            f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__}, feature_extractor={extractor}, "
            f"feat_dim={self.feat_dim}, pos_dim={self.pos_dim})"
        )
