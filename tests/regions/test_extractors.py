"""Tests of hf_vl.regions.extractors: grid features (pixels / backbones) and DETR-style detector regions."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from region_extractor_test_utils import (
    IMAGE_SIZE,
    NUM_LABELS,
    NUM_QUERIES,
    random_images,
    tiny_conditional_detr,
    tiny_detr,
    tiny_rt_detr,
    tiny_yolos,
)
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    ConvNextConfig,
    ConvNextModel,
    DetrImageProcessorPil,
    ResNetConfig,
    ResNetModel,
    SwinConfig,
    SwinModel,
    ViTConfig,
    ViTModel,
    YolosImageProcessorPil,
)

from hf_vl.regions.extractors import (
    EXTRACTOR_CONFIG_NAME,
    EXTRACTOR_WEIGHTS_NAME,
    DetectorFeatureExtractor,
    GridFeatureExtractor,
    area_pool,
    load_region_extractor,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def shape_image(shape: str, colour: str = "red", box=(4, 4, 28, 28), size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = box
    if shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)
    return image


# --------------------------------------------------------------------------------------------------
# GridFeatureExtractor: outputs, boxes, inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos_dim", [4, 5])
@pytest.mark.parametrize("add_global_region", [False, True])
def test_grid_output_shapes_and_boxes(pos_dim, add_global_region):
    extractor = GridFeatureExtractor(grid_size=(2, 3), pos_dim=pos_dim, add_global_region=add_global_region)
    batch = extractor(random_images(2))
    num_regions = 6 + add_global_region
    assert extractor.feature_dim == 7 + 8 + 16 == 31
    assert extractor.num_regions == num_regions
    assert batch["visual_feats"].shape == (2, num_regions, 31)
    assert batch["visual_feats"].dtype == torch.float32
    assert batch["visual_pos"].shape == (2, num_regions, pos_dim)
    assert batch["visual_attention_mask"].dtype == torch.long
    assert batch["visual_attention_mask"].eq(1).all()
    expected_boxes = [[c / 3, r / 2, (c + 1) / 3, (r + 1) / 2] for r in range(2) for c in range(3)]
    if add_global_region:
        expected_boxes = [[0.0, 0.0, 1.0, 1.0]] + expected_boxes
    expected = torch.tensor(expected_boxes)
    if pos_dim == 5:
        area = (expected[:, 2] - expected[:, 0]) * (expected[:, 3] - expected[:, 1])
        expected = torch.cat([expected, area[:, None]], 1)
    torch.testing.assert_close(batch["visual_pos"][0], expected)
    torch.testing.assert_close(batch["visual_pos"][1], expected)


def test_grid_input_kinds_agree():
    extractor = GridFeatureExtractor(add_global_region=True)
    arrays = random_images(3, seed=1)
    reference = extractor(arrays)["visual_feats"]
    pil = [Image.fromarray(array) for array in arrays]
    float_arrays = [array.astype(np.float32) / 255 for array in arrays]
    batch_tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    uint8_tensors = [torch.from_numpy(array).permute(2, 0, 1) for array in arrays]
    for images in (pil, float_arrays, batch_tensor, uint8_tensors):
        torch.testing.assert_close(extractor(images)["visual_feats"], reference, atol=1e-5, rtol=1e-5)
    # One image alone is a batch of one; numpy outputs on request.
    single = extractor(pil[0], return_tensors="np")
    assert isinstance(single["visual_feats"], np.ndarray) and single["visual_feats"].shape == (1, 17, 31)
    np.testing.assert_allclose(single["visual_feats"][0], reference[0].numpy(), atol=1e-5)


def test_grid_resizes_to_image_size():
    extractor = GridFeatureExtractor(image_size=(32, 48), grid_size=2)
    big = Image.new("RGB", (300, 200), "blue")
    batch = extractor([big, Image.new("RGB", (10, 10), "blue")])
    torch.testing.assert_close(batch["visual_feats"][0], batch["visual_feats"][1], atol=1e-5, rtol=0)


def test_grid_converts_modes_and_rejects_bad_images():
    extractor = GridFeatureExtractor(grid_size=2)
    rgb = shape_image("circle", "blue")
    rgba = rgb.convert("RGBA")
    torch.testing.assert_close(extractor([rgba])["visual_feats"], extractor([rgb])["visual_feats"])
    # A fully transparent image is composited on white.
    transparent = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    torch.testing.assert_close(
        extractor([transparent])["visual_feats"], extractor([Image.new("RGB", (64, 64), "white")])["visual_feats"]
    )
    grey = extractor([rgb.convert("L")])["visual_feats"]
    assert grey.shape == (1, 4, 31) and torch.isfinite(grey).all()
    assert extractor([rgb.convert("P")])["visual_feats"].shape == (1, 4, 31)

    with pytest.raises(ValueError, match=r"`images\[0\]` is a PIL image in mode 'F'"):
        extractor([rgb.convert("L").convert("F")])
    # 16-bit images follow hf_vl's one RGB rule: scaled to 8 bits (not clipped to white, not refused)
    sixteen = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    torch.testing.assert_close(extractor([sixteen])["visual_feats"], grey, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="`images` is empty"):
        extractor([])
    nan_image = np.full((64, 64, 3), 0.5, dtype=np.float32)
    nan_image[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"`images`\[1\] holds NaN"):
        extractor([np.zeros((64, 64, 3), np.float32), nan_image])
    with pytest.raises(ValueError, match=r"`images`\[0\].*\[0, 1\]"):
        extractor([np.full((64, 64, 3), 200.0, dtype=np.float32)])
    with pytest.raises(ValueError, match=r"`images`\[0\].*shape"):
        extractor([np.zeros((2, 64, 64, 3), np.uint8)[0, None].reshape(1, 1, 64, 64, 3)])
    with pytest.raises(ValueError, match="`images`.*got str"):
        extractor("image.png")
    with pytest.raises(ValueError, match="return_tensors"):
        extractor([rgb], return_tensors="tf")


# --------------------------------------------------------------------------------------------------
# GridFeatureExtractor: the pixel descriptor sees colour and shape
# --------------------------------------------------------------------------------------------------


def _descriptor_parts(feats: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "mean_colour": feats[..., 0:3],
        "foreground_colour": feats[..., 3:6],
        "fraction": feats[..., 6],
        "edges": feats[..., 7:15],
        "silhouette": feats[..., 15:31],
    }


def test_pixel_descriptor_colour_and_position():
    extractor = GridFeatureExtractor(grid_size=(2, 2), add_global_region=True)
    # A red square filling exactly the top-left cell on a slightly tinted background.
    image = Image.new("RGB", (64, 64), (240, 236, 230))
    ImageDraw.Draw(image).rectangle((0, 0, 31, 31), fill=(255, 0, 0))
    parts = _descriptor_parts(extractor([image])["visual_feats"][0])
    red = torch.tensor([1.0, -1.0, -1.0])
    torch.testing.assert_close(parts["foreground_colour"][1], red, atol=2e-3, rtol=0)  # top-left cell
    torch.testing.assert_close(parts["foreground_colour"][0], red, atol=2e-3, rtol=0)  # global region
    torch.testing.assert_close(parts["fraction"], torch.tensor([0.25, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(parts["foreground_colour"][2:], torch.zeros(3, 3))  # empty cells
    # The top-left cell is full: its silhouette is all ones, the others all zeros.
    torch.testing.assert_close(parts["silhouette"][1], torch.ones(16))
    torch.testing.assert_close(parts["silhouette"][2:], torch.zeros(3, 16))


def test_pixel_descriptor_edges_tell_shapes_apart():
    extractor = GridFeatureExtractor(grid_size=(1, 1), add_global_region=False)
    box = (8, 8, 56, 56)
    edges = {
        shape: _descriptor_parts(extractor([shape_image(shape, "green", box)])["visual_feats"][0, 0])["edges"]
        for shape in ("rectangle", "triangle", "circle")
    }
    # 8 bins over 0-180 degrees: bin 0 = horizontal gradients (vertical edges), bin 4 = vertical gradients.
    axis_aligned = lambda histogram: (histogram[0] + histogram[4]) / histogram.sum()  # noqa: E731
    assert axis_aligned(edges["rectangle"]) > 0.95
    assert axis_aligned(edges["triangle"]) < 0.6
    assert edges["circle"].min() > 0.05 * edges["circle"].sum()  # every orientation occurs
    # Same shape, different colour: same edges; different colour -> different foreground colour.
    blue = _descriptor_parts(extractor([shape_image("triangle", "blue", box)])["visual_feats"][0, 0])
    torch.testing.assert_close(blue["edges"], edges["triangle"], atol=1e-4, rtol=1e-4)


def test_pixel_descriptor_on_easy_vqa_images_sees_the_colour():
    from hf_vl.data import load_easy_vqa

    questions = load_easy_vqa("test", max_questions_per_split=300).select_columns(["image", "question", "answer"])
    colours = {"red": 0, "green": 1, "blue": 2}
    rows = [row for row in questions if row["question"].startswith("what color") and row["answer"] in colours][:9]
    assert rows
    feats = GridFeatureExtractor(add_global_region=True)([row["image"] for row in rows])["visual_feats"]
    global_foreground_colour = _descriptor_parts(feats[:, 0])["foreground_colour"]  # (B, 3)
    assert global_foreground_colour.argmax(-1).tolist() == [colours[row["answer"]] for row in rows]


# --------------------------------------------------------------------------------------------------
# GridFeatureExtractor: projection, config, save / load, fingerprint
# --------------------------------------------------------------------------------------------------


def test_projection_is_seeded_and_isometric():
    images = random_images(2, seed=3)
    plain = GridFeatureExtractor()(images)["visual_feats"]
    projected = GridFeatureExtractor(projection_dim=64, seed=7)
    again = GridFeatureExtractor(projection_dim=64, seed=7)
    other = GridFeatureExtractor(projection_dim=64, seed=8)
    torch.testing.assert_close(projected.projection.weight, again.projection.weight, rtol=0, atol=0)
    assert not torch.equal(projected.projection.weight, other.projection.weight)
    feats = projected(images)["visual_feats"]
    assert feats.shape == (2, 16, 64) and projected.feature_dim == 64
    # projection_dim >= descriptor size: an isometry, every distance between regions is kept.
    torch.testing.assert_close(torch.cdist(feats[0], feats[1]), torch.cdist(plain[0], plain[1]), atol=1e-4, rtol=1e-4)
    smaller = GridFeatureExtractor(projection_dim=8)
    assert smaller(images)["visual_feats"].shape == (2, 16, 8)
    torch.testing.assert_close(smaller.projection.weight @ smaller.projection.weight.T, torch.eye(8), atol=1e-5, rtol=0)


def test_grid_config_roundtrip_and_save_pretrained(tmp_path):
    extractor = GridFeatureExtractor(
        image_size=(48, 64), grid_size=(3, 2), pos_dim=5, add_global_region=True, projection_dim=40,
        cell_pool_size=3, orientation_bins=6, foreground_threshold=0.2, seed=5,
    )  # fmt: skip
    config = extractor.to_dict()
    assert json.loads(json.dumps(config)) == config
    assert config["extractor_type"] == "grid" and config["backbone"] is None
    rebuilt = GridFeatureExtractor.from_dict(config)
    assert rebuilt.to_dict() == config
    images = random_images(2, seed=4)
    torch.testing.assert_close(rebuilt(images)["visual_feats"], extractor(images)["visual_feats"])
    assert rebuilt.fingerprint() == extractor.fingerprint()

    with torch.no_grad():
        extractor.projection.weight.add_(0.5)  # fine-tuned weights must survive save / load
    extractor.save_pretrained(tmp_path / "grid")
    assert (tmp_path / "grid" / EXTRACTOR_CONFIG_NAME).is_file()
    assert (tmp_path / "grid" / EXTRACTOR_WEIGHTS_NAME).is_file()
    loaded = load_region_extractor(tmp_path / "grid")
    assert isinstance(loaded, GridFeatureExtractor)
    torch.testing.assert_close(loaded(images)["visual_feats"], extractor(images)["visual_feats"])
    assert loaded.fingerprint() == extractor.fingerprint() != rebuilt.fingerprint()

    # No projection, no backbone: nothing to save but the config.
    GridFeatureExtractor().save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / EXTRACTOR_WEIGHTS_NAME).exists()
    assert GridFeatureExtractor.from_pretrained(tmp_path / "plain").to_dict() == GridFeatureExtractor().to_dict()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid_size": 0}, "grid_size"),
        ({"grid_size": (2, 2, 2)}, "grid_size"),
        ({"image_size": -1}, "image_size"),
        ({"pos_dim": 6}, "pos_dim"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"seed": -1}, "seed"),
        ({"foreground_threshold": 0}, "foreground_threshold"),
        ({"image_std": (1.0, 0.0, 1.0)}, "image_std"),
        ({"backbone": 3}, "backbone"),
    ],
)
def test_grid_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridFeatureExtractor(**kwargs)


def test_check_compatible():
    extractor = GridFeatureExtractor(projection_dim=32, pos_dim=5)
    extractor.check_compatible(SimpleNamespace(visual_feat_dim=32, visual_pos_dim=5))
    extractor.check_compatible({"visual_feat_dim": 32, "visual_pos_dim": 5})
    with pytest.raises(ValueError, match=r"feature_dim=32.*visual_feat_dim=2048"):
        extractor.check_compatible(SimpleNamespace(visual_feat_dim=2048, visual_pos_dim=5))
    with pytest.raises(ValueError, match=r"pos_dim=5.*visual_pos_dim=4"):
        extractor.check_compatible(SimpleNamespace(visual_feat_dim=32, visual_pos_dim=4))
    with pytest.raises(ValueError, match="visual_feat_dim"):
        extractor.check_compatible(SimpleNamespace(hidden_size=32))
    fitted = GridFeatureExtractor.for_model(SimpleNamespace(visual_feat_dim=24, visual_pos_dim=4))
    assert (fitted.feature_dim, fitted.pos_dim) == (24, 4)


def test_nan_features_raise():
    extractor = GridFeatureExtractor(projection_dim=8)
    with torch.no_grad():
        extractor.projection.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="visual_feats .*NaN"):
        extractor(random_images(1))


# --------------------------------------------------------------------------------------------------
# GridFeatureExtractor: vision backbones
# --------------------------------------------------------------------------------------------------


def _normalized(images, size) -> torch.Tensor:
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    assert pixels.shape[-1] == size
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


def test_vit_backbone_patch_tokens_are_mean_pooled_per_cell():
    torch.manual_seed(0)
    vit = ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8),
        add_pooling_layer=False,
    ).eval()  # fmt: skip
    extractor = GridFeatureExtractor(backbone=vit, grid_size=(2, 2), add_global_region=True)
    assert extractor.image_size == (32, 32) and extractor.feature_dim == 32
    images = random_images(2, size=32)
    feats = extractor(images)["visual_feats"]
    with torch.no_grad():
        tokens = vit(pixel_values=_normalized(images, 32)).last_hidden_state  # (B, 1 + 16, 32)
    patches = tokens[:, 1:].reshape(2, 4, 4, 32)  # CLS dropped, (B, h, w, D)
    for row in range(2):
        for col in range(2):
            cell = patches[:, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].mean(dim=(1, 2))
            torch.testing.assert_close(feats[:, 1 + 2 * row + col], cell, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats[:, 0], patches.mean(dim=(1, 2)), atol=1e-5, rtol=1e-5)


def test_convnext_swin_and_clip_backbones():
    torch.manual_seed(0)
    images = random_images(2, size=32)
    convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).eval()
    extractor = GridFeatureExtractor(backbone=convnext, image_size=32, grid_size=2)
    with torch.no_grad():
        feature_map = convnext(pixel_values=_normalized(images, 32)).last_hidden_state  # (B, 16, 4, 4)
    torch.testing.assert_close(
        extractor(images)["visual_feats"], area_pool(feature_map, 2, 2).flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5
    )
    assert extractor.feature_dim == 16

    # A BatchNorm backbone (0-d num_batches_tracked buffers) fingerprints and pools its (B, C, h, w) map.
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))
    resnet_extractor = GridFeatureExtractor(backbone=resnet.eval(), image_size=64, grid_size=2)
    assert len(resnet_extractor.fingerprint()) == 64
    assert resnet_extractor(random_images(1))["visual_feats"].shape == (1, 4, 16)

    swin_config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2)
    swin = SwinModel(swin_config)
    swin_feats = GridFeatureExtractor(backbone=swin.eval(), grid_size=2, projection_dim=12)(images)["visual_feats"]
    assert swin_feats.shape == (2, 4, 12)  # 4x4 tokens without CLS after one patch merging

    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=32, patch_size=16)).eval()  # fmt: skip
    clip_extractor = GridFeatureExtractor(backbone=clip, grid_size=(2, 2))
    with torch.no_grad():
        tokens = clip(pixel_values=_normalized(images, 32)).last_hidden_state  # (B, 1 + 4, 32)
    torch.testing.assert_close(clip_extractor(images)["visual_feats"], tokens[:, 1:], atol=1e-5, rtol=1e-5)


def test_backbone_save_and_load(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                             image_size=32, patch_size=8), add_pooling_layer=False)  # fmt: skip
    extractor = GridFeatureExtractor(backbone=vit, grid_size=2, projection_dim=16, add_global_region=True)
    extractor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / EXTRACTOR_CONFIG_NAME).read_text())
    assert config["backbone_class"] == "ViTModel" and config["backbone_config"]["hidden_size"] == 32
    loaded = GridFeatureExtractor.from_pretrained(tmp_path)
    images = random_images(2, size=32)
    torch.testing.assert_close(loaded(images)["visual_feats"], extractor(images)["visual_feats"])
    assert loaded.fingerprint() == extractor.fingerprint()
    # A backbone given as a saved transformers checkpoint path loads through AutoModel.
    vit.save_pretrained(tmp_path / "vit")
    from_path = GridFeatureExtractor(backbone=str(tmp_path / "vit"), grid_size=2)
    assert from_path.to_dict()["backbone"] == str(tmp_path / "vit")
    torch.testing.assert_close(
        from_path(images)["visual_feats"],
        GridFeatureExtractor(backbone=vit, grid_size=2)(images)["visual_feats"],
    )


# --------------------------------------------------------------------------------------------------
# DetectorFeatureExtractor
# --------------------------------------------------------------------------------------------------

DETECTORS = {
    "yolos": tiny_yolos,
    "detr": tiny_detr,
    "conditional_detr": tiny_conditional_detr,
    "rt_detr": tiny_rt_detr,
}
SOFTMAX_FAMILIES = {"yolos", "detr"}


@pytest.fixture(scope="module")
def detectors():
    return {name: build() for name, build in DETECTORS.items()}


def _manual_forward(detector, images):
    """The detector's per-query states, probabilities, scores and corner boxes, computed by hand."""
    with torch.no_grad():
        outputs = detector(pixel_values=_normalized(images, IMAGE_SIZE), output_hidden_states=True)
    states = outputs.last_hidden_state
    if detector.config.model_type == "yolos":
        states = states[:, -detector.config.num_detection_tokens :]  # the detection tokens
    if detector.config.model_type in SOFTMAX_FAMILIES:
        probs = outputs.logits.softmax(-1)
        scores = probs[..., :-1].max(-1).values
    else:
        probs = outputs.logits.sigmoid()
        scores = probs.max(-1).values
    cx, cy, w, h = outputs.pred_boxes.unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).clamp(0, 1)
    return outputs, states, probs, scores, corners


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_regions_are_the_top_k_queries(detectors, name):
    detector = detectors[name]
    extractor = DetectorFeatureExtractor(detector, top_k=5, image_size=IMAGE_SIZE)
    images = random_images(2, seed=11)
    batch = extractor(images)
    outputs, states, probs, scores, corners = _manual_forward(detector, images)
    num_logits = NUM_LABELS + 1 if name in SOFTMAX_FAMILIES else NUM_LABELS
    assert extractor.resolved_score_activation(num_logits) == ("softmax" if name in SOFTMAX_FAMILIES else "sigmoid")
    assert batch["cls_prob"].shape == (2, 5, num_logits)
    assert batch["visual_feats"].shape == (2, 5, 32) and extractor.feature_dim == 32
    assert batch["visual_pos"].shape == (2, 5, 4)
    assert batch["visual_attention_mask"].eq(1).all()
    for b in range(2):
        order = scores[b].argsort(descending=True)[:5]
        torch.testing.assert_close(batch["object_conf"][b], scores[b, order])
        assert (batch["object_conf"][b][:-1] >= batch["object_conf"][b][1:]).all()  # best first
        torch.testing.assert_close(batch["visual_feats"][b], states[b, order], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch["cls_prob"][b], probs[b, order])
        torch.testing.assert_close(batch["visual_pos"][b], corners[b, order])
    if name in SOFTMAX_FAMILIES:
        torch.testing.assert_close(batch["cls_prob"].sum(-1), torch.ones(2, 5))
        # The features are exactly what the class head reads.
        logits = detector.class_labels_classifier(batch["visual_feats"])
        torch.testing.assert_close(logits.softmax(-1), batch["cls_prob"], atol=1e-5, rtol=1e-5)
        assert (batch["object_ids"] < NUM_LABELS).all()  # never the "no object" class


