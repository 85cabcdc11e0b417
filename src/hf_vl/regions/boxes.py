"""Box conventions of the region-based models (adaptive LXMERT, InterBERT, Switch-BERT).

Detectors (bottom-up attention, Anderson et al. 2018; its detectron2 port py-bottom-up-attention) write
boxes as pixel corners ``x1, y1, x2, y2`` of the original image. The models read them normalised:

* ``visual_pos`` with ``pos_dim=4``: ``x1/W, y1/H, x2/W, y2/H`` (LXMERT, ``lxmert/src/tasks/vqa_data.py``:
  it divides by the image width and height, not ``W - 1``, and asserts the result lies in ``[0, 1]``);
* ``pos_dim=5``: the same plus the normalised area ``(x2 - x1) * (y2 - y1)`` (VOLTA / UNITER / ViLBERT,
  the input of InterBERT and of Switch-BERT initialised from VOLTA).

Every function takes numpy arrays and returns numpy arrays; torch tensors are accepted as well and give
torch tensors back (on the input's device). Bad input raises ``ValueError`` naming the argument, the row
and the offending values.

Example:
    >>> import numpy as np
    >>> boxes = normalize_boxes(np.array([[0.0, 0.0, 320.0, 240.0]]), image_width=640, image_height=480)
    >>> boxes.tolist()
    [[0.0, 0.0, 0.5, 0.5]]
    >>> boxes_to_visual_pos(boxes, pos_dim=5).tolist()
    [[0.0, 0.0, 0.5, 0.5, 0.25]]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = [
    "GLOBAL_REGION_BOX",
    "NORMALIZED_BOX_EPS",
    "add_global_region",
    "box_area",
    "box_iou",
    "boxes_to_visual_pos",
    "check_pixel_boxes",
    "normalize_boxes",
    "pad_regions",
    "validate_region_inputs",
]

#: The whole-image box of the global region (VOLTA / UNITER ``add_global_imgfeat``), normalised.
GLOBAL_REGION_BOX: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
#: Slack allowed on normalised boxes for float rounding (LXMERT asserts ``boxes < 1 + 1e-5``).
NORMALIZED_BOX_EPS: float = 1e-5


# --------------------------------------------------------------------------------------------------
# numpy / torch helpers
# --------------------------------------------------------------------------------------------------


def _is_torch(value: Any) -> bool:
    # Checked through sys.modules so this module never imports torch itself.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _to_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    if _is_torch(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _like(array: np.ndarray, reference: Any) -> Any:
    """``array`` as the same kind of object as ``reference`` (a torch tensor on its device, or numpy)."""
    if _is_torch(reference):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(reference.device)
    return array


def _row_str(row: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(value):g}" for value in row) + "]"


def _check_box_array(boxes: np.ndarray, name: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (num_boxes, 4) (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")


# --------------------------------------------------------------------------------------------------
# pixel boxes -> normalised boxes -> visual_pos
# --------------------------------------------------------------------------------------------------


def check_pixel_boxes(
    boxes: np.ndarray, image_width: float, image_height: float, tolerance: float = 1.0, name: str = "boxes"
) -> None:
    """Raise ``ValueError`` (naming ``name`` and the first bad row) unless ``boxes`` are valid pixel boxes.

    A valid box is finite, has ``x1 <= x2`` and ``y1 <= y2`` and lies inside the
    ``image_width x image_height`` image up to ``tolerance`` pixels on each side.
    """
    boxes = _to_numpy(boxes, dtype=np.float64)
    _check_box_array(boxes, name)
    if not image_width > 0 or not image_height > 0:
        raise ValueError(
            f"image_width and image_height must be positive, got image_width={image_width}, image_height={image_height}"
        )
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    problems = (
        (~np.isfinite(boxes).all(axis=1), "contains NaN or inf"),
        ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), "has x2 < x1 or y2 < y1"),
        (
            (boxes[:, 0] < -tolerance)
            | (boxes[:, 1] < -tolerance)
            | (boxes[:, 2] > image_width + tolerance)
            | (boxes[:, 3] > image_height + tolerance),
            f"lies outside the {image_width:g}x{image_height:g} image (width x height) by more than "
            f"tolerance={tolerance:g} pixels",
        ),
    )
    for bad_rows, reason in problems:
        if bad_rows.any():
            row = int(np.flatnonzero(bad_rows)[0])
            raise ValueError(f"{name}[{row}] = {_row_str(boxes[row])} {reason} (pixel x1, y1, x2, y2 expected)")


def normalize_boxes(boxes: Any, image_width: float, image_height: float, tolerance: float = 1.0) -> Any:
    """Pixel boxes ``(N, 4)`` ``x1, y1, x2, y2`` -> boxes normalised to ``[0, 1]`` (float32).

    Coordinates are divided by the image width / height (as LXMERT does). Boxes that stick out of the
    image by at most ``tolerance`` pixels (detectors round their outputs) are clipped to it; anything
    further out, with ``x2 < x1`` / ``y2 < y1``, or NaN raises ``ValueError`` naming ``boxes[row]``.

    Example:
        >>> normalize_boxes([[50.0, 100.0, 150.0, 300.0]], image_width=200, image_height=400).tolist()
        [[0.25, 0.25, 0.75, 0.75]]
    """
    array = _to_numpy(boxes, dtype=np.float64)
    check_pixel_boxes(array, image_width, image_height, tolerance)
    normalized = np.empty_like(array)
    normalized[:, 0::2] = np.clip(array[:, 0::2], 0.0, image_width) / image_width
    normalized[:, 1::2] = np.clip(array[:, 1::2], 0.0, image_height) / image_height
    return _like(normalized.astype(np.float32), boxes)


def _check_normalized_boxes(boxes: np.ndarray, name: str) -> None:
    _check_box_array(boxes, name)
    eps = NORMALIZED_BOX_EPS
    bad_rows = ~np.isfinite(boxes).all(axis=1) | (boxes < -eps).any(axis=1) | (boxes > 1 + eps).any(axis=1)
    if bad_rows.any():
        row = int(np.flatnonzero(bad_rows)[0])
        raise ValueError(
            f"{name}[{row}] = {_row_str(boxes[row])} is not a box normalised to [0, 1]; "
            "normalise pixel boxes with hf_vl.regions.normalize_boxes(boxes, image_width, image_height) first"
        )
    inverted = (boxes[:, 2] < boxes[:, 0] - eps) | (boxes[:, 3] < boxes[:, 1] - eps)
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        raise ValueError(
            f"{name}[{row}] = {_row_str(boxes[row])} has x2 < x1 or y2 < y1; boxes are corners (x1, y1, x2, y2) with "
            "x1 <= x2 and y1 <= y2 (convert (x, y, w, h) or (cx, cy, w, h) boxes first)"
        )


def boxes_to_visual_pos(normalized_boxes: Any, pos_dim: int = 4) -> Any:
    """Normalised boxes ``(N, 4)`` -> ``visual_pos`` ``(N, pos_dim)`` float32.

    ``pos_dim=4``: ``x1, y1, x2, y2`` (LXMERT). ``pos_dim=5``: plus the area ``(x2 - x1) * (y2 - y1)`` of
    the normalised box, i.e. the fraction of the image it covers (VOLTA / UNITER / InterBERT).

    Example:
        >>> boxes_to_visual_pos([[0.0, 0.5, 0.5, 1.0]], pos_dim=5).tolist()
        [[0.0, 0.5, 0.5, 1.0, 0.25]]
    """
    if pos_dim not in (4, 5):
        raise ValueError(f"pos_dim must be 4 (x1, y1, x2, y2) or 5 (+ area), got {pos_dim!r}")
    boxes = _to_numpy(normalized_boxes, dtype=np.float64)
    _check_normalized_boxes(boxes, "boxes")
    boxes = np.clip(boxes, 0.0, 1.0)
    if pos_dim == 5:
        boxes = np.concatenate([boxes, box_area(boxes)[:, None]], axis=1)
    return _like(boxes.astype(np.float32), normalized_boxes)


# --------------------------------------------------------------------------------------------------
# areas and IoU (masked region modelling: InterBERT groups regions whose IoU exceeds a threshold)
# --------------------------------------------------------------------------------------------------


def box_area(boxes: Any) -> Any:
    """Area ``(x2 - x1) * (y2 - y1)`` of boxes ``(..., 4)`` -> ``(...)`` (numpy or torch, same kind out).

    Example:
        >>> box_area(np.array([[0.0, 0.0, 2.0, 3.0]])).tolist()
        [6.0]
    """
    if not _is_torch(boxes):
        boxes = np.asarray(boxes)
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4) (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes_a: Any, boxes_b: Any) -> Any:
    """Pairwise intersection over union of ``boxes_a (N, 4)`` and ``boxes_b (M, 4)`` -> ``(N, M)``.

    Works on numpy arrays and on torch tensors (computed on the tensors' device, differentiable). Two
    empty boxes (zero union) have IoU 0.

    Example:
        >>> box_iou(np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]]))
        array([[0.14285714, 1.        ]])
    """
    if _is_torch(boxes_a) != _is_torch(boxes_b):
        raise TypeError(
            "boxes_a and boxes_b must both be numpy arrays or both be torch tensors, got "
            f"{type(boxes_a).__name__} and {type(boxes_b).__name__}"
        )
    if _is_torch(boxes_a):
        import torch

        maximum, minimum = torch.maximum, torch.minimum
        if not boxes_a.is_floating_point():
            boxes_a = boxes_a.float()
        boxes_b = boxes_b.to(boxes_a.dtype)
    else:
        maximum, minimum = np.maximum, np.minimum
        boxes_a, boxes_b = np.asarray(boxes_a), np.asarray(boxes_b)
        dtype = np.result_type(boxes_a.dtype, boxes_b.dtype, np.float32)
        boxes_a, boxes_b = boxes_a.astype(dtype, copy=False), boxes_b.astype(dtype, copy=False)
    for name, boxes in (("boxes_a", boxes_a), ("boxes_b", boxes_b)):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name} must have shape (num_boxes, 4) (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    top_left = maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (N, M, 2)
    bottom_right = minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (N, M, 2)
    intersection_sides = (bottom_right - top_left).clip(min=0)
    intersection = intersection_sides[..., 0] * intersection_sides[..., 1]  # (N, M)
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :] - intersection
    # A zero union implies a zero intersection, so clipping the denominator turns 0/0 into 0.
    return intersection / union.clip(min=1e-12)


# --------------------------------------------------------------------------------------------------
# per-image region sets: global region, padding
# --------------------------------------------------------------------------------------------------


def _check_region_pair(visual_feats: Any, visual_pos: Any) -> None:
    if visual_feats.ndim != 2:
        raise ValueError(f"visual_feats must have shape (num_regions, feat_dim), got shape {tuple(visual_feats.shape)}")
    if visual_pos.ndim != 2 or visual_pos.shape[0] != visual_feats.shape[0]:
        raise ValueError(
            f"visual_pos must have shape (num_regions={visual_feats.shape[0]}, pos_dim), "
            f"got shape {tuple(visual_pos.shape)}"
        )
    if _is_torch(visual_feats) != _is_torch(visual_pos):
        raise TypeError("visual_feats and visual_pos must both be numpy arrays or both be torch tensors")


def add_global_region(visual_feats: Any, visual_pos: Any) -> tuple[Any, Any]:
    """Prepend the global image region: the mean of the region features, with the whole-image box.

    ``visual_feats (N, D), visual_pos (N, P)`` -> ``(N + 1, D), (N + 1, P)``. The global box is
    ``[0, 0, 1, 1]`` for ``P = 4`` and ``[0, 0, 1, 1, 1]`` (area 1) for ``P = 5``. This is VOLTA's
    ``add_global_imgfeat="first"`` (the mean over all boxes of the image, placed first), which UNITER and
    ViLBERT share. Raises ``ValueError`` for an image without regions (the mean is undefined).

    Example:
        >>> feats, pos = add_global_region(np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((2, 4)))
        >>> feats[0].tolist(), pos[0].tolist()
        ([2.0, 3.0], [0.0, 0.0, 1.0, 1.0])
    """
    if not _is_torch(visual_feats):
        visual_feats, visual_pos = np.asarray(visual_feats), np.asarray(visual_pos)
    _check_region_pair(visual_feats, visual_pos)
    if visual_feats.shape[0] == 0:
        raise ValueError("visual_feats has 0 regions: the global region is the mean of at least one region")
    pos_dim = visual_pos.shape[1]
    if pos_dim not in (4, 5):
        raise ValueError(f"visual_pos must have pos_dim 4 or 5, got shape {tuple(visual_pos.shape)}")
    global_pos = np.array([GLOBAL_REGION_BOX + (1.0,) * (pos_dim - 4)], dtype=np.float32)
    global_feat = visual_feats.mean(0)[None]  # (1, D)
    if _is_torch(visual_feats):
        import torch

        global_pos = torch.from_numpy(global_pos).to(device=visual_pos.device, dtype=visual_pos.dtype)
        return torch.cat([global_feat, visual_feats]), torch.cat([global_pos, visual_pos])
    global_pos = global_pos.astype(np.result_type(visual_pos.dtype, np.float32))
    return (
        np.concatenate([global_feat.astype(visual_feats.dtype), visual_feats]),
        np.concatenate([global_pos, visual_pos]),
    )


def pad_regions(visual_feats: Any, visual_pos: Any, max_regions: int) -> tuple[Any, Any, Any]:
    """Pad (with zeros) or truncate one image's regions to exactly ``max_regions``.

    Returns ``visual_feats (max_regions, D)``, ``visual_pos (max_regions, P)`` and
    ``visual_attention_mask (max_regions,)`` int64 (1 for real regions, 0 for padding). Truncation keeps
    the FIRST ``max_regions`` regions: detector files list regions in the detector's order (confidence
    order for bottom-up attention), and a global region added with :func:`add_global_region` stays first.

    Example:
        >>> feats, pos, mask = pad_regions(np.ones((2, 3)), np.zeros((2, 4)), max_regions=4)
        >>> feats.shape, mask.tolist()
        ((4, 3), [1, 1, 0, 0])
    """
    if not isinstance(max_regions, (int, np.integer)) or isinstance(max_regions, bool) or max_regions < 1:
        raise ValueError(f"max_regions must be a positive integer, got {max_regions!r}")
    if not _is_torch(visual_feats):
        visual_feats, visual_pos = np.asarray(visual_feats), np.asarray(visual_pos)
    _check_region_pair(visual_feats, visual_pos)
    num_real = min(visual_feats.shape[0], max_regions)
    if _is_torch(visual_feats):
        import torch

        device = visual_feats.device
        feats = visual_feats.new_zeros((max_regions, visual_feats.shape[1]))
        pos = visual_pos.new_zeros((max_regions, visual_pos.shape[1]))
        mask = torch.zeros(max_regions, dtype=torch.int64, device=device)
    else:
        feats = np.zeros((max_regions, visual_feats.shape[1]), dtype=visual_feats.dtype)
        pos = np.zeros((max_regions, visual_pos.shape[1]), dtype=visual_pos.dtype)
        mask = np.zeros(max_regions, dtype=np.int64)
    feats[:num_real] = visual_feats[:num_real]
    pos[:num_real] = visual_pos[:num_real]
    mask[:num_real] = 1
    return feats, pos, mask


# --------------------------------------------------------------------------------------------------
# batch validation (processors and models)
# --------------------------------------------------------------------------------------------------


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(size) for size in value.shape)


def _first_index(mask: Any) -> tuple[int, ...]:
    if _is_torch(mask):
        return tuple(int(i) for i in mask.nonzero()[0].tolist())
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_array_type(value: Any, name: str) -> None:
    if not (_is_torch(value) or isinstance(value, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def validate_region_inputs(
    visual_feats: Any,
    visual_pos: Any,
    visual_attention_mask: Any = None,
    feat_dim: int | None = None,
    pos_dim: int | None = None,
) -> None:
    """Check a batch of detector-region inputs; raise ``ValueError`` / ``TypeError`` naming the argument.

    Checks: ``visual_feats (B, N, D)``, ``visual_pos (B, N, P)`` and ``visual_attention_mask (B, N)``
    agree in shape; ``D == feat_dim`` and ``P == pos_dim`` when given (the model's expected sizes);
    ``visual_feats`` is finite; ``visual_pos`` holds boxes normalised to ``[0, 1]`` (finite, up to
    :data:`NORMALIZED_BOX_EPS`) with ``x1 <= x2`` and ``y1 <= y2``; the mask holds only 0 and 1. Returns ``None``.

    Example:
        >>> validate_region_inputs(np.zeros((2, 36, 8)), np.zeros((2, 36, 4)), feat_dim=8, pos_dim=4)
        >>> validate_region_inputs(np.zeros((2, 36, 8)), np.zeros((2, 36, 4)), feat_dim=16)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: visual_feats has feature dimension 8 but the model expects feat_dim=16 (visual_feats ...
    """
    _check_array_type(visual_feats, "visual_feats")
    _check_array_type(visual_pos, "visual_pos")
    if visual_feats.ndim != 3:
        raise ValueError(
            f"visual_feats must have shape (batch_size, num_regions, feat_dim), got shape {_shape(visual_feats)}"
        )
    batch_size, num_regions, actual_feat_dim = _shape(visual_feats)
    if feat_dim is not None and actual_feat_dim != feat_dim:
        raise ValueError(
            f"visual_feats has feature dimension {actual_feat_dim} but the model expects feat_dim={feat_dim} "
            f"(visual_feats shape {_shape(visual_feats)})"
        )
    pos_dim_text = "pos_dim" if pos_dim is None else f"pos_dim={pos_dim}"
    expected_pos = f"(batch_size={batch_size}, num_regions={num_regions}, {pos_dim_text})"
    if visual_pos.ndim != 3 or _shape(visual_pos)[:2] != (batch_size, num_regions):
        raise ValueError(f"visual_pos must have shape {expected_pos}, got shape {_shape(visual_pos)}")
    if pos_dim is not None and visual_pos.shape[-1] != pos_dim:
        raise ValueError(
            f"visual_pos has pos_dim {visual_pos.shape[-1]} but the model expects pos_dim={pos_dim} "
            f"(4 = x1, y1, x2, y2; 5 = + area); got shape {_shape(visual_pos)}"
        )
    if visual_attention_mask is not None:
        _check_array_type(visual_attention_mask, "visual_attention_mask")
        if _shape(visual_attention_mask) != (batch_size, num_regions):
            raise ValueError(
                f"visual_attention_mask must have shape (batch_size={batch_size}, num_regions={num_regions}), "
                f"got shape {_shape(visual_attention_mask)}"
            )
        not_binary = (visual_attention_mask != 0) & (visual_attention_mask != 1)
        if not_binary.any():
            index = _first_index(not_binary)
            raise ValueError(
                f"visual_attention_mask must hold 0 (padding) or 1 (region), got {visual_attention_mask[index]} at "
                f"(batch, region) {index}"
            )
    isfinite = sys.modules["torch"].isfinite if _is_torch(visual_feats) else np.isfinite
    not_finite = ~isfinite(visual_feats)
    if not_finite.any():
        index = _first_index(not_finite)
        raise ValueError(f"visual_feats contains NaN or inf (first at (batch, region, dim) {index})")
    isfinite = sys.modules["torch"].isfinite if _is_torch(visual_pos) else np.isfinite
    bad_pos = ~isfinite(visual_pos) | (visual_pos < -NORMALIZED_BOX_EPS) | (visual_pos > 1 + NORMALIZED_BOX_EPS)
    if bad_pos.any():
        batch, region, _ = _first_index(bad_pos)
        raise ValueError(
            f"visual_pos must hold boxes normalised to [0, 1], got {_row_str(_to_numpy(visual_pos[batch, region]))} "
            f"at (batch, region) ({batch}, {region}); normalise pixel boxes with "
            "hf_vl.regions.normalize_boxes(boxes, image_width, image_height)"
        )
    if visual_pos.shape[-1] >= 4:
        inverted = (visual_pos[..., 2] < visual_pos[..., 0] - NORMALIZED_BOX_EPS) | (
            visual_pos[..., 3] < visual_pos[..., 1] - NORMALIZED_BOX_EPS
        )
        if inverted.any():
            batch, region = _first_index(inverted)
            raise ValueError(
                f"visual_pos must hold boxes (x1, y1, x2, y2, ...) with x1 <= x2 and y1 <= y2, got "
                f"{_row_str(_to_numpy(visual_pos[batch, region]))} at (batch, region) ({batch}, {region}) (x2 < x1 or "
                "y2 < y1); convert (x, y, w, h) or (cx, cy, w, h) boxes to corners first"
            )
