"""Region features for GIVEN boxes: ``(image, boxes) -> visual_feats, visual_pos, visual_attention_mask``.

The extractors of :mod:`hf_vl.regions.extractors` choose their own regions (grid cells, detector queries). Tasks that
score candidate regions (referring expressions: "which of these boxes is the red triangle?") need the features of
boxes someone else proposed. :class:`BoxFeatureExtractor` makes them from any image-level descriptor: every box is
cut out of the image, framed by a margin of the box's surrounding background colour, resized to a small square and
described by a :class:`~hf_vl.regions.extractors.GridFeatureExtractor` (weight-free pixel descriptors by default, or
a vision backbone).

Why the frame: the grid extractor's pixel descriptor finds the foreground by comparing pixels with the background
colour, the median of the image's border. A tight crop of a rectangle has the shape itself on its border; the frame
(coloured like the median of a thin ring of pixels just outside the box) gives every crop a true background, so the
descriptor sees what the box holds: the shape's colour, how much of the box it fills, its edges and its silhouette
(where the shape touches the box's sides and where the box is empty, i.e. how well the box fits the object).

It is saved beside a model folder in ``box_feature_extractor/`` (:data:`BOX_FEATURE_EXTRACTOR_SUBFOLDER`) so that
the ``"vl-referring-expression"`` pipeline loads it with the model.

Example:
    >>> from PIL import Image, ImageDraw
    >>> image = Image.new("RGB", (128, 96), "white")
    >>> ImageDraw.Draw(image).rectangle([20, 30, 59, 69], fill="red")
    >>> extractor = BoxFeatureExtractor()
    >>> regions = extractor(image, boxes=[[20, 30, 60, 70], [64, 0, 128, 96]])
    >>> regions["visual_feats"].shape, regions["visual_pos"].shape, regions["visual_attention_mask"].tolist()
    (torch.Size([1, 2, 51]), torch.Size([1, 2, 4]), [[1, 1]])
    >>> [round(value, 3) for value in regions["visual_pos"][0, 0].tolist()]  # normalised x1, y1, x2, y2
    [0.156, 0.312, 0.469, 0.729]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature

from .boxes import NORMALIZED_BOX_EPS, boxes_to_visual_pos, check_pixel_boxes
from .extractors import (
    EXTRACTOR_CONFIG_NAME,
    GridFeatureExtractor,
    RegionFeatureExtractor,
    _read_config,
    images_to_tensors,
    load_region_extractor,
)
from .processing import _describe

__all__ = ["BOX_FEATURE_EXTRACTOR_SUBFOLDER", "BOX_FORMATS", "BoxFeatureExtractor"]

#: Subfolder of a model folder that holds its :class:`BoxFeatureExtractor` (config + descriptor).
BOX_FEATURE_EXTRACTOR_SUBFOLDER = "box_feature_extractor"
#: Accepted ``box_format`` values: pixel corners of the image, or corners normalised to ``[0, 1]``.
BOX_FORMATS = ("pixel", "normalized")
_DESCRIPTOR_SUBFOLDER = "descriptor"


def _box_array(boxes: Any, name: str) -> np.ndarray:
    """One image's boxes as a float64 ``(N, 4)`` array with ``N >= 1``; ``ValueError``/``TypeError`` naming ``name``."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be an (num_boxes, 4) array of x1, y1, x2, y2 numbers; got {_describe(boxes)}"
        ) from None
    if array.size == 0:
        raise ValueError(f"`{name}` is empty: pass at least one box (x1, y1, x2, y2)")
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]  # one box
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"`{name}` must have shape (num_boxes, 4) (x1, y1, x2, y2); got shape {tuple(array.shape)}")
    return array


def _check_normalized(boxes: np.ndarray, name: str) -> None:
    eps = NORMALIZED_BOX_EPS
    bad = ~np.isfinite(boxes).all(1) | (boxes < -eps).any(1) | (boxes > 1 + eps).any(1)
    inverted = (boxes[:, 2] < boxes[:, 0] - eps) | (boxes[:, 3] < boxes[:, 1] - eps)
    for rows, reason in ((bad, "lies outside [0, 1] (box_format='normalized')"), (inverted, "has x2 < x1 or y2 < y1")):
        if rows.any():
            row = int(np.flatnonzero(rows)[0])
            values = ", ".join(f"{value:g}" for value in boxes[row])
            raise ValueError(f"`{name}[{row}]` = [{values}] {reason}")


