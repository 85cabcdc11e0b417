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
- images are converted to RGB with `PIL.Image.convert("RGB")`, which drops an alpha channel rather than
  compositing it over white as `transformers.image_transforms.convert_to_rgb` does.

This file is shipped to the Hub as remote code: it imports only numpy, PIL, torch and the public
`transformers` API.
"""

from collections.abc import Iterable, Sequence
from typing import Any

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


def _is_single_image(value: Any) -> bool:
    return isinstance(value, (PIL.Image.Image, np.ndarray, torch.Tensor, str))


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    return type(value).__name__


def _flatten_one(image: Any, where: str) -> list:
    """One entry of `images`: a PIL image, a path/URL, an (H, W[, C]) array, or a (B, ...) batch array."""
    if not _is_single_image(image):
        raise TypeError(
            f"`{where}` must be a PIL image, a numpy array, a torch tensor or a path/URL string; "
            f"got {_describe(image)}."
        )
    if isinstance(image, (np.ndarray, torch.Tensor)):
        if image.ndim == 4:
            return list(image)
        if image.ndim not in (2, 3):
            raise ValueError(
                f"`{where}` must be an array of shape (H, W), (H, W, C), (C, H, W) or a batch (B, ...) of those; "
                f"got {_describe(image)}."
            )
    return [image]


def make_flat_list_of_meter_images(images: Any) -> list:
    """Flatten a single image, a list of images, a batch array or a list of image lists (NLVR2 pairs).

    Raises a `ValueError`/`TypeError` naming `images` on an empty input or an entry that is not an image.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("`images` is empty: pass at least one image.")
        flat = []
        for index, entry in enumerate(images):
            if isinstance(entry, (list, tuple)):
                if len(entry) == 0:
                    raise ValueError(f"`images[{index}]` is an empty list: pass at least one image per example.")
                for sub_index, image in enumerate(entry):
                    flat.extend(_flatten_one(image, f"images[{index}][{sub_index}]"))
            else:
                flat.extend(_flatten_one(entry, f"images[{index}]"))
        return flat
    flat = _flatten_one(images, "images")
    if len(flat) == 0:
        raise ValueError(f"`images` is empty: got {_describe(images)}.")
    return flat


class MeterImageProcessor(PilBackend):
    r"""
    Constructs a METER image processor (PIL/NumPy, no torchvision needed).

    Pipeline (METER `clip_transform` / `imagenet_transform`): convert to RGB -> resize the shorter side to
    `size["shortest_edge"]` (bicubic) -> center crop to `crop_size` -> rescale by `1/255` -> normalise. Optionally
    pad a batch of differently sized images (`do_pad=True`, useful with `do_center_crop=False`); padding also returns
    a `pixel_mask` (1 = real pixel, 0 = padding).

    Args:
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Convert every image to 3-channel RGB (`PIL.Image.convert("RGB")` as METER does; arrays: grayscale is
            repeated, an alpha channel is dropped). When `False`, non-RGB inputs raise a `ValueError`.
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
    channels first or last. Float arrays already in [0, 1] need `do_rescale=False`.

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

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        flat = make_flat_list_of_meter_images(images)
        # Paths and URLs become PIL images; everything else is returned as is.
        return [self.fetch_images(image) if isinstance(image, str) else image for image in flat]

    def process_image(
        self,
        image,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        do_rescale: bool | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Validate one raw image and return it as a (3, H, W) array (uint8, or float32 for float inputs)."""
        if isinstance(image, PIL.Image.Image):
            return self._pil_to_channels_first(image, do_convert_rgb)
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        array = self._array_to_channels_first(array, input_data_format)
        array = self._check_pixel_values(array, do_rescale)
        return self._to_rgb_channels(array, do_convert_rgb)

    @staticmethod
    def _pil_to_channels_first(image: PIL.Image.Image, do_convert_rgb: bool | None) -> np.ndarray:
        if image.mode != "RGB":
            if not do_convert_rgb:
                raise ValueError(
                    f"`images` must be RGB when `do_convert_rgb=False`; got a PIL image in mode {image.mode!r}. "
                    "Pass `do_convert_rgb=True` to convert it."
                )
            # METER converts with PIL (meter/datasets/base_dataset.py): alpha is dropped, not composited.
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)

    @staticmethod
    def _array_to_channels_first(array: np.ndarray, input_data_format) -> np.ndarray:
        if array.ndim == 2:
            return array[None]  # (H, W) grayscale -> (1, H, W)
        if input_data_format is None:
            try:
                input_data_format = infer_channel_dimension_format(array, num_channels=(1, 3, 4))
            except ValueError:
                raise ValueError(
                    "`images` arrays must have 1, 3 or 4 channels in their first or last dimension; got an array "
                    f"of shape {array.shape}."
                ) from None
        if ChannelDimension(input_data_format) == ChannelDimension.LAST:
            array = np.moveaxis(array, -1, 0)
        return array

    @staticmethod
    def _check_pixel_values(array: np.ndarray, do_rescale: bool | None) -> np.ndarray:
        if array.dtype == np.uint8:
            return array
        if np.issubdtype(array.dtype, np.integer):
            if array.size and (array.min() < 0 or array.max() > 255):
                raise ValueError(
                    f"`images` integer arrays must hold values in [0, 255]; got [{array.min()}, {array.max()}]."
                )
            return array.astype(np.uint8)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"`images` arrays must be integer or float; got dtype {array.dtype}.")
        if not np.isfinite(array).all():
            raise ValueError(
                f"`images` contains {int(np.sum(~np.isfinite(array)))} NaN or infinite pixel values (array of "
                f"shape {array.shape})."
            )
        if do_rescale and array.size and array.min() >= 0 and array.max() <= 1:
            logger.warning_once(
                "`images` are float arrays in [0, 1] and `do_rescale=True` will divide them by 255 again; pass "
                "`do_rescale=False` if they are already rescaled."
            )
        return array.astype(np.float32)

    @staticmethod
    def _to_rgb_channels(array: np.ndarray, do_convert_rgb: bool | None) -> np.ndarray:
        num_channels = array.shape[0]
        if num_channels == 3:
            return array
        if do_convert_rgb and num_channels == 1:
            return np.repeat(array, 3, axis=0)
        if do_convert_rgb and num_channels == 4:
            return array[:3]  # drop alpha, as PIL's convert("RGB") does
        raise ValueError(
            f"`images` must have 3 (RGB) channels{'' if do_convert_rgb else ' when `do_convert_rgb=False`'}; got "
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


__all__ = ["MeterImageProcessor", "MeterImageProcessorKwargs", "NORMALIZATION_PRESETS"]
