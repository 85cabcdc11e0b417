# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Image processor for METER.

METER ("An Empirical Study of Training End-to-End Vision-and-Language Transformers", Dou et al., CVPR 2022,
https://arxiv.org/abs/2111.02387) feeds its vision encoder (CLIP-ViT or Swin) square crops:
resize the shorter side to the image resolution with bicubic resampling, center crop, scale to [0, 1],
normalise (`meter/transforms/transform.py` in https://github.com/zdou0830/METER: `clip_transform` uses the
OpenAI CLIP statistics, `imagenet_transform` (Swin) the ImageNet ones, `vit_transform` the inception ones).

This processor reproduces those transforms with PIL and NumPy only: torchvision is not needed. Where the
transformers PIL backend and torchvision disagree, the original code (torchvision) is followed:

- center crop offsets are `round((size - crop) / 2)` (torchvision), not `(size - crop) // 2`;

One deliberate difference: METER converts with `PIL.Image.convert("RGB")`, which drops an alpha channel and clips
16-bit images (mostly to white). This processor follows one RGB rule instead ([`convert_image_to_rgb`],
shared with the pipelines and the region processor): transparency is composited over white, 16-bit images are
scaled to 8 bits. RGB inputs, which the original code was trained and evaluated on, give identical results.

This file is shipped to the Hub as remote code: it imports only numpy, PIL, torch and the public
`transformers` API.
"""

import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, logging


logger = logging.get_logger(__name__)


# name -> (image_mean, image_std); METER `meter/transforms/utils.py` and `transform.py`.
NORMALIZATION_PRESETS = {
    "clip": (tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)),  # clip_transform (CLIP-ViT encoders)
    "imagenet": (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)),  # imagenet_transform (Swin)
    "inception": (tuple(IMAGENET_STANDARD_MEAN), tuple(IMAGENET_STANDARD_STD)),  # vit_transform
}


class MeterImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    normalization (`str`, *optional*):
        Shortcut for `image_mean`/`image_std`: one of `"clip"`, `"imagenet"` or `"inception"`. Cannot be combined
        with an explicit `image_mean` or `image_std`.
    resolution (`int`, *optional*):
        Shortcut for a square METER resolution: sets `size={"shortest_edge": resolution}` and
        `crop_size={"height": resolution, "width": resolution}`. Cannot be combined with `size` or `crop_size`.
    """

    normalization: str | None
    resolution: int | None


class FlatImages(NamedTuple):
    """`images` flattened by [`flatten_images`]."""

    images: list  # the single images, in order
    names: list  # the argument path of each, for error messages: "images", "images[2]", "images[1][0]"
    batched: bool  # False when `images` was one image
    per_example: int | None  # images per example for grouped inputs (NLVR2 pairs: 2), else None


def _describe(value: Any) -> str:
    """An input as error messages show it: its type, and its shape (arrays, tensors) or size and mode (PIL)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, PIL.Image.Image):
        return f"PIL image of size {value.width}x{value.height} (width x height) in mode {value.mode!r}"
    return type(value).__name__


def _is_single_image(value: Any) -> bool:
    """A PIL image, a path/URL (`str` or `os.PathLike`), or one (H, W), (H, W, C) or (C, H, W) array or tensor."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike)):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


def _check_single_image(image: Any, argument: str) -> Any:
    """`image` if it is one image with at least one pixel (paths as `str`); a `TypeError`/`ValueError` naming
    `argument` otherwise."""
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim not in (2, 3):
        raise ValueError(
            f"`{argument}` must be one image of shape (H, W), (H, W, C) or (C, H, W); got {_describe(image)}."
        )
    if not _is_single_image(image):
        raise TypeError(
            f"`{argument}` must be a PIL image, a path/URL, or an (H, W), (H, W, C) or (C, H, W) array or tensor; "
            f"got {_describe(image)}."
        )
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    size = (image.height, image.width) if isinstance(image, PIL.Image.Image) else tuple(image.shape)
    if 0 in size:
        raise ValueError(f"`{argument}` has no pixels: got {_describe(image)}; height and width must be >= 1.")
    return image


def flatten_images(images: Any, argument: str = "images") -> FlatImages:
    """The one rule for image inputs: which structures are accepted and how they are flattened.

    Accepted: one image; a list/tuple of images (one per example); a list of equally long, non-empty lists of
    images (several images per example, e.g. NLVR2 pairs); a 4-D (B, ...) or 5-D (B, N, ...) array or tensor. Each
    image is a PIL image, a path/URL, or an (H, W), (H, W, C) or (C, H, W) array/tensor with at least one pixel.
    Anything else raises a `TypeError`/`ValueError` naming `argument` (or the entry, e.g. `images[1][0]`).
    """
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim in (4, 5):
        if 0 in images.shape[: images.ndim - 3]:
            raise ValueError(f"`{argument}` is empty: got {_describe(images)}.")
        if images.ndim == 4:
            names = [f"{argument}[{i}]" for i in range(images.shape[0])]
            return FlatImages([_check_single_image(x, n) for x, n in zip(images, names)], names, True, None)
        groups, per_example = images.shape[:2]
        names = [f"{argument}[{i}][{j}]" for i in range(groups) for j in range(per_example)]
        flat = [_check_single_image(x, n) for x, n in zip(images.reshape(-1, *images.shape[2:]), names)]
        return FlatImages(flat, names, True, per_example)
    if not isinstance(images, (list, tuple)):
        return FlatImages([_check_single_image(images, argument)], [argument], False, None)
    if len(images) == 0:
        raise ValueError(f"`{argument}` is empty: pass at least one image.")
    nested = [isinstance(entry, (list, tuple)) for entry in images]
    if not any(nested):
        names = [f"{argument}[{i}]" for i in range(len(images))]
        return FlatImages([_check_single_image(x, n) for x, n in zip(images, names)], names, True, None)
    if not all(nested):
        raise ValueError(
            f"`{argument}` mixes single images and lists of images; pass either one image per example or a list of "
            "images (e.g. an NLVR2 pair) for every example."
        )
    lengths = [len(entry) for entry in images]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(
            f"Every entry of `{argument}` must hold the same non-zero number of images (2 for NLVR2); got {lengths}."
        )
    names = [f"{argument}[{i}][{j}]" for i, entry in enumerate(images) for j in range(len(entry))]
    flat = [image for entry in images for image in entry]
    return FlatImages([_check_single_image(x, n) for x, n in zip(flat, names)], names, True, lengths[0])


def convert_image_to_rgb(image: PIL.Image.Image, argument: str = "images") -> PIL.Image.Image:
    """The one RGB rule for PIL images.

    - `"RGB"`: unchanged.
    - With transparency (`"RGBA"`, `"RGBa"`, `"LA"`, `"La"`, `"PA"`, or a `"transparency"` entry in `image.info`,
      e.g. a palette `"P"` image): composited over white, as an image viewer shows it.
    - 16-bit grayscale (`"I;16"`, `"I;16L"`, `"I;16B"`, `"I;16N"`) and 32-bit integer `"I"` (the mode older Pillow
      opens 16-bit PNG/TIFF files in): scaled from [0, 65535] to [0, 255]. (`convert("RGB")` clips instead, which
      turns most 16-bit images white.) `"I"` values outside [0, 65535] raise a `ValueError`.
    - `"L"`, `"1"`, `"P"`, `"CMYK"`, `"YCbCr"`, `"RGBX"`, `"HSV"`, `"LAB"`: PIL's `convert("RGB")`.
    - Any other mode (e.g. 32-bit float `"F"`, which has no agreed pixel range) raises a `ValueError` naming
      `argument`.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"`{argument}` is a PIL image in mode {mode!r} with values in [{values.min()}, {values.max()}]; "
                "integer images are read as 16-bit, so values must lie in [0, 65535]."
            )
        eight_bit = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return PIL.Image.fromarray(eight_bit).convert("RGB")
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV", "LAB"):
        return image.convert("RGB")
    raise ValueError(
        f"`{argument}` is a PIL image in mode {mode!r}, which has no agreed RGB meaning; supported modes are RGB, "
        "RGBA, RGBa, RGBX, L, LA, La, 1, P, PA, CMYK, YCbCr, HSV, LAB, I and I;16 (converted to RGB). Convert it "
        "yourself (e.g. `image.convert('RGB')`) or pass a numpy array."
    )


class MeterImageProcessor(PilBackend):
    r"""
    Constructs a METER image processor (PIL/NumPy, no torchvision needed).

    Pipeline (METER `clip_transform` / `imagenet_transform`): convert to RGB -> resize the shorter side to
    `size["shortest_edge"]` (bicubic) -> center crop to `crop_size` -> rescale by `1/255` -> normalise. Optionally
    pad a batch of differently sized images (`do_pad=True`, useful with `do_center_crop=False`); padding also returns
    a `pixel_mask` (1 = real pixel, 0 = padding).

    Args:
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Convert every image to 3-channel RGB ([`convert_image_to_rgb`] for PIL images; arrays: grayscale is
            repeated, an alpha channel is composited over white). When `False`, non-RGB inputs raise a `ValueError`.
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize.
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"shortest_edge": 288}`):
            Resize target. An int means the shorter edge. 288 is METER's CLIP-ViT-B/16 pre-training resolution
            (fine-tuning uses 384 to 576).
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BICUBIC`):
            Resampling filter.
        do_center_crop (`bool`, *optional*, defaults to `True`):
            Whether to center crop after resizing.
        crop_size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 288, "width": 288}`):
            Crop size.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Rescale factor.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` and `image_std`.
        image_mean (`list[float]`, *optional*, defaults to `OPENAI_CLIP_MEAN`):
            Per-channel mean.
        image_std (`list[float]`, *optional*, defaults to `OPENAI_CLIP_STD`):
            Per-channel standard deviation.
        do_pad (`bool`, *optional*, defaults to `False`):
            Pad every image of the batch (bottom/right, zeros) to the largest height and width, or to `pad_size`,
            and return `pixel_mask`.
        pad_size (`dict[str, int]`, *optional*):
            Fixed `{"height", "width"}` to pad to.
        normalization (`str`, *optional*):
            `"clip"`, `"imagenet"` or `"inception"`: shortcut for `image_mean`/`image_std`. Not saved; the resolved
            mean and std are.
        resolution (`int`, *optional*):
            Shortcut for `size={"shortest_edge": r}` and `crop_size={"height": r, "width": r}`. Not saved; the
            resolved sizes are.

    Inputs are PIL images, paths/URLs, or uint8/integer/float arrays and tensors in the [0, 255] range,
    channels first or last. Float arrays already in [0, 1] need `do_rescale=False`. Bad inputs raise a `ValueError`
    or `TypeError` naming the entry (`images[2]`): no pixels, NaN/inf, integers outside [0, 255], floats above 255
    with `do_rescale=True`, an unsupported PIL mode or channel count. Floats that look already rescaled or
    normalised log a warning.

    Example:

    ```python
    >>> from PIL import Image
    >>> processor = MeterImageProcessor(normalization="imagenet", resolution=384)  # METER-Swin fine-tuning
    >>> processor(Image.new("RGB", (640, 480)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 384, 384])
    ```
    """

    valid_kwargs = MeterImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 288}
    default_to_square = False
    crop_size = {"height": 288, "width": 288}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_pad = False
    normalization = None
    resolution = None

    def __init__(self, **kwargs: Unpack[MeterImageProcessorKwargs]):
        super().__init__(**self._resolve_shortcuts(kwargs))

    @staticmethod
    def _resolve_shortcuts(kwargs: dict) -> dict:
        """Expand `normalization` and `resolution` into `image_mean`/`image_std` and `size`/`crop_size`."""
        kwargs = dict(kwargs)
        normalization = kwargs.pop("normalization", None)
        if normalization is not None:
            if normalization not in NORMALIZATION_PRESETS:
                raise ValueError(
                    f"`normalization` must be one of {sorted(NORMALIZATION_PRESETS)}; got {normalization!r}."
                )
            if kwargs.get("image_mean") is not None or kwargs.get("image_std") is not None:
                raise ValueError(
                    f"Pass either `normalization` or explicit `image_mean`/`image_std`, not both; got "
                    f"normalization={normalization!r}, image_mean={kwargs.get('image_mean')}, "
                    f"image_std={kwargs.get('image_std')}."
                )
            kwargs["image_mean"], kwargs["image_std"] = NORMALIZATION_PRESETS[normalization]

        resolution = kwargs.pop("resolution", None)
        if resolution is not None:
            if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
                raise ValueError(f"`resolution` must be a positive int; got {resolution!r}.")
            if kwargs.get("size") is not None or kwargs.get("crop_size") is not None:
                raise ValueError(
                    f"Pass either `resolution` or explicit `size`/`crop_size`, not both; got resolution={resolution}, "
                    f"size={kwargs.get('size')}, crop_size={kwargs.get('crop_size')}."
                )
            kwargs["size"] = {"shortest_edge": resolution}
            kwargs["crop_size"] = {"height": resolution, "width": resolution}
        return kwargs

    def preprocess(self, images, *args, **kwargs: Unpack[MeterImageProcessorKwargs]) -> BatchFeature:
        """Preprocess one image or a batch (nested lists, e.g. NLVR2 pairs, are flattened in order).

        Returns a `BatchFeature` with `pixel_values` (B, 3, H, W) float32 and, when `do_pad=True`,
        `pixel_mask` (B, H, W) int64.
        """
        return super().preprocess(images, *args, **self._resolve_shortcuts(kwargs))

    def _validate_preprocess_kwargs(self, image_mean=None, image_std=None, do_normalize=None, **kwargs):
        super()._validate_preprocess_kwargs(
            image_mean=image_mean, image_std=image_std, do_normalize=do_normalize, **kwargs
        )
        if not do_normalize:
            return
        for name, value in (("image_mean", image_mean), ("image_std", image_std)):
            values = list(value) if isinstance(value, Iterable) else [value]
            if len(values) not in (1, 3):
                raise ValueError(f"`{name}` must be a float or 3 floats (one per RGB channel); got {value}.")
        if any(std == 0 for std in (image_std if isinstance(image_std, Iterable) else [image_std])):
            raise ValueError(f"`image_std` must be non-zero; got {image_std}.")

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs) -> list[np.ndarray]:
        """Flatten `images` ([`flatten_images`]), load paths/URLs, and turn each image into a (3, H, W) array with
        [`process_image`]; errors name the entry (`images[1][0]`)."""
        flat = flatten_images(images)
        loaded = [self.fetch_images(image) if isinstance(image, str) else image for image in flat.images]
        return [self.process_image(image, *args, argument=name, **kwargs) for image, name in zip(loaded, flat.names)]

    def process_image(
        self,
        image,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        do_rescale: bool | None = None,
        do_normalize: bool | None = None,
        argument: str = "images",
        **kwargs,
    ) -> np.ndarray:
        """Validate one raw image and return it as a (3, H, W) array (uint8, or float32 for float inputs).

        PIL images go through [`convert_image_to_rgb`]. Arrays and tensors: integers must lie in [0, 255]; floats
        must be finite, in [0, 255] with `do_rescale=True` (a warning says when they look already rescaled or
        normalised) or in [0, 1] with `do_rescale=False`; 1 channel is repeated, an alpha channel composited over
        white. Errors name `argument`.
        """
        if isinstance(image, PIL.Image.Image):
            if image.mode != "RGB" and not do_convert_rgb:
                raise ValueError(
                    f"`{argument}` must be RGB when `do_convert_rgb=False`; got a PIL image in mode {image.mode!r}. "
                    "Pass `do_convert_rgb=True` to convert it."
                )
            image = convert_image_to_rgb(image, argument)
            return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            array = (image.float() if image.dtype == torch.bfloat16 else image).numpy()
        else:
            array = np.asarray(image)
        array = self._array_to_channels_first(array, input_data_format, argument)
        array = self._check_pixel_values(array, do_rescale, do_normalize, argument)
        white = 255.0 if do_rescale or array.dtype == np.uint8 else 1.0
        return self._to_rgb_channels(array, do_convert_rgb, white, argument)

    @staticmethod
    def _array_to_channels_first(array: np.ndarray, input_data_format, argument: str) -> np.ndarray:
        if array.ndim == 2:
            return array[None]  # (H, W) grayscale -> (1, H, W)
        if input_data_format is None:
            try:
                input_data_format = infer_channel_dimension_format(array, num_channels=(1, 3, 4))
            except ValueError:
                raise ValueError(
                    f"`{argument}` arrays must have 1, 3 or 4 channels in their first or last dimension; got an "
                    f"array of shape {array.shape}."
                ) from None
        if ChannelDimension(input_data_format) == ChannelDimension.LAST:
            array = np.moveaxis(array, -1, 0)
        return array

    @staticmethod
    def _check_pixel_values(
        array: np.ndarray, do_rescale: bool | None, do_normalize: bool | None, argument: str
    ) -> np.ndarray:
        if array.dtype == np.uint8:
            return array
        if np.issubdtype(array.dtype, np.integer):
            if array.min() < 0 or array.max() > 255:
                raise ValueError(
                    f"`{argument}` integer arrays must hold 8-bit values in [0, 255]; got [{array.min()}, "
                    f"{array.max()}]. Scale 16-bit data to 8 bits first (e.g. `(array / 257).round()`), or pass it "
                    "as a PIL image in mode 'I;16'."
                )
            return array.astype(np.uint8)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"`{argument}` arrays must hold integer or float pixel values; got dtype {array.dtype}.")
        if not np.isfinite(array).all():
            raise ValueError(
                f"`{argument}` contains {int(np.sum(~np.isfinite(array)))} NaN or infinite pixel values (array of "
                f"shape {array.shape})."
            )
        low, high = float(array.min()), float(array.max())
        if do_rescale:
            if high > 255.0:
                raise ValueError(
                    f"`{argument}` holds float pixel values up to {high:g}, above the [0, 255] range that "
                    "`do_rescale=True` expects. Scale 16-bit data to [0, 255], or rescale the image yourself and pass "
                    "`do_rescale=False`."
                )
            if low < 0:
                logger.warning_once(
                    f"It looks like you are trying to rescale and normalise already normalised images: `{argument}` "
                    f"holds negative float pixel values ([{low:.3g}, {high:.3g}]). If they are model-ready "
                    "`pixel_values`, pass them to the model directly or set `do_rescale=False, do_normalize=False`."
                )
            elif high <= 1:
                logger.warning_once(
                    "It looks like you are trying to rescale already rescaled images. If the input images have pixel "
                    "values between 0 and 1, set `do_rescale=False` to avoid rescaling them again."
                )
        elif do_normalize and (low < 0 or high > 1):
            logger.warning_once(
                f"It looks like `{argument}` is not in [0, 1] (float pixel values in [{low:.3g}, {high:.3g}]) "
                "although `do_rescale=False` says it is already rescaled: if it is already normalised, normalising it "
                "again gives wrong `pixel_values`. Pass [0, 255] images with `do_rescale=True`, or normalised ones "
                "with `do_normalize=False`."
            )
        return array.astype(np.float32)

    @staticmethod
    def _to_rgb_channels(array: np.ndarray, do_convert_rgb: bool | None, white: float, argument: str) -> np.ndarray:
        """(C, H, W) -> (3, H, W): grayscale repeated, alpha composited over `white` (255, or 1 for [0, 1] floats)."""
        num_channels = array.shape[0]
        if num_channels == 3:
            return array
        if do_convert_rgb and num_channels == 1:
            return np.repeat(array, 3, axis=0)
        if do_convert_rgb and num_channels == 4:
            alpha = array[3:].astype(np.float32) / white
            composited = array[:3].astype(np.float32) * alpha + white * (1.0 - alpha)
            return np.round(composited).astype(np.uint8) if array.dtype == np.uint8 else composited
        raise ValueError(
            f"`{argument}` must have 3 (RGB) channels{'' if do_convert_rgb else ' when `do_convert_rgb=False`'}; got "
            f"{num_channels} channel(s) (array of shape {array.shape} once channels-first)."
        )

    @staticmethod
    def _resized_height_width(height: int, width: int, size: SizeDict) -> tuple[int, int]:
        if size.shortest_edge and size.longest_edge:
            return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        if size.shortest_edge:
            # torchvision's Resize(int): short side -> size, long side -> int(size * long / short)
            placeholder = np.empty((1, height, width), dtype=np.uint8)
            return get_resize_output_image_size(
                placeholder, size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
            )
        if size.height and size.width:
            return size.height, size.width
        raise ValueError(
            f"`size` must have a 'shortest_edge' key (optionally with 'longest_edge') or 'height' and 'width'; "
            f"got {dict(size)}."
        )

    def resize(self, image: np.ndarray, size: SizeDict, resample=None, **kwargs) -> np.ndarray:
        """Resize a (C, H, W) array with PIL. uint8 images resample as PIL RGB images (bit-exact with METER's
        torchvision-on-PIL transform); float images resample per channel in PIL's 32-bit float mode."""
        resample = PILImageResampling(resample if resample is not None else PILImageResampling.BICUBIC)
        new_height, new_width = self._resized_height_width(image.shape[-2], image.shape[-1], size)
        if image.dtype == np.uint8:
            resized = PIL.Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
            resized = resized.resize((new_width, new_height), resample=resample)
            return np.asarray(resized).transpose(2, 0, 1)
        channels = [
            np.asarray(
                PIL.Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F").resize(
                    (new_width, new_height), resample=resample
                )
            )
            for channel in image
        ]
        return np.stack(channels)

    def center_crop(self, image: np.ndarray, size: SizeDict, **kwargs) -> np.ndarray:
        """torchvision's `center_crop` on a (C, H, W) array: zero-pad if smaller, offsets `round((H - h) / 2)`."""
        if size.height is None or size.width is None:
            raise ValueError(f"`crop_size` must have 'height' and 'width' keys; got {dict(size)}.")
        crop_height, crop_width = size.height, size.width
        height, width = image.shape[-2:]
        if crop_height > height or crop_width > width:
            pad_height, pad_width = max(crop_height - height, 0), max(crop_width - width, 0)
            padding = ((0, 0), (pad_height // 2, (pad_height + 1) // 2), (pad_width // 2, (pad_width + 1) // 2))
            image = np.pad(image, padding)
            height, width = image.shape[-2:]
        top = int(round((height - crop_height) / 2.0))
        left = int(round((width - crop_width) / 2.0))
        return image[:, top : top + crop_height, left : left + crop_width]

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float] | None,
        image_std: float | Sequence[float] | None,
        do_pad: bool | None,
        pad_size: SizeDict | None,
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        pixel_values = []
        for image in images:
            if do_resize:
                image = self.resize(image, size=size, resample=resample)
            if do_center_crop:
                image = self.center_crop(image, crop_size)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            pixel_values.append(image.astype(np.float32, copy=False))  # (3, H, W)

        data = {"pixel_values": pixel_values}
        if do_pad:
            data["pixel_values"], data["pixel_mask"] = self.pad(pixel_values, pad_size=pad_size, return_mask=True)
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = [
    "FlatImages",
    "MeterImageProcessor",
    "MeterImageProcessorKwargs",
    "NORMALIZATION_PRESETS",
    "convert_image_to_rgb",
    "flatten_images",
]