def test_detector_boxes_clip_and_area(detectors):
    detector = detectors["detr"]
    extractor = DetectorFeatureExtractor(detector, top_k=NUM_QUERIES, pos_dim=5, image_size=IMAGE_SIZE)
    images = random_images(1, seed=12)
    batch = extractor(images)
    _, _, _, scores, corners = _manual_forward(detector, images)
    order = scores[0].argsort(descending=True)
    expected = corners[0, order]
    torch.testing.assert_close(batch["visual_pos"][0, :, :4], expected)
    area = (expected[:, 2] - expected[:, 0]) * (expected[:, 3] - expected[:, 1])
    torch.testing.assert_close(batch["visual_pos"][0, :, 4], area)
    assert batch["visual_pos"].min() >= 0 and batch["visual_pos"].max() <= 1


def test_detector_padding_threshold_and_global_region(detectors):
    detector = detectors["yolos"]
    images = random_images(2, seed=13)
    # top_k beyond the number of queries: zero padding with mask 0.
    padded = DetectorFeatureExtractor(detector, top_k=NUM_QUERIES + 4, image_size=IMAGE_SIZE)(images)
    assert padded["visual_feats"].shape == (2, NUM_QUERIES + 4, 32)
    assert padded["visual_attention_mask"][:, :NUM_QUERIES].eq(1).all()
    assert padded["visual_attention_mask"][:, NUM_QUERIES:].eq(0).all()
    assert padded["visual_feats"][:, NUM_QUERIES:].eq(0).all() and padded["visual_pos"][:, NUM_QUERIES:].eq(0).all()

    full = DetectorFeatureExtractor(detector, top_k=8, image_size=IMAGE_SIZE)(images)
    threshold = float(full["object_conf"][0, 2])  # keeps exactly 3 regions of image 0
    thresholded = DetectorFeatureExtractor(detector, top_k=8, score_threshold=threshold, image_size=IMAGE_SIZE)(images)
    keep = full["object_conf"] >= threshold
    keep[:, 0] = True  # min_regions=1 (the default) keeps the best region of every image
    assert thresholded["visual_attention_mask"].bool().tolist() == keep.tolist()
    assert thresholded["visual_attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    torch.testing.assert_close(thresholded["visual_feats"], full["visual_feats"] * keep[..., None])
    # min_regions keeps the best regions whatever their score.
    strict = DetectorFeatureExtractor(detector, top_k=8, score_threshold=1.0, min_regions=2, image_size=IMAGE_SIZE)
    assert strict(images)["visual_attention_mask"].sum(1).tolist() == [2, 2]

    with_global = DetectorFeatureExtractor(
        detector, top_k=8, score_threshold=threshold, add_global_region=True, pos_dim=5, image_size=IMAGE_SIZE
    )(images)
    assert with_global["visual_feats"].shape == (2, 9, 32)
    assert with_global["visual_attention_mask"][:, 0].eq(1).all()
    torch.testing.assert_close(with_global["visual_pos"][:, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]] * 2))
    mean_kept = thresholded["visual_feats"][0, :3].mean(0)
    torch.testing.assert_close(with_global["visual_feats"][0, 0], mean_kept, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(with_global["visual_feats"][:, 1:], thresholded["visual_feats"])


def test_detector_with_image_processor_and_save_load(detectors, tmp_path):
    detector = detectors["detr"]
    processor = DetrImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pad=False)
    extractor = DetectorFeatureExtractor(detector, image_processor=processor, top_k=4, score_threshold=0.0)
    images = [Image.fromarray(array) for array in random_images(2, size=48, seed=14)]
    batch = extractor(images)
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        outputs = detector(**inputs)
    scores = outputs.logits.softmax(-1)[..., :-1].max(-1).values
    order = scores[0].argsort(descending=True)[:4]
    torch.testing.assert_close(batch["visual_feats"][0], outputs.last_hidden_state[0, order], atol=1e-5, rtol=1e-5)

    extractor.save_pretrained(tmp_path / "detr")
    for file_name in (EXTRACTOR_CONFIG_NAME, "config.json", "model.safetensors", "preprocessor_config.json"):
        assert (tmp_path / "detr" / file_name).is_file()
    loaded = load_region_extractor(tmp_path / "detr")
    assert isinstance(loaded, DetectorFeatureExtractor)
    assert (loaded.top_k, loaded.score_threshold) == (4, 0.0) and loaded.image_processor is not None
    torch.testing.assert_close(loaded(images)["visual_feats"], batch["visual_feats"], atol=1e-5, rtol=1e-5)
    assert loaded.fingerprint() == extractor.fingerprint()
    # Overrides at load time; from a model instance.
    assert DetectorFeatureExtractor.from_pretrained(tmp_path / "detr", top_k=7).top_k == 7
    from_instance = DetectorFeatureExtractor.from_pretrained(detector, top_k=3, image_size=IMAGE_SIZE)
    assert from_instance(images)["visual_feats"].shape == (2, 3, 32)


