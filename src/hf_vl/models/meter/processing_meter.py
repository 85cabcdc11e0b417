# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Processor for METER: a `MeterImageProcessor` and a text tokenizer (RoBERTa or BERT) behind one call.

METER (https://github.com/zdou0830/METER) tokenizes every caption/question with
`padding="max_length", truncation=True, max_length=max_text_len` (40 by default, `meter/datasets/base_dataset.py`);
those are this processor's defaults (`MeterProcessor.text_kwargs`, merged by `ProcessorMixin._merge_kwargs`).
NLVR2 examples carry two images; pass them as a list of pairs and `pixel_values` comes back as (B, 2, 3, H, W).

This file is shipped to the Hub as remote code: it imports only numpy, torch, the public `transformers` API and its
sibling `image_processing_meter.py`.
"""

from typing import Any

import numpy as np
import torch
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack

from .image_processing_meter import MeterImageProcessorKwargs, flatten_images


# A tokenizer's `model_max_length` at or above this is transformers' "no limit" sentinel (`VERY_LARGE_INTEGER`).
_NO_LENGTH_LIMIT = int(1e20)


class MeterProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: MeterImageProcessorKwargs


def validate_text_input(text: Any, argument: str = "text") -> list[str]:
    """The one rule for text inputs: a non-empty string, or a non-empty list/tuple of non-empty strings.

    Returns the texts as a list; raises a `TypeError`/`ValueError` naming `argument` (or the entry, `text[1]`).
    """
    if isinstance(text, str):
        texts, names = [text], [argument]
    elif isinstance(text, (list, tuple)):
        if len(text) == 0:
            raise ValueError(f"`{argument}` is an empty list: pass at least one string.")
        texts, names = list(text), [f"{argument}[{index}]" for index in range(len(text))]
    else:
        raise TypeError(f"`{argument}` must be a string or a list of strings; got {type(text).__name__}.")
    for name, sample in zip(names, texts):
        if not isinstance(sample, str):
            raise TypeError(f"`{name}` must be a string; got {type(sample).__name__}.")
        if not sample.strip():
            raise ValueError(f"`{name}` must be a non-empty string; got {sample!r}.")
    return texts


def _group_per_example(value: Any, num_examples: int, per_example: int) -> Any:
    """Reshape a flat (B * N, ...) batch into (B, N, ...)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.reshape(num_examples, per_example, *value.shape[1:])
    return [list(value[index * per_example : (index + 1) * per_example]) for index in range(num_examples)]


def _sequence_length(input_ids: Any) -> int:
    """Longest sequence of a tokenizer output (a tensor/array, a list of lists, or one list)."""
    if isinstance(input_ids, (np.ndarray, torch.Tensor)):
        return int(input_ids.shape[-1]) if input_ids.ndim else 0
    if len(input_ids) and isinstance(input_ids[0], (list, tuple, np.ndarray, torch.Tensor)):
        return max(len(ids) for ids in input_ids)
    return len(input_ids)


class MeterProcessor(ProcessorMixin):
    r"""
    Constructs a METER processor: [`MeterImageProcessor`] for images and any text tokenizer (METER uses RoBERTa;
    BERT-style WordPiece tokenizers work too) for text.

    Keyword arguments follow transformers' processors: tokenizer kwargs (`padding`, `max_length`,
    `return_special_tokens_mask`, ...) and image processor kwargs (`do_pad`, `normalization`, `resolution`, ...) are
    routed by name, or given as `text_kwargs=` / `images_kwargs=` dicts; `return_tensors` goes to both. Text
    defaults to METER's `padding="max_length", truncation=True, max_length=max_text_len`.

    Checks (a `ValueError`/`TypeError` naming the argument): at least one of `images` and `text`; `text` is a
    non-empty string or a list of them; `images` follow [`flatten_images`] (one image, one per example, or equally
    long lists of images per example); as many texts as image examples; no sequence longer than the tokenizer's
    `model_max_length` (the text tower's position table).

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
    # METER's text defaults (`meter/datasets/base_dataset.py`); `max_length` becomes `max_text_len` per instance.
    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 40}

    def __init__(self, image_processor=None, tokenizer=None, max_text_len: int = 40, **kwargs):
        if isinstance(max_text_len, bool) or not isinstance(max_text_len, int) or max_text_len < 1:
            raise ValueError(f"`max_text_len` must be a positive int; got {max_text_len!r}.")
        super().__init__(image_processor, tokenizer, **kwargs)
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < _NO_LENGTH_LIMIT and max_text_len > limit:
            raise ValueError(
                f"`max_text_len` ({max_text_len}) exceeds the tokenizer's `model_max_length` ({limit}), the length "
                "of the text tower's position table."
            )
        self.max_text_len = max_text_len
        self.text_kwargs = {**type(self).text_kwargs, "max_length": max_text_len}

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs: Unpack[MeterProcessorKwargs]):
        """Tokenize `text` and preprocess `images`.

        Args:
            images: one image, a list of images (one per example), a (B, ...) array, or a list of equally long image
                lists (NLVR2: two per example), giving `pixel_values` of shape (B, 3, H, W) or (B, N, 3, H, W).
            text: one string or a list of strings, one per example.
            kwargs: tokenizer and image processor kwargs (see the class docstring) and `return_tensors`.

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` (and `token_type_ids` if the tokenizer returns them)
            when `text` is given, and `pixel_values` (and `pixel_mask` with `do_pad=True`) when `images` is given.
        """
        outputs = super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)
        if "input_ids" in outputs:
            self._check_text_length(_sequence_length(outputs["input_ids"]))
        return outputs

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs=None, **kwargs):
        # transformers lets a tokenizer's saved init kwargs (e.g. `max_length: 128` of sentence-transformers
        # tokenizers) override processor defaults; METER's `max_text_len` defaults must win over them.
        if tokenizer_init_kwargs:
            tokenizer_init_kwargs = {k: v for k, v in tokenizer_init_kwargs.items() if k not in self.text_kwargs}
        merged = super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs=tokenizer_init_kwargs, **kwargs)
        if merged["text_kwargs"].get("max_length") is None:  # `max_length=None` means the default, `max_text_len`
            merged["text_kwargs"]["max_length"] = self.max_text_len
        return merged

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # Inputs are checked by `validate_inputs` and paths/URLs are loaded by the image processor; transformers'
        # `fetch_images` would raise on a bad entry before the checks could name it.
        return images, text, videos, audio

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if images is None and text is None:
            raise ValueError("You have to specify at least one of `images` or `text`.")
        if videos is not None or audio is not None:
            raise ValueError(f"{type(self).__name__} takes `images` and `text`; got `videos` or `audio`.")
        num_texts = None if text is None else len(validate_text_input(text, "text"))
        if images is None:
            return
        flat = flatten_images(images, "images")
        num_examples = (len(flat.images) // (flat.per_example or 1)) if flat.batched else 1
        if num_texts is not None and num_texts != num_examples:
            raise ValueError(
                f"`text` and `images` must describe the same number of examples; got {num_texts} text(s) and "
                f"{num_examples} image example(s)."
            )

    def _process_images(self, images, **kwargs):
        """Run the image processor (which flattens `images`) and regroup multi-image examples to (B, N, ...)."""
        features = self.image_processor(images, **kwargs)
        flat = flatten_images(images, "images")
        if flat.per_example is not None:
            num_examples = len(flat.images) // flat.per_example
            for key in list(features.keys()):
                features[key] = _group_per_example(features[key], num_examples, flat.per_example)
        return features, []

    def _check_text_length(self, length: int) -> None:
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < _NO_LENGTH_LIMIT and length > limit:
            raise ValueError(
                f"`text` gives sequences of {length} tokens, more than the tokenizer's `model_max_length` ({limit}), "
                "the length of the text tower's position table; keep `truncation=True` with `max_length` <= "
                f"{limit} (this processor truncates to `max_text_len`={self.max_text_len} by default)."
            )

    @property
    def model_input_names(self) -> list[str]:
        tokenizer_input_names = self.tokenizer.model_input_names
        image_input_names = self.image_processor.model_input_names
        return list(dict.fromkeys(tokenizer_input_names + image_input_names))


__all__ = ["MeterProcessor", "MeterProcessorKwargs", "validate_text_input"]
