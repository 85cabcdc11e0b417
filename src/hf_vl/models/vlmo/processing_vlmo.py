# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Processor for VLMo: a [`VlmoImageProcessor`] and the BERT uncased tokenizer behind one call.

Text padding: the original pads every text to exactly `max_text_len` (40) because its fusion encoder splits the
sequence at that position. `VlmoModel` splits at the length of the given text instead, so variable-length (padded to
the longest, `padding=True`) text works as well; the processor still pads to `max_text_len` by default
(`padding="max_length", truncation=True, max_length=40`), the original's inputs. Override per call
(`processor(..., padding="longest")`).

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

from typing import Any

from transformers.processing_utils import ProcessorMixin

from .image_processing_vlmo import flatten_images


# Copied from hf_vl.models.meter.processing_meter.validate_text_input
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



class VlmoProcessor(ProcessorMixin):
    r"""
    Constructs a VLMo processor: [`VlmoImageProcessor`] for images and a BERT uncased tokenizer for text. Tokenizer
    and image processor kwargs are routed by name (`padding`, `max_length`, `size`, ...); `return_tensors` goes to
    both. As many texts as image examples are required; NLVR2 pairs (a list of two-image lists) give
    `pixel_values` of shape `(batch_size, 2, 3, H, W)`.

    Args:
        image_processor (`VlmoImageProcessor`): the image processor.
        tokenizer (`PreTrainedTokenizerBase`): the tokenizer (BERT uncased WordPiece).

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers import AutoTokenizer
    >>> processor = VlmoProcessor(VlmoImageProcessor(), AutoTokenizer.from_pretrained("path/to/bert-uncased"))
    >>> inputs = processor(images=Image.new("RGB", (64, 48)), text="a blue circle", return_tensors="pt")
    >>> inputs["input_ids"].shape, inputs["pixel_values"].shape
    (torch.Size([1, 40]), torch.Size([1, 3, 224, 224]))
    ```
    """

    # VLMo's text defaults (`vlmo/datasets/base_dataset.py`: padding to max_text_len = 40)
    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 40}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """At least one of `images` / `text`; `text` a non-empty string or list of them; `images` by the image
        processor's rules (one image, one per example, or equally long lists per example); as many texts as image
        examples. Errors name the argument."""
        if images is None and text is None:
            raise ValueError("You have to specify at least one input: `images` or `text`.")
        if videos is not None or audio is not None:
            raise ValueError(f"{type(self).__name__} takes `images` and `text`; got `videos` or `audio`.")
        num_texts = None if text is None else len(validate_text_input(text, "text"))
        if images is None:
            return
        flat = flatten_images(images, "images")
        num_images = (len(flat.images) // (flat.per_example or 1)) if flat.batched else 1
        if num_texts is not None and num_texts != num_images:
            raise ValueError(
                f"`text` and `images` must describe the same number of examples; got {num_texts} text(s) and "
                f"{num_images} image example(s)."
            )

    def _process_images(self, images, **kwargs):
        """NLVR2 examples carry several images: a list of equally long image lists gives `pixel_values` of shape
        `(batch_size, images_per_example, 3, H, W)`."""
        nested = isinstance(images, (list, tuple)) and len(images) and isinstance(images[0], (list, tuple))
        if not nested:
            return super()._process_images(images, **kwargs)
        per_example = {len(example) for example in images}
        if len(per_example) != 1:
            raise ValueError(f"Every example must have the same number of images, got {sorted(per_example)}.")
        features, replacements = super()._process_images([image for example in images for image in example], **kwargs)
        count = per_example.pop()
        pixel_values = features["pixel_values"]
        features["pixel_values"] = (pixel_values.reshape(len(images), count, *pixel_values.shape[1:])
                                    if hasattr(pixel_values, "reshape")
                                    else [pixel_values[i * count : (i + 1) * count] for i in range(len(images))])
        return features, replacements

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs=None, **kwargs):
        # a tokenizer's saved init kwargs (e.g. `max_length: 128` of sentence-transformers tokenizers) must not
        # override VLMo's text defaults
        if tokenizer_init_kwargs:
            tokenizer_init_kwargs = {k: v for k, v in tokenizer_init_kwargs.items() if k not in self.text_kwargs}
        return super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs=tokenizer_init_kwargs, **kwargs)


__all__ = ["VlmoProcessor"]
