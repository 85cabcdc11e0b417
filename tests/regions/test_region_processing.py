"""RegionProcessor: tokenizer + region source, from raw images (through an extractor) or precomputed regions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from region_extractor_test_utils import IMAGE_SIZE, tiny_yolos
from transformers import AutoTokenizer, LxmertConfig

from hf_vl.regions import (
    DetectorFeatureExtractor,
    GridFeatureExtractor,
    RegionFeatureExtractor,
    RegionProcessor,
    extract_region_features,
    write_region_features,
)
from hf_vl.regions.processing import REGION_EXTRACTOR_SUBFOLDER, REGION_PROCESSOR_CONFIG_NAME
from hf_vl.training import local_pretrained_path

QUESTIONS = ["what color is the shape?", "is there a circle in the image?"]
TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
REGION_KEYS = ("visual_feats", "visual_pos", "visual_attention_mask")


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def extractor():
    # a projection gives the extractor weights, so the save / load round trip has a weights file to restore
    return GridFeatureExtractor(image_size=32, grid_size=(2, 3), projection_dim=24, seed=3)


@pytest.fixture(scope="module")
def processor(tokenizer, extractor):
    return RegionProcessor(tokenizer, extractor)


def shape_image(colour: str, shape: str = "rectangle", size: int = 40) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = (size // 5, size // 4, 3 * size // 4, 4 * size // 5)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="module")
def images():
    return [shape_image("red"), shape_image("blue", "circle")]


def region_batch(batch_size=2, num_regions=5, feat_dim=24, pos_dim=4, seed=0):
    generator = np.random.default_rng(seed)
    feats = generator.normal(size=(batch_size, num_regions, feat_dim))
    corners = np.sort(generator.uniform(size=(batch_size, num_regions, 2, 2)), axis=2)  # x1 <= x2, y1 <= y2
    pos = np.concatenate([corners[:, :, 0], corners[:, :, 1]], axis=-1)  # x1, y1, x2, y2
    if pos_dim == 5:
        pos = np.concatenate([pos, ((pos[..., 2] - pos[..., 0]) * (pos[..., 3] - pos[..., 1]))[..., None]], -1)
    return feats, pos


# --- raw images ----------------------------------------------------------------------------------------------------


def test_raw_images_run_through_the_extractor(processor, extractor, tokenizer, images):
    batch = processor(images=images, text=QUESTIONS)
    assert set(batch) == set(TEXT_KEYS + REGION_KEYS)
    expected = extractor(images)
    for key in REGION_KEYS:
        torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    assert batch["visual_feats"].shape == (2, 6, 24) and batch["visual_feats"].dtype == torch.float32
    assert batch["visual_pos"].shape == (2, 6, 4)
    assert batch["visual_attention_mask"].dtype == torch.int64 and bool((batch["visual_attention_mask"] == 1).all())
    text = tokenizer(QUESTIONS, padding="longest", truncation=True, return_tensors="pt")
    for key in TEXT_KEYS:
        assert torch.equal(batch[key], text[key]), key
    assert not batch["visual_feats"].requires_grad


def test_single_image_path_and_numpy(processor, images, tmp_path):
    path = tmp_path / "red.png"
    images[0].save(path)
    from_pil = processor(images=images[0], text=QUESTIONS[0])
    from_path = processor(images=str(path), text=QUESTIONS[0])
    from_array = processor(images=np.array(images[0]), text=QUESTIONS[0], return_tensors="np")
    assert from_pil["visual_feats"].shape == (1, 6, 24)
    torch.testing.assert_close(from_path["visual_feats"], from_pil["visual_feats"])
    assert isinstance(from_array["visual_feats"], np.ndarray) and isinstance(from_array["input_ids"], np.ndarray)
    np.testing.assert_allclose(from_array["visual_feats"], from_pil["visual_feats"].numpy(), atol=1e-6)


def test_images_follow_the_shared_rgb_rule(processor, images):
    """RGBA is composited over white and 16-bit images are scaled to 8 bits (the pipelines' and METER's rule)."""
    from PIL import Image

    rgb = np.asarray(images[0], dtype=np.float64)
    alpha = np.linspace(0, 255, rgb.shape[1]).round()[None, :, None] * np.ones(rgb.shape[:2] + (1,))
    rgba = Image.fromarray(np.concatenate([rgb, alpha], -1).astype(np.uint8))
    composited = Image.fromarray(np.round(rgb * alpha / 255 + 255 * (1 - alpha / 255)).astype(np.uint8))
    torch.testing.assert_close(processor(images=rgba)["visual_feats"], processor(images=composited)["visual_feats"],
                               atol=2e-2, rtol=0)  # fmt: skip
    gray = np.asarray(images[0].convert("L"), dtype=np.float64)
    sixteen_bit = Image.fromarray(np.round(gray * 257).astype(np.uint16))
    assert sixteen_bit.mode == "I;16"
    torch.testing.assert_close(processor(images=sixteen_bit)["visual_feats"],
                               processor(images=images[0].convert("L"))["visual_feats"])  # fmt: skip
    with pytest.raises(ValueError, match=r"`images\[1\]` is a PIL image in mode 'F'"):
        processor(images=[images[0], Image.new("F", (8, 8))])
    with pytest.raises(ValueError, match=r"`images` has no pixels"):
        processor(images=Image.new("RGB", (0, 8)))


def test_images_without_text_give_region_inputs_only(processor, images):
    batch = processor(images=images)
    assert set(batch) == set(REGION_KEYS)


def test_text_without_regions_gives_text_inputs_only(processor, tokenizer):
    """The pipelines encode a query and its candidates apart: text alone is tokenised as the tokenizer does."""
    batch = processor(text=["is there a red circle?", "what shape?"], padding=True)
    assert set(batch) == set(TEXT_KEYS)
    expected = tokenizer(["is there a red circle?", "what shape?"], padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], expected["input_ids"])


def test_default_processor_uses_the_grid_extractor(tokenizer):
    processor = RegionProcessor(tokenizer)
    assert isinstance(processor.feature_extractor, GridFeatureExtractor)
    assert (processor.feat_dim, processor.pos_dim) == (processor.feature_extractor.feature_dim, 4)
    projected = RegionProcessor(tokenizer, feat_dim=64, pos_dim=5)
    assert projected.feature_extractor.feature_dim == 64 and projected.feature_extractor.pos_dim == 5
    batch = projected(images=[shape_image("green")], text="what shape is it?")
    assert batch["visual_feats"].shape == (1, 16, 64) and batch["visual_pos"].shape == (1, 16, 5)


def test_detector_extractor_keeps_only_model_inputs(tokenizer, tmp_path):
    extractor = DetectorFeatureExtractor(tiny_yolos(), top_k=4, image_size=IMAGE_SIZE)
    processor = RegionProcessor(tokenizer, extractor)
    batch = processor(images=[shape_image("red", size=IMAGE_SIZE)], text=QUESTIONS[0])
    assert set(batch) == set(TEXT_KEYS + REGION_KEYS)  # cls_prob / object_ids are extraction outputs, not inputs
    assert batch["visual_feats"].shape == (1, 4, extractor.feature_dim)
    processor.save_pretrained(tmp_path)
    reloaded = RegionProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.feature_extractor, DetectorFeatureExtractor)
    again = reloaded(images=[shape_image("red", size=IMAGE_SIZE)], text=QUESTIONS[0])
    for key in REGION_KEYS:
        torch.testing.assert_close(again[key], batch[key])


# --- precomputed regions -------------------------------------------------------------------------------------------


def test_precomputed_batch(processor):
    feats, pos = region_batch()
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batch = processor(text=QUESTIONS, visual_feats=feats, visual_pos=pos, visual_attention_mask=mask)
    assert set(batch) == set(TEXT_KEYS + REGION_KEYS)
    assert batch["visual_feats"].dtype == torch.float32 and batch["visual_pos"].dtype == torch.float32
    torch.testing.assert_close(batch["visual_feats"], torch.from_numpy(feats).float())
    torch.testing.assert_close(batch["visual_pos"], torch.from_numpy(pos).float())
    assert batch["visual_attention_mask"].tolist() == mask.tolist()
    assert batch["visual_attention_mask"].dtype == torch.int64


def test_precomputed_single_image_torch_and_default_mask(processor):
    feats, pos = region_batch(batch_size=1)
    batch = processor(text=QUESTIONS[0], visual_feats=torch.from_numpy(feats[0]), visual_pos=torch.from_numpy(pos[0]))
    assert batch["visual_feats"].shape == (1, 5, 24)
    assert batch["visual_attention_mask"].tolist() == [[1] * 5]


def test_precomputed_per_image_lists_are_padded(processor):
    feats, pos = region_batch(num_regions=4)
    batch = processor(
        text=QUESTIONS, visual_feats=[feats[0][:2], feats[1]], visual_pos=[pos[0][:2], pos[1]], return_tensors="np"
    )
    assert batch["visual_feats"].shape == (2, 4, 24)
    assert batch["visual_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert not batch["visual_feats"][0, 2:].any()


def test_precomputed_regions_of_extracted_columns(processor, extractor, images):
    """Columns written by extract_region_features feed the processor and equal the on-the-fly regions."""
    import datasets

    dataset = datasets.Dataset.from_dict({"image": images, "image_id": ["0", "1"]})
    with_regions = extract_region_features(dataset, extractor, desc=None).with_format("numpy")
    columns = {key: with_regions[key] for key in REGION_KEYS}
    from_columns = processor(text=QUESTIONS, **columns)
    from_images = processor(images=images, text=QUESTIONS)
    for key in REGION_KEYS:
        torch.testing.assert_close(from_columns[key], from_images[key])
    assert callable(write_region_features)


# --- errors --------------------------------------------------------------------------------------------------------

FEATS, POS = region_batch(batch_size=1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(images="IMAGE", visual_feats=FEATS, visual_pos=POS, text="q"), ValueError, r"`images`.*not both"),
        (dict(), ValueError, r"`text=` and/or a region source: `images=` .* or `visual_feats=`"),
        (dict(text="q", visual_feats=FEATS), ValueError, r"`visual_feats` needs `visual_pos`"),
        (dict(text="q", visual_pos=POS), ValueError, r"without `visual_feats`"),
        (dict(text="q", visual_feats=np.where(np.arange(24) == 3, np.nan, FEATS), visual_pos=POS), ValueError, "NaN"),
        (dict(text="q", visual_feats=FEATS, visual_pos=POS * 3 + 0.5), ValueError, r"normalised to \[0, 1\]"),
        (dict(text="q", visual_feats=FEATS, visual_pos=-POS - 0.1), ValueError, r"normalised to \[0, 1\]"),
        (dict(text="q", visual_feats=FEATS[..., :20], visual_pos=POS), ValueError, "feat_dim=24"),
        (dict(text="q", visual_feats=FEATS, visual_pos=region_batch(1, pos_dim=5)[1]), ValueError, "pos_dim=4"),
        (dict(text="q", visual_feats=FEATS, visual_pos=POS, visual_attention_mask=np.full((1, 5), 2)), ValueError,
         "0 \\(padding\\) or 1"),
        (dict(text=QUESTIONS, visual_feats=FEATS, visual_pos=POS), ValueError, "2 text\\(s\\) and 1 image"),
        (dict(text="q", images="TWO_IMAGES"), ValueError, "1 text\\(s\\) and 2 image"),
        (dict(text="", visual_feats=FEATS, visual_pos=POS), ValueError, "`text` must be a non-empty string"),
        (dict(text=["q", "  "], images="TWO_IMAGES"), ValueError, r"`text\[1\]` must be a non-empty string"),
        (dict(text=[], visual_feats=FEATS, visual_pos=POS), ValueError, "empty list"),
        (dict(text=[3], visual_feats=FEATS, visual_pos=POS), TypeError, r"`text\[0\]` must be a string"),
        (dict(text="q", images=[]), ValueError, "`images` is empty"),
        (dict(text="q", visual_feats=FEATS, visual_pos=POS[..., [2, 1, 0, 3]]),
         ValueError, r"visual_pos must hold boxes .*x1 <= x2"),
        (dict(text="q", visual_feats=FEATS, visual_pos=POS, return_tensors="tf"), ValueError, "return_tensors"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_naming_the_argument(processor, images, kwargs, error, match):
    if kwargs.get("images") == "IMAGE":
        kwargs["images"] = images[0]
    elif kwargs.get("images") == "TWO_IMAGES":
        kwargs["images"] = images
    with pytest.raises(error, match=match):
        processor(**kwargs)


def test_processor_without_extractor(tokenizer, images):
    processor = RegionProcessor(tokenizer, feature_extractor=None, feat_dim=24, pos_dim=4)
    with pytest.raises(ValueError, match="no `feature_extractor`"):
        processor(images=images, text=QUESTIONS)
    feats, pos = region_batch()
    assert processor(text=QUESTIONS, visual_feats=feats, visual_pos=pos)["visual_feats"].shape == (2, 5, 24)
    with pytest.raises(ValueError, match="feat_dim=24"):
        processor(text=QUESTIONS, visual_feats=feats[..., :8], visual_pos=pos)
    unchecked = RegionProcessor(tokenizer, feature_extractor=None)
    assert unchecked(text=QUESTIONS, visual_feats=feats[..., :8], visual_pos=pos)["visual_feats"].shape == (2, 5, 8)


def test_bad_construction(tokenizer, extractor):
    with pytest.raises(ValueError, match="`feat_dim`=16 does not match"):
        RegionProcessor(tokenizer, extractor, feat_dim=16)
    with pytest.raises(ValueError, match="`feature_extractor` must be"):
        RegionProcessor(tokenizer, feature_extractor="detr")
    with pytest.raises(ValueError, match="`feature_extractor` must be"):
        RegionProcessor(tokenizer, feature_extractor=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`pos_dim` must be a positive int"):
        RegionProcessor(tokenizer, feature_extractor=None, pos_dim=0)


def test_check_compatible(processor, tokenizer):
    tiny = dict(hidden_size=32, l_layers=1, x_layers=1, r_layers=1, num_attention_heads=4, visual_pos_dim=4)
    processor.check_compatible(LxmertConfig(visual_feat_dim=24, **tiny))
    with pytest.raises(ValueError, match="visual_feat_dim=2048"):
        processor.check_compatible(LxmertConfig(visual_feat_dim=2048, **tiny))
    bare = RegionProcessor(tokenizer, feature_extractor=None, feat_dim=24, pos_dim=4)
    bare.check_compatible({"visual_feat_dim": 24, "visual_pos_dim": 4})
    with pytest.raises(ValueError, match="pos_dim=4 does not match the model's config.visual_pos_dim=5"):
        bare.check_compatible({"visual_feat_dim": 24, "visual_pos_dim": 5})
    with pytest.raises(ValueError, match="no `visual_feat_dim`"):
        bare.check_compatible({"hidden_size": 32})


# --- save / load ---------------------------------------------------------------------------------------------------


def test_save_load_round_trip(processor, images, tmp_path):
    # the processor shares the model's folder: the extractor's model.safetensors must not land next to the model's
    (tmp_path / "model.safetensors").write_bytes(b"model weights")
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"model weights"
    config = json.loads((tmp_path / REGION_PROCESSOR_CONFIG_NAME).read_text())
    assert config["processor_class"] == "RegionProcessor" and config["extractor_type"] == "grid"
    assert (config["feat_dim"], config["pos_dim"], config["feature_extractor"]) == (24, 4, REGION_EXTRACTOR_SUBFOLDER)
    extractor_files = set(os.listdir(tmp_path / REGION_EXTRACTOR_SUBFOLDER))
    assert {"region_extractor_config.json", "model.safetensors"} <= extractor_files
    assert RegionProcessor.is_saved_in(tmp_path)

    reloaded = RegionProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.feature_extractor, GridFeatureExtractor)
    assert reloaded.feature_extractor.fingerprint() == processor.feature_extractor.fingerprint()
    before, after = processor(images=images, text=QUESTIONS), reloaded(images=images, text=QUESTIONS)
    assert set(before) == set(after)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


def test_save_load_without_extractor(tokenizer, tmp_path):
    RegionProcessor(tokenizer, feature_extractor=None, feat_dim=2048, pos_dim=5).save_pretrained(tmp_path)
    reloaded = RegionProcessor.from_pretrained(tmp_path)
    assert reloaded.feature_extractor is None and (reloaded.feat_dim, reloaded.pos_dim) == (2048, 5)
    assert not (tmp_path / REGION_EXTRACTOR_SUBFOLDER).exists()


def test_from_pretrained_needs_a_saved_processor(tmp_path):
    with pytest.raises(ValueError, match=REGION_PROCESSOR_CONFIG_NAME):
        RegionProcessor.from_pretrained(tmp_path)


def test_public_names():
    import hf_vl.regions as regions

    for name in ("RegionProcessor", "GridFeatureExtractor", "DetectorFeatureExtractor", "RegionFeatureExtractor",
                 "extract_region_features", "write_region_features", "load_region_features", "validate_region_inputs"):
        assert name in regions.__all__ and getattr(regions, name) is not None
    assert issubclass(GridFeatureExtractor, RegionFeatureExtractor)
