# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Processor for METER: a `MeterImageProcessor` and a text tokenizer (RoBERTa or BERT) behind one call.

METER (https://github.com/zdou0830/METER) tokenizes every caption/question with
`padding="max_length", truncation=True, max_length=max_text_len` (40 by default, `meter/datasets/base_dataset.py`);
those are this processor's defaults. NLVR2 examples carry two images; pass them as a list of pairs and
`pixel_values` comes back as (B, 2, 3, H, W).

This file is shipped to the Hub as remote code: it imports only numpy, torch, the public `transformers` API and its
sibling `image_processing_meter.py`.
"""

from typing import Any

import numpy as np
import torch
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import BatchEncoding

from .image_processing_meter import MeterImageProcessorKwargs, make_flat_list_of_meter_images


class MeterProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: MeterImageProcessorKwargs


def _count_examples(images: Any) -> tuple[int, int | None]:
    """(number of examples, images per example or None when each example has one image)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 5:  # (B, N, C, H, W) or (B, N, H, W, C)
            return images.shape[0], images.shape[1]
        return (images.shape[0] if images.ndim == 4 else 1), None
    if not isinstance(images, (list, tuple)):
        return 1, None
    if len(images) == 0:
        raise ValueError("`images` is empty: pass at least one image.")
    nested = [isinstance(entry, (list, tuple)) for entry in images]
    if not any(nested):
        return len(images), None
    if not all(nested):
        raise ValueError(
            "`images` mixes single images and lists of images; pass either one image per example or a list of "
            "images (e.g. an NLVR2 pair) for every example."
        )
    per_example = {len(entry) for entry in images}
    if len(per_example) != 1 or 0 in per_example:
        raise ValueError(
            "Every entry of `images` must hold the same non-zero number of images (2 for NLVR2); got "
            f"{[len(entry) for entry in images]}."
        )
    return len(images), per_example.pop()


def _flatten_image_groups(images: Any) -> Any:
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 5:
        return images.reshape(-1, *images.shape[2:])
    return make_flat_list_of_meter_images(images)


def _group_per_example(value: Any, num_examples: int, per_example: int) -> Any:
    """Reshape a flat (B * N, ...) batch into (B, N, ...)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.reshape(num_examples, per_example, *value.shape[1:])
    return [list(value[index * per_example : (index + 1) * per_example]) for index in range(num_examples)]


def _validate_text(text: Any) -> None:
    if isinstance(text, str):
        if not text.strip():
            raise ValueError(f"`text` must be a non-empty string; got {text!r}.")
        return
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"`text` must be a string or a list of strings; got {type(text).__name__}.")
    if len(text) == 0:
        raise ValueError("`text` is an empty list: pass at least one string.")
    for index, sample in enumerate(text):
        if not isinstance(sample, str):
            raise TypeError(f"`text[{index}]` must be a string; got {type(sample).__name__}.")
        if not sample.strip():
            raise ValueError(f"`text[{index}]` must be a non-empty string; got {sample!r}.")


class MeterProcessor(ProcessorMixin):
    r"""
    Constructs a METER processor: [`MeterImageProcessor`] for images and any text tokenizer (METER uses RoBERTa;
    BERT-style WordPiece tokenizers work too) for text.

    Args:
        image_processor (`MeterImageProcessor`):
            The image processor.
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer. Loaded with `AutoTokenizer` by `from_pretrained`.
        max_text_len (`int`, *optional*, defaults to 40):
            Default `max_length` for text (METER's `max_text_len`). Saved in `processor_config.json`.

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers import AutoTokenizer
    >>> processor = MeterProcessor(MeterImageProcessor(), AutoTokenizer.from_pretrained("path/to/tokenizer"))
    >>> image = Image.new("RGB", (640, 480))
    >>> inputs = processor(images=image, text="what color is the shape?", return_tensors="pt")
    >>> inputs["input_ids"].shape, inputs["pixel_values"].shape
    (torch.Size([1, 40]), torch.Size([1, 3, 288, 288]))
    >>> pairs = processor(images=[[image, image]], text=["the left image has a dog"], return_tensors="pt")
    >>> pairs["pixel_values"].shape  # NLVR2
    torch.Size([1, 2, 3, 288, 288])
    ```
    """

    valid_processor_kwargs = MeterProcessorKwargs

    def __init__(self, image_processor=None, tokenizer=None, max_text_len: int = 40, **kwargs):
        if isinstance(max_text_len, bool) or not isinstance(max_text_len, int) or max_text_len < 1:
            raise ValueError(f"`max_text_len` must be a positive int; got {max_text_len!r}.")
        self.max_text_len = max_text_len
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        padding: bool | str = "max_length",
        truncation: bool | str = True,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Unpack[MeterProcessorKwargs],
    ) -> BatchEncoding:
        """Tokenize `text` and preprocess `images`.

        Args:
            images: one image, a list of images (one per example), a (B, ...) array, or a list of equally long image
                lists (NLVR2: two per example), giving `pixel_values` of shape (B, 3, H, W) or (B, N, 3, H, W).
            text: one string or a list of strings, one per example.
            padding, truncation: passed to the tokenizer (METER: `"max_length"`, `True`).
            max_length: defaults to `self.max_text_len`.
            return_tensors: `"pt"`, `"np"` or `None` (lists).
            kwargs: tokenizer kwargs (e.g. `return_special_tokens_mask`) and image processor kwargs (e.g.
                `do_pad`, `normalization`), or `text_kwargs=`/`images_kwargs=` dicts.

        Returns:
            `BatchEncoding` with `input_ids`, `attention_mask` (and `token_type_ids` if the tokenizer returns them)
            when `text` is given, and `pixel_values` (and `pixel_mask` with `do_pad=True`) when `images` is given.
        """
        if images is None and text is None:
            raise ValueError("You have to specify at least one of `images` or `text`.")
        if text is not None:
            _validate_text(text)
        num_image_examples, images_per_example = (None, None) if images is None else _count_examples(images)
        if text is not None and images is not None:
            num_texts = 1 if isinstance(text, str) else len(text)
            if num_texts != num_image_examples:
                raise ValueError(
                    f"`text` and `images` must describe the same number of examples; got {num_texts} text(s) and "
                    f"{num_image_examples} image example(s)."
                )

        text_kwargs = {
            "padding": padding,
            "truncation": truncation,
            "max_length": self.max_text_len if max_length is None else max_length,
            **kwargs.pop("text_kwargs", {}),
        }
        if return_tensors is not None:
            kwargs["return_tensors"] = return_tensors
        output_kwargs = self._merge_kwargs(
            MeterProcessorKwargs,
            tokenizer_init_kwargs=self.tokenizer.init_kwargs,
            text_kwargs=text_kwargs,
            **kwargs,
        )

        data = {}
        if text is not None:
            data.update(self.tokenizer(text, **output_kwargs["text_kwargs"]))
        if images is not None:
            image_features = self.image_processor(
                _flatten_image_groups(images), **output_kwargs["images_kwargs"]
            )
            for key, value in image_features.items():
                if images_per_example is not None:
                    value = _group_per_example(value, num_image_examples, images_per_example)
                data[key] = value
        tensor_type = output_kwargs["text_kwargs"].get("return_tensors") or output_kwargs["images_kwargs"].get(
            "return_tensors"
        )
        return BatchEncoding(data=data, tensor_type=tensor_type)

    @property
    def model_input_names(self) -> list[str]:
        tokenizer_input_names = self.tokenizer.model_input_names
        image_input_names = self.image_processor.model_input_names
        return list(dict.fromkeys(tokenizer_input_names + image_input_names))


__all__ = ["MeterProcessor", "MeterProcessorKwargs"]
