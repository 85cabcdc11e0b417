"""Training-time caches for inputs that repeat: a frozen text tower's outputs and processed images.

VQA datasets ask many questions about one image and reuse question templates (easy-VQA: 38,575 training questions,
4,000 images, 107 distinct questions; VQAv2 also repeats its questions heavily). When the text tower is frozen and
deterministic, its output for a question never changes, and a processed image never changes either, so recomputing
them every epoch is wasted CPU time. These helpers compute each once.

- `FrozenEncoderCache(text_model)` memoises the `last_hidden_state` of a frozen encoder (a BERT-style text tower)
  per unpadded input; it replaces the module's `forward` on that instance only (nothing changes in the state dict,
  the saved checkpoint or the model's code) and is undone with `.remove()`.
- `ProcessedImageCache` keeps processed `pixel_values` per image (keyed by file path or content hash), for a data
  collator.

Both give exactly what the uncached computation gives for the same input, independent of which batch the input
first appears in (each cached entry is computed on its own), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

__all__ = ["FrozenEncoderCache", "ProcessedImageCache", "image_cache_key"]


def _active_dropout(module: nn.Module) -> bool:
    """Whether a forward of `module` would be random (a dropout with p > 0 in training mode)."""
    return any(
        isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0 and sub.training for sub in module.modules()
    )


class FrozenEncoderCache:
    """Memoises the `last_hidden_state` of a frozen, deterministic encoder per unpadded input sequence.

    Args:
        module: the encoder (e.g. `model.base_model.text_model`, a `BertModel`), called with `input_ids`,
            `attention_mask` and optionally `token_type_ids`. Its parameters must not require grad.
        max_entries: the most sequences kept (later new sequences are computed, not stored).

    Each new sequence is encoded alone at its own length (no padding), so its cached features do not depend on the
    batch it first appeared in. Calls that ask for more than the last hidden state (attentions, hidden states), that
    need gradients through the encoder, or run while a dropout of the encoder is active fall through to the original
    `forward` unchanged. The padded positions of the returned `last_hidden_state` are zeros (the fusion layers mask
    them).

    Example:

    ```python
    >>> cache = FrozenEncoderCache(model.meter.text_model)   # after freezing it
    >>> trainer.train()
    >>> cache.hits, cache.misses
    >>> cache.remove()
    ```
    """

    def __init__(self, module: nn.Module, max_entries: int = 100_000):
        if any(param.requires_grad for param in module.parameters()):
            raise ValueError(
                f"FrozenEncoderCache needs a frozen encoder, but {type(module).__name__} has parameters with "
                "requires_grad=True; freeze it first (param.requires_grad = False)."
            )
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 0:
            raise ValueError(f"`max_entries` must be a non-negative int, got {max_entries!r}.")
        self.module, self.max_entries = module, max_entries
        self.entries: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._original_forward = module.forward
        module.forward = self._forward

    def remove(self) -> None:
        """Restores the module's own `forward` and empties the cache."""
        if self.module.__dict__.get("forward") == self._forward:
            del self.module.__dict__["forward"]
        self.entries.clear()

    def _encode_one(self, ids: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        kwargs = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]}
        if types is not None:
            kwargs["token_type_ids"] = types[None]
        with torch.no_grad():
            return self._original_forward(**kwargs).last_hidden_state[0]

    def _forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        wants_more = any(kwargs.get(name) for name in ("output_attentions", "output_hidden_states"))
        other_inputs = any(value is not None for name, value in kwargs.items() if name not in (
            "output_attentions", "output_hidden_states", "return_dict"))  # fmt: skip
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters())
        if input_ids is None or input_ids.dim() != 2 or wants_more or other_inputs or needs_grad or _active_dropout(
            self.module
        ):
            return self._original_forward(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
            )
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = []
        for row in range(input_ids.shape[0]):
            keep = mask[row].bool()
            ids = input_ids[row][keep]
            types = None if token_type_ids is None else token_type_ids[row][keep]
            key = ids.cpu().numpy().tobytes() + b"|" + (b"" if types is None else types.cpu().numpy().tobytes())
            features = self.entries.get(key)
            if features is None:
                self.misses += 1
                features = self._encode_one(ids, types)
                if len(self.entries) < self.max_entries:
                    self.entries[key] = features
            else:
                self.hits += 1
            rows.append((keep, features))
        hidden = rows[0][1]
        output = hidden.new_zeros(input_ids.shape[0], input_ids.shape[1], hidden.shape[-1])
        for row, (keep, features) in enumerate(rows):
            output[row, keep] = features.to(output.dtype)
        return BaseModelOutput(last_hidden_state=output)


def image_cache_key(value: Any) -> bytes | str | None:
    """A cache key for one `datasets.Image` value: its file path, else a hash of its bytes; `None` when the value
    cannot be keyed (an already decoded `PIL.Image` without a file name, an array)."""
    if isinstance(value, dict):
        if value.get("path"):
            return f"path:{value['path']}"
        if value.get("bytes") is not None:
            return hashlib.sha1(value["bytes"]).digest()
        return None
    filename = getattr(value, "filename", None)
    return f"path:{filename}" if filename else None


class ProcessedImageCache:
    """The processed tensors of each image, for collators that see the same image many times.

    Args:
        process: turns a list of raw image values into a dict of batched tensors (e.g. decode + image processor:
            `{"pixel_values": (N, C, H, W)}`, plus `pixel_mask` when the processor pads).
        max_entries: the most images kept.

    Calling the cache with a list of image values returns the same dict for that list, each image processed once
    (alone, so its tensors never depend on the batch it first appeared in) and then reused. Values that cannot be
    keyed (see `image_cache_key`) are processed every time.

    Example:

    ```python
    >>> cache = ProcessedImageCache(lambda images: dict(image_processor(images=images, return_tensors="pt")))
    >>> cache([image_a, image_b, image_a])["pixel_values"].shape   # image_a processed once
    torch.Size([3, 3, 64, 64])
    ```
    """

    def __init__(self, process: Callable[[list], dict], max_entries: int = 200_000):
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 0:
            raise ValueError(f"`max_entries` must be a non-negative int, got {max_entries!r}.")
        self.process, self.max_entries = process, max_entries
        self.entries: dict[Any, dict[str, torch.Tensor]] = {}
        self.hits = self.misses = 0

    def _process_one(self, value) -> dict[str, torch.Tensor]:
        features = self.process([value])
        return {name: tensor[0] for name, tensor in features.items()}

    def __call__(self, values: list) -> dict[str, torch.Tensor]:
        if len(values) == 0:
            raise ValueError("ProcessedImageCache needs at least one image.")
        rows = []
        for value in values:
            key = image_cache_key(value)
            features = self.entries.get(key) if key is not None else None
            if features is None:
                self.misses += 1
                features = self._process_one(value)
                if key is not None and len(self.entries) < self.max_entries:
                    self.entries[key] = features
            else:
                self.hits += 1
            rows.append(features)
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