def test_yolos_from_plain_checkpoint(detectors, tmp_path):
    detector = detectors["yolos"]
    detector.save_pretrained(tmp_path)
    YolosImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pad=False).save_pretrained(tmp_path)
    extractor = DetectorFeatureExtractor.from_pretrained(tmp_path, top_k=6, pos_dim=5)
    assert extractor.top_k == 6 and extractor.pos_dim == 5 and extractor.image_processor is not None
    batch = extractor([Image.fromarray(array) for array in random_images(2, seed=15)])
    assert batch["visual_feats"].shape == (2, 6, 32) and batch["visual_pos"].shape == (2, 6, 5)
    assert extractor.output_shapes()["cls_prob"] == ((6, NUM_LABELS + 1), "float32")
    extractor.check_compatible(SimpleNamespace(visual_feat_dim=32, visual_pos_dim=5))
    with pytest.raises(ValueError, match=r"feature_dim=32.*visual_feat_dim=2048"):
        extractor.check_compatible(SimpleNamespace(visual_feat_dim=2048, visual_pos_dim=5))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"top_k": 0}, "top_k"), ({"score_threshold": 1.5}, "score_threshold"), ({"min_regions": 9}, "min_regions"),
     ({"score_activation": "relu"}, "score_activation"), ({"pos_dim": 3}, "pos_dim")],
)  # fmt: skip
def test_detector_bad_config(detectors, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DetectorFeatureExtractor(detectors["yolos"], **{"top_k": 8, **kwargs})
    with pytest.raises(ValueError, match="detector"):
        DetectorFeatureExtractor(torch.nn.Linear(2, 2))


def test_score_activation_override(detectors):
    detector = detectors["detr"]
    extractor = DetectorFeatureExtractor(detector, top_k=3, score_activation="sigmoid", image_size=IMAGE_SIZE)
    images = random_images(1, seed=16)
    batch = extractor(images)
    with torch.no_grad():
        logits = detector(pixel_values=_normalized(images, IMAGE_SIZE)).logits
    expected = logits.sigmoid().max(-1).values[0].sort(descending=True).values[:3]
    torch.testing.assert_close(batch["object_conf"][0], expected)
    assert math.isclose(float(batch["cls_prob"][0].max()), float(expected[0]), rel_tol=1e-6)
