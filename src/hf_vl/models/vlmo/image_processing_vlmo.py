# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Image processor for VLMo.

VLMo (https://github.com/microsoft/unilm/tree/master/vlmo, `vlmo/transforms/`) feeds square images: resize to
`image_size x image_size` with bicubic resampling (no crop, the aspect ratio is not kept), scale to [0, 1] and
normalise with mean = std = 0.5 (the `inception_normalize` of the original, i.e. to [-1, 1]).

PIL/NumPy only (transformers' `PilBackend`): torchvision is not needed. This file is shipped to the Hub as remote
code: it imports only the public `transformers` API.
"""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling


class VlmoImageProcessor(PilBackend):
    r"""
    Constructs a VLMo image processor: convert to RGB -> resize to `size` (square, bicubic) -> rescale by 1/255 ->
    normalise with mean = std = (0.5, 0.5, 0.5).

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


__all__ = ["VlmoImageProcessor"]