class BoxFeatureExtractor(RegionFeatureExtractor):
    """Features of given boxes: crop, frame with the surrounding background, resize, describe.

    For each box (pixel corners ``x1, y1, x2, y2``, or normalised with ``box_format="normalized"``):

    1. the pixels inside the box are cut out (the box rounded outwards to whole pixels, at least one pixel);
    2. the background colour is the per-channel median of a ring of pixels just outside the box, ``ring_fraction``
       of the box's longer side wide (at least one pixel; the box's own border when the box covers the image);
    3. the crop is resized (bilinear, antialiased; the aspect ratio is not kept, the box's shape is in
       ``visual_pos``) to the inner ``crop_size - 2 * margin`` pixels of a ``crop_size`` square filled with that
       background colour, ``margin = round(margin_fraction * crop_size)``;
    4. the square goes through ``descriptor``, whose regions (a ``1 x 1`` grid by default: one region) are
       concatenated into the box's feature.

    Args:
        descriptor: a :class:`~hf_vl.regions.extractors.GridFeatureExtractor` applied to the framed crops. Default:
            the pixel descriptor on a ``1 x 1`` grid at ``crop_size`` with a ``6 x 6`` silhouette (mean colour,
            foreground colour and fraction, 8 edge orientations, 36 silhouette values: 51 numbers).
        crop_size: side of the framed square (default 32).
        margin_fraction: frame width as a fraction of ``crop_size`` (default 0.125: 4 of 32 pixels).
        ring_fraction: width of the background ring, as a fraction of the box's longer side (default 0.1).
        pos_dim: 4 (``x1, y1, x2, y2`` normalised) or 5 (+ area) for ``visual_pos``.

    ``feature_dim`` is ``descriptor.num_regions * descriptor.feature_dim``. Call ``extractor(images, boxes)``
    (see :meth:`forward`). Like the other extractors it runs without gradients in ``eval()`` mode (the default).
    """

    extractor_type = "box"

    def __init__(
        self,
        descriptor: GridFeatureExtractor | None = None,
        crop_size: int = 32,
        margin_fraction: float = 0.125,
        ring_fraction: float = 0.1,
        pos_dim: int = 4,
    ):
        super().__init__()
        if isinstance(crop_size, bool) or not isinstance(crop_size, (int, np.integer)) or crop_size < 4:
            raise ValueError(f"`crop_size` must be an int >= 4, got {crop_size!r}")
        if isinstance(margin_fraction, bool) or not 0 <= float(margin_fraction) < 0.5:
            raise ValueError(f"`margin_fraction` must be in [0, 0.5), got {margin_fraction!r}")
        if isinstance(ring_fraction, bool) or not 0 < float(ring_fraction) <= 1:
            raise ValueError(f"`ring_fraction` must be in (0, 1], got {ring_fraction!r}")
        if pos_dim not in (4, 5) or isinstance(pos_dim, bool):
            raise ValueError(f"`pos_dim` must be 4 (x1, y1, x2, y2) or 5 (+ area), got {pos_dim!r}")
        self.crop_size = int(crop_size)
        self.margin_fraction = float(margin_fraction)
        self.ring_fraction = float(ring_fraction)
        self.config_pos_dim = int(pos_dim)
        if descriptor is None:
            descriptor = GridFeatureExtractor(image_size=self.crop_size, grid_size=1, cell_pool_size=6)
        if not isinstance(descriptor, GridFeatureExtractor):
            raise ValueError(
                f"`descriptor` must be a hf_vl.regions.GridFeatureExtractor, got {type(descriptor).__name__}"
            )
        if tuple(descriptor.image_size) != (self.crop_size, self.crop_size):
            raise ValueError(
                f"`descriptor.image_size` {tuple(descriptor.image_size)} must be (crop_size, crop_size) = "
                f"({self.crop_size}, {self.crop_size}): the crops are made at that size"
            )
        self.descriptor = descriptor
        self.eval()

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def margin(self) -> int:
        """Frame width in pixels of the ``crop_size`` square."""
        return int(round(self.margin_fraction * self.crop_size))

    @property
    def feature_dim(self) -> int:
        return self.descriptor.num_regions * self.descriptor.feature_dim

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, images: Any, boxes: Any, box_format: str = "pixel", return_tensors: str = "pt") -> BatchFeature:
        """Features of ``boxes`` in ``images``.

        Args:
            images: one image or a list (PIL image, ``(H, W[, C])`` numpy array, ``(C, H, W)`` tensor, uint8 or
                float in ``[0, 1]``; a ``(B, C, H, W)`` batch), as :class:`GridFeatureExtractor` takes them.
            boxes: one image's boxes ``(N, 4)`` (a list of ``[x1, y1, x2, y2]``, array or tensor) when ``images``
                is one image; a list of such ``(N_i, 4)``, one per image, otherwise. Every image needs >= 1 box.
            box_format: ``"pixel"`` (corners in the image's pixels; up to 1 pixel outside the image is clipped,
                more raises) or ``"normalized"`` (corners in ``[0, 1]``).
            return_tensors: ``"pt"`` or ``"np"``.

        Returns:
            ``BatchFeature`` with ``visual_feats (B, N, feature_dim)``, ``visual_pos (B, N, pos_dim)`` (normalised
            boxes) and ``visual_attention_mask (B, N)``, ``N`` the most boxes of any image (shorter lists padded
            with zeros, mask 0).

        Raises ``ValueError`` naming ``boxes`` (or ``boxes[i]`` / ``boxes[i][row]``) for a missing or empty box
        list, a wrong shape, NaN, ``x2 < x1`` or a box outside the image, and for a different number of images and
        box lists.
        """
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"`return_tensors` must be 'pt' or 'np', got {return_tensors!r}")
        if box_format not in BOX_FORMATS:
            raise ValueError(f"`box_format` must be one of {BOX_FORMATS}, got {box_format!r}")
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4
        )
        pixels = images_to_tensors(images)  # [(3, H, W) float in [0, 1]]
        per_image = self._split_boxes(boxes, len(pixels), single)
        crops, normalized = [], []
        for index, (image, image_boxes) in enumerate(zip(pixels, per_image)):
            name = "boxes" if single else f"boxes[{index}]"
            pixel_boxes, unit_boxes = self._check_boxes(image_boxes, image.shape[2], image.shape[1], box_format, name)
            crops.extend(self.framed_crop(image, box) for box in pixel_boxes)
            normalized.append(unit_boxes)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            described = self.descriptor(torch.stack(crops).to(self.device))["visual_feats"]  # (M, R, D)
        flat = described.reshape(described.shape[0], -1).float().cpu()  # (M, feature_dim)
        max_boxes = max(len(unit_boxes) for unit_boxes in normalized)
        batch_size = len(normalized)
        visual_feats = torch.zeros(batch_size, max_boxes, flat.shape[1])
        visual_pos = torch.zeros(batch_size, max_boxes, self.config_pos_dim)
        mask = torch.zeros(batch_size, max_boxes, dtype=torch.long)
        start = 0
        for index, unit_boxes in enumerate(normalized):
            count = len(unit_boxes)
            visual_feats[index, :count] = flat[start : start + count]
            visual_pos[index, :count] = torch.from_numpy(boxes_to_visual_pos(unit_boxes, pos_dim=self.config_pos_dim))
            mask[index, :count] = 1
            start += count
        data = {"visual_feats": visual_feats, "visual_pos": visual_pos, "visual_attention_mask": mask}
        if return_tensors == "np":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data)

    @staticmethod
    def _split_boxes(boxes: Any, num_images: int, single: bool) -> list[Any]:
        if boxes is None:
            raise ValueError("`boxes` is missing: pass the candidate boxes (x1, y1, x2, y2) of every image")
        if single:
            return [boxes]
        if not isinstance(boxes, (list, tuple)) or len(boxes) != num_images:
            raise ValueError(
                f"`images` holds {num_images} images, so `boxes` must be a list of {num_images} (num_boxes, 4) box "
                f"lists, one per image; got {_describe(boxes)}"
            )
        return list(boxes)

    @staticmethod
    def _check_boxes(
        boxes: Any, width: int, height: int, box_format: str, name: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Checked boxes of one image -> (pixel corners clipped to the image, normalised corners), float64."""
        array = _box_array(boxes, name)
        if box_format == "normalized":
            _check_normalized(array, name)
            unit = np.clip(array, 0.0, 1.0)
            return unit * np.array([width, height, width, height], dtype=np.float64), unit
        check_pixel_boxes(array, width, height, tolerance=1.0, name=name)
        clipped = np.clip(array, 0.0, np.array([width, height, width, height], dtype=np.float64))
        return clipped, clipped / np.array([width, height, width, height], dtype=np.float64)

    def framed_crop(self, image: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
        """One ``(3, H, W)`` image in ``[0, 1]`` and a pixel box -> the framed ``(3, crop_size, crop_size)`` crop."""
        height, width = image.shape[1:]
        x1, y1, x2, y2 = self._pixel_window(box, width, height)
        crop = image[:, y1:y2, x1:x2]
        background = self.background_colour(image, (x1, y1, x2, y2))
        inner = self.crop_size - 2 * self.margin
        resized = nn.functional.interpolate(
            crop[None], size=(inner, inner), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0, 1)
        framed = background[:, None, None].expand(3, self.crop_size, self.crop_size).clone()
        framed[:, self.margin : self.margin + inner, self.margin : self.margin + inner] = resized
        return framed

    def background_colour(self, image: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
        """Median colour ``(3,)`` of the ring of pixels around the pixel window ``(x1, y1, x2, y2)`` (integers)."""
        height, width = image.shape[1:]
        x1, y1, x2, y2 = window
        ring = max(1, int(round(self.ring_fraction * max(x2 - x1, y2 - y1))))
        outer = image[:, max(0, y1 - ring) : min(height, y2 + ring), max(0, x1 - ring) : min(width, x2 + ring)]
        inside = torch.zeros(outer.shape[1:], dtype=torch.bool)
        inside[y1 - max(0, y1 - ring) : y2 - max(0, y1 - ring), x1 - max(0, x1 - ring) : x2 - max(0, x1 - ring)] = True
        pixels = outer[:, ~inside]  # (3, K)
        if pixels.shape[1] == 0:  # the box covers the image: its own border
            crop = image[:, y1:y2, x1:x2]
            pixels = torch.cat([crop[:, 0], crop[:, -1], crop[:, :, 0], crop[:, :, -1]], dim=1)
        return pixels.median(dim=1).values

    @staticmethod
    def _pixel_window(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
        """A pixel box -> integer window ``[x1, x2) x [y1, y2)`` rounded outwards (up to 1e-3 pixel of float error ignored), inside the image, >= 1 pixel."""
        x1, y1, x2, y2 = (float(value) for value in box)
        left, right = int(math.floor(x1 + 1e-3)), int(math.ceil(x2 - 1e-3))
        top, bottom = int(math.floor(y1 + 1e-3)), int(math.ceil(y2 - 1e-3))
        left, top = min(max(left, 0), width - 1), min(max(top, 0), height - 1)
        right, bottom = min(max(right, left + 1), width), min(max(bottom, top + 1), height)
        return left, top, right, bottom

    # -- config ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "extractor_type": self.extractor_type,
            "crop_size": self.crop_size,
            "margin_fraction": self.margin_fraction,
            "ring_fraction": self.ring_fraction,
            "pos_dim": self.config_pos_dim,
            "descriptor": self.descriptor.to_dict(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``region_extractor_config.json`` (``extractor_type="box"``) and the descriptor (``descriptor/``)."""
        save_directory = os.fspath(save_directory)
        config = self.to_dict()
        config["descriptor"] = _DESCRIPTOR_SUBFOLDER
        self._write_config(save_directory, config)
        self.descriptor.save_pretrained(os.path.join(save_directory, _DESCRIPTOR_SUBFOLDER))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> BoxFeatureExtractor:
        """Load what :meth:`save_pretrained` wrote. ``directory`` may also be a model folder holding a
        ``box_feature_extractor/`` subfolder."""
        directory = os.fspath(directory)
        if cls.is_saved_in(directory) and not _is_box_config(directory):
            directory = os.path.join(directory, BOX_FEATURE_EXTRACTOR_SUBFOLDER)
        config = _read_config(directory)
        if config is None or config.get("extractor_type") != cls.extractor_type:
            raise ValueError(
                f"`directory` {directory!r} holds no BoxFeatureExtractor ({EXTRACTOR_CONFIG_NAME} with "
                f"extractor_type='box', or a {BOX_FEATURE_EXTRACTOR_SUBFOLDER}/ subfolder)"
            )
        config.pop("extractor_type")
        descriptor = load_region_extractor(os.path.join(directory, config.pop("descriptor")))
        return cls(descriptor=descriptor, **config)

    @staticmethod
    def is_saved_in(directory: str | os.PathLike) -> bool:
        """Whether ``directory`` is a saved ``BoxFeatureExtractor`` or holds one in ``box_feature_extractor/``."""
        directory = os.fspath(directory)
        return _is_box_config(directory) or _is_box_config(os.path.join(directory, BOX_FEATURE_EXTRACTOR_SUBFOLDER))


def _is_box_config(directory: str) -> bool:
    config = _read_config(directory) if os.path.isdir(directory) else None
    return config is not None and config.get("extractor_type") == BoxFeatureExtractor.extractor_type
