# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Image processor for VLMo.

VLMo (https://github.com/microsoft/unilm/tree/master/vlmo, `vlmo/transforms/`) feeds square images: resize to
`image_size x image_size` with bicubic resampling (no crop, the aspect ratio is not kept), scale to [0, 1] and
normalise with mean = std = 0.5 (the `inception_normalize` of the original, i.e. to [-1, 1]).

Inputs follow the same rules as METER's processor (copies of `hf_vl.models.meter.image_processing_meter`, kept
identical by `utils/check_copies.py`): one image, a list of images, or equally long lists of images per example
(NLVR2 pairs); PIL images are converted to RGB by one rule (transparency composited over white, 16-bit images
scaled to 8 bits, modes without an RGB meaning refused); arrays must hold finite 8-bit or [0, 255] / [0, 1] values
with 1, 3 or 4 channels; an image without pixels is refused. Errors name the argument (`images[1][0]`).
The original converts with `PIL.Image.convert("RGB")`; RGB inputs give identical results.

PIL/NumPy only (transformers' `PilBackend`): torchvision is not needed. This file is shipped to the Hub as remote
code: it imports only numpy, PIL, torch and the public `transformers` API.
"""

import os
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ChannelDimension,
    PILImageResampling,
    infer_channel_dimension_format,
)
from transformers.utils import logging


logger = logging.get_logger(__name__)


# Copied from hf_vl.models.meter.image_processing_meter.FlatImages
class FlatImages(NamedTuple):
    """`images` flattened by [`flatten_images`]."""

    images: list  # the single images, in order
    names: list  # the argument path of each, for error messages: "images", "images[2]", "images[1][0]"
    batched: bool  # False when `images` was one image
    per_example: int | None  # images per example for grouped inputs (NLVR2 pairs: 2), else None


# Copied from hf_vl.models.meter.image_processing_meter._describe
def _describe(value: Any) -> str:
    """An input as error messages show it: its type, and its shape (arrays, tensors) or size and mode (PIL)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, PIL.Image.Image):
        return f"PIL image of size {value.width}x{value.height} (width x height) in mode {value.mode!r}"
    return type(value).__name__


# Copied from hf_vl.models.meter.image_processing_meter._is_single_image
def _is_single_image(value: Any) -> bool:
    """A PIL image, a path/URL (`str` or `os.PathLike`), or one (H, W), (H, W, C) or (C, H, W) array or tensor."""
    if isinstance(value, (PIL.Image.Image, str, os.PathLike)):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


# Copied from hf_vl.models.meter.image_processing_meter._check_single_image
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


# Copied from hf_vl.models.meter.image_processing_meter.flatten_images
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


# Copied from hf_vl.models.meter.image_processing_meter.convert_image_to_rgb
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


class VlmoImageProcessor(PilBackend):
    r"""
    Constructs a VLMo image processor: check and convert to RGB (the input rules of the module docstring) -> resize to
    `size` (square, bicubic) -> rescale by 1/255 -> normalise with mean = std = (0.5, 0.5, 0.5).

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`): output size; must match
            the model's `config.image_size` (VLMo's patch grid is fixed).
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`), do_resize, do_rescale, rescale_factor,
        do_normalize, image_mean, image_std, do_convert_rgb: as in every transformers image processor.

    Example:

    ```python
    >>> from PIL import Image
    >>> processor = VlmoImageProcessor(size={"height": 384, "width": 384})
    >>> processor(Image.new("RGB", (640, 480)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 384, 384])
    ```
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    # Copied from hf_vl.models.meter.image_processing_meter.MeterImageProcessor._prepare_image_like_inputs
    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs) -> list[np.ndarray]:
        """Flatten `images` ([`flatten_images`]), load paths/URLs, and turn each image into a (3, H, W) array with
        [`process_image`]; errors name the entry (`images[1][0]`)."""
        flat = flatten_images(images)
        loaded = [self.fetch_images(image) if isinstance(image, str) else image for image in flat.images]
        return [self.process_image(image, *args, argument=name, **kwargs) for image, name in zip(loaded, flat.names)]

    # Copied from hf_vl.models.meter.image_processing_meter.MeterImageProcessor.process_image
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

    # Copied from hf_vl.models.meter.image_processing_meter.MeterImageProcessor._array_to_channels_first
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

    # Copied from hf_vl.models.meter.image_processing_meter.MeterImageProcessor._check_pixel_values
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

    # Copied from hf_vl.models.meter.image_processing_meter.MeterImageProcessor._to_rgb_channels
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


__all__ = ["VlmoImageProcessor", "convert_image_to_rgb", "flatten_images"]
