"""Box conventions: normalisation, visual_pos, IoU, the global region, padding, batch validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vl.regions import (
    add_global_region,
    box_area,
    box_iou,
    boxes_to_visual_pos,
    normalize_boxes,
    pad_regions,
    validate_region_inputs,
)

# --------------------------------------------------------------------------------------------------
# normalize_boxes / boxes_to_visual_pos
# --------------------------------------------------------------------------------------------------


def test_normalize_boxes_hand_computed():
    boxes = np.array([[0, 0, 640, 480], [160, 120, 320, 360], [64, 48, 64, 48]], np.float32)
    normalized = normalize_boxes(boxes, image_width=640, image_height=480)
    assert normalized.dtype == np.float32 and normalized.shape == (3, 4)
    np.testing.assert_allclose(normalized, [[0, 0, 1, 1], [0.25, 0.25, 0.5, 0.75], [0.1, 0.1, 0.1, 0.1]], rtol=1e-6)


def test_normalize_boxes_clips_within_tolerance():
    boxes = np.array([[-0.6, -1.0, 640.9, 481.0]])
    np.testing.assert_array_equal(normalize_boxes(boxes, 640, 480), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="tolerance"):
        normalize_boxes(boxes, 640, 480, tolerance=0.5)


@pytest.mark.parametrize(
    "bad_box, reason",
    [
        ([0, 0, 700, 100], "outside the 640x480 image"),
        ([-5, 0, 10, 10], "outside"),
        ([10, 0, 5, 10], "x2 < x1"),
        ([0, 10, 5, 2], "y2 < y1"),
        ([0, np.nan, 5, 10], "NaN"),
    ],
)
def test_normalize_boxes_errors_name_the_row(bad_box, reason):
    boxes = np.array([[0, 0, 10, 10], bad_box, [0, 0, 1, 1]], np.float64)
    with pytest.raises(ValueError, match=rf"boxes\[1\] = .*{reason}"):
        normalize_boxes(boxes, 640, 480)


def test_normalize_boxes_shape_and_size_errors():
    with pytest.raises(ValueError, match=r"boxes must have shape \(num_boxes, 4\).*\(2, 5\)"):
        normalize_boxes(np.zeros((2, 5)), 640, 480)
    with pytest.raises(ValueError, match="image_width"):
        normalize_boxes(np.zeros((2, 4)), 0, 480)


def test_normalize_boxes_torch_in_torch_out():
    boxes = torch.tensor([[0.0, 0.0, 320.0, 240.0]], dtype=torch.float64)
    normalized = normalize_boxes(boxes, 640, 480)
    assert isinstance(normalized, torch.Tensor) and normalized.dtype == torch.float32
    torch.testing.assert_close(normalized, torch.tensor([[0.0, 0.0, 0.5, 0.5]]))


def test_boxes_to_visual_pos_4_and_5():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 0.75]], np.float32)
    np.testing.assert_array_equal(boxes_to_visual_pos(boxes, pos_dim=4), boxes)
    pos5 = boxes_to_visual_pos(boxes, pos_dim=5)
    assert pos5.shape == (2, 5) and pos5.dtype == np.float32
    np.testing.assert_allclose(pos5[:, 4], [1.0, 0.5 * 0.25])
    as_torch = boxes_to_visual_pos(torch.from_numpy(boxes), pos_dim=5)
    torch.testing.assert_close(as_torch, torch.from_numpy(pos5))


def test_boxes_to_visual_pos_errors():
    with pytest.raises(ValueError, match=r"boxes\[0\] = \[0, 0, 320, 240\] is not a box normalised to \[0, 1\]"):
        boxes_to_visual_pos(np.array([[0, 0, 320, 240]]))
    with pytest.raises(ValueError, match="pos_dim must be 4 .* or 5 .*got 6"):
        boxes_to_visual_pos(np.zeros((1, 4)), pos_dim=6)
    with pytest.raises(ValueError, match=r"boxes\[1\] = \[0.5, 0.6, 0.75, 0.2\] has x2 < x1 or y2 < y1"):
        boxes_to_visual_pos(np.array([[0, 0, 1, 1], [0.5, 0.6, 0.75, 0.2]]))
    # float rounding just above 1 is tolerated and clipped
    np.testing.assert_array_equal(boxes_to_visual_pos(np.array([[0, 0, 1 + 1e-7, 1]])), [[0, 0, 1, 1]])


# --------------------------------------------------------------------------------------------------
# box_area / box_iou
# --------------------------------------------------------------------------------------------------


def test_box_area_and_iou_hand_computed():
    boxes_a = np.array([[0, 0, 2, 2], [0, 0, 4, 4]], np.float32)
    boxes_b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 2, 2]], np.float32)
    np.testing.assert_array_equal(box_area(boxes_a), [4, 16])
    iou = box_iou(boxes_a, boxes_b)
    assert iou.shape == (2, 4)
    expected = [
        [1 / 7, 1.0, 0.0, 1 / 4],  # overlap 1 of union 4+4-1; identical; disjoint; contained (1/4)
        [4 / 16, 4 / 16, 0.0, 1 / 16],
    ]
    np.testing.assert_allclose(iou, expected, rtol=1e-6)


def test_box_iou_of_empty_boxes_is_zero_not_nan():
    empty = np.array([[1, 1, 1, 1]], np.float32)
    iou = box_iou(empty, empty)
    assert np.isfinite(iou).all() and iou[0, 0] == 0
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_box_iou_torch_matches_numpy_and_has_gradients():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, (5, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)
    boxes_a = torch.from_numpy(boxes[:3]).requires_grad_()
    iou = box_iou(boxes_a, torch.from_numpy(boxes))
    assert isinstance(iou, torch.Tensor) and iou.shape == (3, 5)
    np.testing.assert_allclose(iou.detach().numpy(), box_iou(boxes[:3], boxes), rtol=1e-6)
    torch.testing.assert_close(torch.diagonal(iou), torch.ones(3))
    iou.sum().backward()
    assert boxes_a.grad is not None
    with pytest.raises(TypeError, match="both be numpy arrays or both be torch tensors"):
        box_iou(boxes, torch.from_numpy(boxes))
    with pytest.raises(ValueError, match="boxes_b must have shape"):
        box_iou(boxes, boxes[:, :3])


# --------------------------------------------------------------------------------------------------
# add_global_region / pad_regions
# --------------------------------------------------------------------------------------------------


def test_add_global_region_numpy_and_torch():
    feats = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], np.float32)
    pos = np.array([[0, 0, 0.5, 0.5, 0.25]] * 3, np.float32)
    new_feats, new_pos = add_global_region(feats, pos)
    assert new_feats.shape == (4, 2) and new_pos.shape == (4, 5)
    np.testing.assert_allclose(new_feats[0], [3.0, 3.0])
    np.testing.assert_array_equal(new_pos[0], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(new_feats[1:], feats)
    torch_feats, torch_pos = add_global_region(torch.from_numpy(feats), torch.from_numpy(pos[:, :4]))
    torch.testing.assert_close(torch_feats, torch.from_numpy(new_feats))
    torch.testing.assert_close(torch_pos[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_add_global_region_errors():
    with pytest.raises(ValueError, match="visual_feats has 0 regions"):
        add_global_region(np.zeros((0, 8)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"visual_pos must have shape \(num_regions=2, pos_dim\)"):
        add_global_region(np.zeros((2, 8)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="pos_dim 4 or 5"):
        add_global_region(np.zeros((2, 8)), np.zeros((2, 6)))


def test_pad_regions_pads_and_truncates():
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    pos = np.full((3, 4), 0.5, np.float32)
    padded_feats, padded_pos, mask = pad_regions(feats, pos, max_regions=5)
    assert padded_feats.shape == (5, 4) and padded_pos.shape == (5, 4) and mask.dtype == np.int64
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(padded_feats[:3], feats)
    assert not padded_feats[3:].any() and not padded_pos[3:].any()
    cut_feats, _, cut_mask = pad_regions(feats, pos, max_regions=2)
    np.testing.assert_array_equal(cut_feats, feats[:2])  # the first regions are kept
    np.testing.assert_array_equal(cut_mask, [1, 1])
    torch_feats, torch_pos, torch_mask = pad_regions(torch.from_numpy(feats), torch.from_numpy(pos), 4)
    assert torch_mask.dtype == torch.int64 and torch_mask.tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(torch_feats[:3], torch.from_numpy(feats))
    with pytest.raises(ValueError, match="max_regions"):
        pad_regions(feats, pos, max_regions=0)


# --------------------------------------------------------------------------------------------------
# validate_region_inputs
# --------------------------------------------------------------------------------------------------


def _random_boxes(*shape, pos_dim=4):
    """Random valid normalised boxes (x1 <= x2, y1 <= y2), plus their area for pos_dim 5."""
    corners = torch.rand(*shape, 2, 2)  # (..., x/y, two values)
    low, high = corners.min(-1).values, corners.max(-1).values
    boxes = torch.stack([low[..., 0], low[..., 1], high[..., 0], high[..., 1]], -1)
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))[..., None]
    return boxes if pos_dim == 4 else torch.cat([boxes, area], -1)


def _batch(feat_dim=8, pos_dim=4):
    feats = torch.randn(2, 3, feat_dim)
    pos = _random_boxes(2, 3, pos_dim=pos_dim)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return feats, pos, mask


def test_validate_region_inputs_accepts_good_batches():
    feats, pos, mask = _batch()
    validate_region_inputs(feats, pos, mask, feat_dim=8, pos_dim=4)
    validate_region_inputs(feats.numpy(), pos.numpy(), mask.numpy(), feat_dim=8, pos_dim=4)
    validate_region_inputs(feats, pos)


@pytest.mark.parametrize(
    "case, error, pattern",
    [
        ("feat_dim", ValueError, r"visual_feats has feature dimension 8 but the model expects feat_dim=2048"),
        ("feats_2d", ValueError, r"visual_feats must have shape \(batch_size, num_regions, feat_dim\), got .*\(3, 8\)"),
        ("pos_regions", ValueError, r"visual_pos must have shape \(batch_size=2, num_regions=3, pos_dim=4\), got"),
        ("pos_dim", ValueError, r"visual_pos has pos_dim 4 but the model expects pos_dim=5"),
        ("mask_shape", ValueError, r"visual_attention_mask must have shape \(batch_size=2, num_regions=3\), got"),
        ("mask_values", ValueError, r"visual_attention_mask must hold 0 \(padding\) or 1"),
        ("nan_feats", ValueError, r"visual_feats contains NaN or inf \(first at \(batch, region, dim\) \(1, 2, 5\)\)"),
        ("pixel_pos", ValueError, r"visual_pos must hold boxes normalised to \[0, 1\].*\(batch, region\) \(0, 1\)"),
        ("inverted_pos", ValueError, r"visual_pos must hold boxes .*x1 <= x2 and y1 <= y2.*\(batch, region\) \(1, 2\)"),
        ("list_feats", TypeError, r"visual_feats must be a torch.Tensor or numpy.ndarray, got list"),
    ],
)
def test_validate_region_inputs_errors(case, error, pattern):
    feats, pos, mask = _batch()
    kwargs = {"feat_dim": 8, "pos_dim": 4}
    if case == "feat_dim":
        kwargs["feat_dim"] = 2048
    elif case == "feats_2d":
        feats = feats[0]
    elif case == "pos_regions":
        pos = _random_boxes(2, 4)
    elif case == "pos_dim":
        kwargs["pos_dim"] = 5
    elif case == "mask_shape":
        mask = mask[:, :2]
    elif case == "mask_values":
        mask = mask * 2
    elif case == "nan_feats":
        feats[1, 2, 5] = float("nan")
    elif case == "pixel_pos":
        pos[0, 1] = torch.tensor([10.0, 20.0, 300.0, 400.0])
    elif case == "inverted_pos":
        pos[1, 2] = torch.tensor([0.6, 0.1, 0.2, 0.9])  # x2 < x1
    elif case == "list_feats":
        feats = feats.tolist()
    with pytest.raises(error, match=pattern):
        validate_region_inputs(feats, pos, mask, **kwargs)
