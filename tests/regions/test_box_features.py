"""hf_vl.regions.BoxFeatureExtractor: features of given boxes (crop, frame with the surrounding background, describe)
see what each box holds, normalise the boxes into `visual_pos`, pad ragged box lists, refuse bad boxes naming them,
and round-trip through save_pretrained / from_pretrained."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hf_vl.regions import BOX_FEATURE_EXTRACTOR_SUBFOLDER, BoxFeatureExtractor, GridFeatureExtractor


BACKGROUND = (238, 243, 250)


def _scene() -> Image.Image:
    """A 128x96 image: a red square at [20, 30, 60, 70) and a blue square at [80, 10, 110, 40)."""
    image = Image.new("RGB", (128, 96), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 30, 59, 69], fill=(220, 20, 20))
    draw.rectangle([80, 10, 109, 39], fill=(20, 20, 220))
    return image


# the descriptor layout of the default extractor: mean colour (3), foreground colour (3), fraction (1), 8 edges, 6x6
FOREGROUND_COLOUR, FRACTION, SILHOUETTE = slice(3, 6), 6, slice(15, 51)


def test_features_describe_what_each_box_holds():
    extractor = BoxFeatureExtractor()
    tight_red, tight_blue, empty, shifted_red = [20, 30, 60, 70], [80, 10, 110, 40], [0, 75, 20, 95], [35, 30, 75, 70]
    regions = extractor(_scene(), boxes=[tight_red, tight_blue, empty, shifted_red])
    feats = regions["visual_feats"][0]
    assert feats.shape == (4, extractor.feature_dim) == (4, 51)
    # foreground colour (normalised to [-1, 1]): red box red, blue box blue, even though each tight crop's border is
    # the shape itself (the frame gives the descriptor the true background)
    red, blue = feats[0, FOREGROUND_COLOUR], feats[1, FOREGROUND_COLOUR]
    assert red[0] > 0.6 and red[2] < -0.6 and blue[2] > 0.6 and blue[0] < -0.6
    assert feats[0, FRACTION] > 0.5 and feats[2, FRACTION] == 0  # a tight box is mostly shape, an empty one has none
    # silhouette (6x6 over the framed crop): the tight box is full up to its frame on both sides; the shifted box
    # cuts the square at its left and is empty on its right
    tight, shifted = feats[0, SILHOUETTE].view(6, 6), feats[3, SILHOUETTE].view(6, 6)
    assert tight[2:4, 1].min() > 0.9 and tight[2:4, 4].min() > 0.9
    assert shifted[2:4, 1].min() > 0.9 and shifted[2:4, 4].max() < 0.1


def test_visual_pos_are_the_normalised_boxes_and_both_box_formats_agree():
    extractor = BoxFeatureExtractor(pos_dim=5)
    pixel = extractor(_scene(), boxes=[[20, 30, 60, 70], [64, 0, 128, 96]])
    expected = torch.tensor([[20 / 128, 30 / 96, 60 / 128, 70 / 96], [0.5, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(pixel["visual_pos"][0, :, :4], expected)
    torch.testing.assert_close(pixel["visual_pos"][0, :, 4], (expected[:, 2] - expected[:, 0]) * (expected[:, 3] - expected[:, 1]))
    normalized = extractor(_scene(), boxes=expected.numpy(), box_format="normalized")
    torch.testing.assert_close(normalized["visual_feats"], pixel["visual_feats"])
    torch.testing.assert_close(normalized["visual_pos"], pixel["visual_pos"])


def test_several_images_pad_ragged_box_lists_and_match_one_by_one():
    extractor = BoxFeatureExtractor()
    scene, flipped = _scene(), _scene().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    boxes = [[[20, 30, 60, 70]], [[68, 30, 108, 70], [18, 10, 48, 40], [0, 0, 128, 96]]]
    batch = extractor([scene, flipped], boxes=boxes, return_tensors="np")
    assert batch["visual_feats"].shape == (2, 3, 51) and batch["visual_attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert not batch["visual_feats"][0, 1:].any() and not batch["visual_pos"][0, 1:].any()
    for index, image in enumerate((scene, flipped)):
        alone = extractor(image, boxes=boxes[index], return_tensors="np")["visual_feats"][0]
        np.testing.assert_allclose(batch["visual_feats"][index, : len(boxes[index])], alone, atol=1e-6)
    # the flipped image's red square (mirrored box) has the red square's colour and fill
    np.testing.assert_allclose(batch["visual_feats"][1, 0, :7], batch["visual_feats"][0, 0, :7], atol=1e-5)


def test_degenerate_and_whole_image_boxes_still_give_finite_features():
    extractor = BoxFeatureExtractor()
    regions = extractor(np.asarray(_scene()), boxes=[[10.5, 10.5, 10.5, 10.5], [0, 0, 128, 96], [127.5, 95.5, 128, 96]])
    assert torch.isfinite(regions["visual_feats"]).all() and regions["visual_feats"].shape == (1, 3, 51)


@pytest.mark.parametrize(
    "boxes, box_format, message",
    [
        (None, "pixel", "`boxes` is missing"),
        ([], "pixel", "`boxes` is empty"),
        ([[0, 0, 10]], "pixel", r"`boxes` must have shape \(num_boxes, 4\)"),
        ([[0, 0, 10, 10], [100, 10, 140, 40]], "pixel", r"boxes\[1\] = \[100, 10, 140, 40\] lies outside the 128x96"),
        ([[30, 10, 20, 40]], "pixel", r"boxes\[0\] = \[30, 10, 20, 40\] has x2 < x1"),
        ([[0.1, 0.1, 1.4, 0.5]], "normalized", r"`boxes\[0\]` = \[0.1, 0.1, 1.4, 0.5\] lies outside \[0, 1\]"),
        ([[np.nan, 0, 10, 10]], "pixel", "NaN"),
        ([[0, 0, 10, 10]], "xywh", "`box_format` must be one of"),
    ],
)
def test_bad_boxes_are_refused_naming_the_argument(boxes, box_format, message):
    with pytest.raises(ValueError, match=message):
        BoxFeatureExtractor()(_scene(), boxes=boxes, box_format=box_format)


def test_one_box_list_per_image_is_required():
    with pytest.raises(ValueError, match="`images` holds 2 images, so `boxes` must be a list of 2"):
        BoxFeatureExtractor()([_scene(), _scene()], boxes=[[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"boxes\[1\]` is empty"):
        BoxFeatureExtractor()([_scene(), _scene()], boxes=[[[0, 0, 10, 10]], []])


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="crop_size"):
        BoxFeatureExtractor(crop_size=2)
    with pytest.raises(ValueError, match="margin_fraction"):
        BoxFeatureExtractor(margin_fraction=0.5)
    with pytest.raises(ValueError, match=r"descriptor.image_size` \(64, 64\) must be \(crop_size, crop_size\)"):
        BoxFeatureExtractor(descriptor=GridFeatureExtractor(image_size=64))


def test_save_and_load_round_trip_with_a_projected_descriptor(tmp_path):
    descriptor = GridFeatureExtractor(image_size=24, grid_size=2, projection_dim=10, seed=3)
    with torch.no_grad():
        descriptor.projection.weight.mul_(2.0)  # weights that differ from the seeded init must be saved
    extractor = BoxFeatureExtractor(descriptor=descriptor, crop_size=24, margin_fraction=0.2, pos_dim=5)
    assert extractor.feature_dim == 4 * 10
    model_folder = tmp_path / "model"
    extractor.save_pretrained(model_folder / BOX_FEATURE_EXTRACTOR_SUBFOLDER)
    assert BoxFeatureExtractor.is_saved_in(model_folder) and not BoxFeatureExtractor.is_saved_in(tmp_path)
    for folder in (model_folder, model_folder / BOX_FEATURE_EXTRACTOR_SUBFOLDER):
        loaded = BoxFeatureExtractor.from_pretrained(folder)
        assert loaded.to_dict() == extractor.to_dict() and loaded.fingerprint() == extractor.fingerprint()
        boxes = [[20, 30, 60, 70], [80, 10, 110, 40]]
        torch.testing.assert_close(loaded(_scene(), boxes)["visual_feats"], extractor(_scene(), boxes)["visual_feats"])
    with pytest.raises(ValueError, match="holds no BoxFeatureExtractor"):
        BoxFeatureExtractor.from_pretrained(tmp_path)


def test_compatibility_check_against_a_model_config():
    extractor = BoxFeatureExtractor()
    extractor.check_compatible({"visual_feat_dim": 51, "visual_pos_dim": 4})
    with pytest.raises(ValueError, match="feature_dim=51 does not match the model's config.visual_feat_dim=31"):
        extractor.check_compatible({"visual_feat_dim": 31, "visual_pos_dim": 4})
