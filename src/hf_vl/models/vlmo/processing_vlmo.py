# Copyright 2025 The hf_vl authors. Licensed under the Apache License, Version 2.0.
"""Processor for VLMo: a [`VlmoImageProcessor`] and the BERT uncased tokenizer behind one call.

Text padding: the original pads every text to exactly `max_text_len` (40) because its fusion encoder splits the
sequence at that position. `VlmoModel` splits at the length of the given text instead, so variable-length (padded to
the longest, `padding=True`) text works as well; the processor still pads to `max_text_len` by default
(`padding="max_length", truncation=True, max_length=40`), the original's inputs. Override per call
(`processor(..., padding="longest")`).

This file is shipped to the Hub as remote code: it imports only the public `transformers` API.
"""

from transformers.processing_utils import ProcessorMixin


class VlmoProcessor(ProcessorMixin):
    r"""
    Constructs a VLMo processor: [`VlmoImageProcessor`] for images and a BERT uncased tokenizer for text. Tokenizer
    and image processor kwargs are routed by name (`padding`, `max_length`, `size`, ...); `return_tensors` goes to
    both.

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

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs=None, **kwargs):
        # a tokenizer's saved init kwargs (e.g. `max_length: 128` of sentence-transformers tokenizers) must not
        # override VLMo's text defaults
        if tokenizer_init_kwargs:
            tokenizer_init_kwargs = {k: v for k, v in tokenizer_init_kwargs.items() if k not in self.text_kwargs}
        return super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs=tokenizer_init_kwargs, **kwargs)


__all__ = ["VlmoProcessor"]
