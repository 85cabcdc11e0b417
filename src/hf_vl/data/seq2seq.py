"""Collators for encoder-decoder vision-language models (METER's decoder variant, paper Sec. 3.1).

- :class:`DataCollatorForVLSpanCorruption`: T5-style span corruption of the text (the decoder variant's
  pre-training objective): 15% of the text tokens, in contiguous spans of mean length 3, are replaced in the encoder
  input by one sentinel token per span; the decoder target lists each sentinel followed by the tokens it replaced,
  then the end token.
- :class:`DataCollatorForVLSeq2Seq`: image + encoder text -> target text (captioning, VQA as answer generation);
  with ``itm_answers`` also image-text matching as generation: the decoder reads its start ("class") token and
  generates the binary answer (``DataCollatorForImageTextMatching`` beforehand makes the mismatched pairs).

Both take examples with ``input_ids`` (with the tokenizer's special tokens) and image inputs (``pixel_values``, ...;
stacked), and return ``input_ids`` / ``attention_mask`` (padded with the tokenizer) and ``labels`` (padded with -100);
the model builds ``decoder_input_ids`` by shifting the labels right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .collators import _TEXT_KEYS, _PerWorkerGeneratorMixin, _stack_values

__all__ = ["DataCollatorForVLSeq2Seq", "DataCollatorForVLSpanCorruption", "random_spans_noise_mask", "sentinel_token_ids"]

def sentinel_token_ids(tokenizer, count: int = 100) -> list[int]:
    """Sentinel ids for span corruption: the tokenizer's T5-style ``<extra_id_0>``, ``<extra_id_1>``, ... when it has
    them, else BERT WordPiece's ``[unused0]``, ``[unused1]``, ... (reserved rows of the vocabulary, so no resize).
    For a vocabulary with neither (RoBERTa), add sentinels first:
    ``tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)]})`` and
    ``model.resize_token_embeddings(len(tokenizer))``."""
    vocab = tokenizer.get_vocab()
    for pattern in ("<extra_id_{}>", "[unused{}]"):
        ids = [vocab.get(pattern.format(index)) for index in range(count)]
        if all(value is not None for value in ids):
            return ids
    raise ValueError(
        f"{type(tokenizer).__name__} has no sentinel tokens (<extra_id_N> or [unusedN]); add them with "
        "tokenizer.add_special_tokens({'additional_special_tokens': [f'<extra_id_{i}>' for i in range(100)]}) and "
        "resize the model's embeddings."
    )


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """T5's noise mask: `round(length * noise_density)` noise tokens (at least 1 for non-empty text) in
    `round(num_noise / mean_span_length)` (at least 1) contiguous spans interleaved with non-noise runs, then rolled
    by a random offset (T5's `random_roll`; a span may wrap around the end). Returns a bool tensor `(length,)`."""
    if length <= 0:
        return torch.zeros(0, dtype=torch.bool)
    num_noise = min(max(int(round(length * noise_density)), 1), length)
    num_spans = max(min(int(round(num_noise / mean_span_length)), num_noise), 1)
    num_clean = length - num_noise
    num_spans = min(num_spans, num_clean) if num_clean > 0 else 1

    def segment(total: int, parts: int) -> list[int]:  # `parts` positive lengths summing to `total`, random cuts
        if parts <= 1:
            return [total]
        cuts = (torch.randperm(total - 1, generator=generator)[: parts - 1] + 1).sort().values.tolist()
        bounds = [0, *cuts, total]
        return [bounds[index + 1] - bounds[index] for index in range(parts)]

    noise_lengths = segment(num_noise, num_spans)
    clean_lengths = segment(num_clean, num_spans) if num_clean >= num_spans and num_clean > 0 else [num_clean]
    mask = []
    for index, noise_length in enumerate(noise_lengths):
        if index < len(clean_lengths):
            mask += [False] * clean_lengths[index]
        mask += [True] * noise_length
    mask += [False] * (length - len(mask))
    # T5's `random_roll`: a random circular shift, so that spans are not always at the end of the text
    shift = int(torch.randint(0, length, (1,), generator=generator))
    return torch.tensor(mask[:length], dtype=torch.bool).roll(shift)


def _content_bounds(ids: list[int], special_ids: set[int]) -> tuple[int, int]:
    """[start, end) of the tokens between the leading and trailing special tokens ([CLS] ... [SEP], <s> ... </s>)."""
    start, end = 0, len(ids)
    while start < end and ids[start] in special_ids:
        start += 1
    while end > start and ids[end - 1] in special_ids:
        end -= 1
    return start, end


def _end_token_id(tokenizer) -> int:
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    raise ValueError(f"{type(tokenizer).__name__} has neither an eos nor a sep token to end the targets with.")


def _features_list(features: Any) -> list[Mapping[str, Any]]:
    if isinstance(features, Mapping):  # a batched dict: split it into examples
        keys = list(features.keys())
        size = len(features[keys[0]])
        return [{key: features[key][index] for key in keys} for index in range(size)]
    if not isinstance(features, Sequence) or isinstance(features, (str, bytes)) or len(features) == 0:
        raise ValueError("`features` must be a non-empty list of examples (dicts) or a batched dict.")
    return list(features)


def _as_list(value: Any) -> list[int]:
    return value.tolist() if isinstance(value, torch.Tensor) else list(value)


class _Seq2SeqCollatorBase(_PerWorkerGeneratorMixin):
    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None, max_target_length: int | None = None,
                 seed: int | None = None):  # fmt: skip
        if tokenizer is None or not hasattr(tokenizer, "pad"):
            raise TypeError("`tokenizer` must be a transformers tokenizer (it pads the encoder text).")
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_target_length = max_target_length
        self.seed, self.generator = seed, None

    def create_rng(self) -> None:
        """`seed` in the main process, `seed + worker id` in a DataLoader worker (as transformers' collators)."""
        info = torch.utils.data.get_worker_info()
        self.generator = torch.Generator().manual_seed(self.seed + (info.id if info is not None else 0))

    def _batch(self, features: list[Mapping[str, Any]], encoder_ids: list[list[int]], targets: list[list[int]]):
        if self.max_target_length is not None:
            targets = [target[: self.max_target_length] for target in targets]
        text = self.tokenizer.pad({"input_ids": encoder_ids}, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                  return_tensors="pt")  # fmt: skip
        batch: dict[str, Any] = {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}
        length = max(len(target) for target in targets)
        labels = torch.full((len(targets), length), -100, dtype=torch.long)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = torch.tensor(target, dtype=torch.long)
        batch["labels"] = labels
        skip = {*_TEXT_KEYS, "labels", *self._consumed_keys}
        for key in features[0]:
            if key not in skip:
                batch[key] = _stack_values([feature[key] for feature in features], key)
        return batch

    _consumed_keys: tuple[str, ...] = ()


class DataCollatorForVLSpanCorruption(_Seq2SeqCollatorBase):
    """T5 span corruption of the text of image-text examples (METER's encoder-decoder pre-training, paper Sec. 3.1).

    For each example the tokens between the special tokens are split into noise spans
    (:func:`random_spans_noise_mask`: ``noise_density`` of the tokens, spans of mean length ``mean_span_length``).
    The encoder input keeps the special tokens and the clean tokens and replaces span ``k`` by sentinel ``k``; the
    target is ``sentinel_0 span_0 sentinel_1 span_1 ... end``.

    Args:
        tokenizer: pads the encoder text; gives the special tokens and the sentinels (:func:`sentinel_token_ids`).
        noise_density: share of text tokens corrupted (0.15, as the paper).
        mean_span_length: mean span length (T5: 3).
        sentinel_ids: sentinel token ids (default: :func:`sentinel_token_ids`).
        seed: reproducible spans (``seed + worker id`` in DataLoader workers); ``None``: the global torch RNG.

    Example:
        >>> collator = DataCollatorForVLSpanCorruption(tokenizer, seed=0)
        >>> batch = collator([{"input_ids": tokenizer("a blue circle on white")["input_ids"], "pixel_values": image}])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'labels', 'pixel_values']
    """

    def __init__(self, tokenizer, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 sentinel_ids: Sequence[int] | None = None, seed: int | None = None,
                 pad_to_multiple_of: int | None = None):  # fmt: skip
        super().__init__(tokenizer, pad_to_multiple_of, seed=seed)
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"`noise_density` must be in (0, 1), got {noise_density!r}.")
        if not mean_span_length >= 1.0:
            raise ValueError(f"`mean_span_length` must be >= 1, got {mean_span_length!r}.")
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self.sentinel_ids = list(sentinel_ids) if sentinel_ids is not None else sentinel_token_ids(tokenizer)
        self.end_token_id = _end_token_id(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids)

    def corrupt(self, ids: Sequence[int], generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
        """(encoder ids, target ids) of one tokenised text."""
        ids = list(ids)
        start, end = _content_bounds(ids, self.special_ids)
        content = ids[start:end]
        if not content:
            raise ValueError("Span corruption needs at least one non-special text token; got an empty text.")
        mask = random_spans_noise_mask(len(content), self.noise_density, self.mean_span_length, generator).tolist()
        encoder, target, span = list(ids[:start]), [], -1
        for index, (token, noisy) in enumerate(zip(content, mask)):
            if noisy:
                if index == 0 or not mask[index - 1]:
                    span += 1
                    if span >= len(self.sentinel_ids):
                        raise ValueError(f"The text needs more than {len(self.sentinel_ids)} sentinels.")
                    encoder.append(self.sentinel_ids[span])
                    target.append(self.sentinel_ids[span])
                target.append(token)
            else:
                encoder.append(token)
        encoder += ids[end:]
        return encoder, target + [self.end_token_id]

    def __call__(self, features: Any) -> dict[str, Any]:
        features = _features_list(features)
        generator = self._worker_generator()
        pairs = [self.corrupt(_as_list(feature["input_ids"]), generator) for feature in features]
        return self._batch(features, [pair[0] for pair in pairs], [pair[1] for pair in pairs])


class DataCollatorForVLSeq2Seq(_Seq2SeqCollatorBase):
    """Image + encoder text -> target text batches for an encoder-decoder VL model.

    Each example holds ``input_ids`` (the encoder text: a question, a prompt, the caption to match), image inputs and
    the target: ``target_key`` (token ids, e.g. ``tokenizer(caption)["input_ids"]``; the leading special tokens are
    dropped and the end token kept, so the decoder learns to stop) or, for image-text matching with
    ``itm_answers=("no", "yes")``, ``itm_labels`` (0/1): the target is the answer word's token and the end token.

    Args:
        tokenizer: pads the encoder text; tokenises ``itm_answers``.
        target_key: key of the target token ids.
        itm_answers: (mismatch answer, match answer) words for ITM as generation; ``None``: no ITM.
        max_target_length: truncate targets (the end token is kept only if it fits).
    """

    def __init__(self, tokenizer, target_key: str = "target_ids", itm_answers: tuple[str, str] | None = None,
                 max_target_length: int | None = None, pad_to_multiple_of: int | None = None):  # fmt: skip
        super().__init__(tokenizer, pad_to_multiple_of, max_target_length)
        self.target_key = target_key
        self.end_token_id = _end_token_id(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids) - {self.end_token_id}
        self.itm_target_ids = None
        if itm_answers is not None:
            self.itm_target_ids = []
            for answer in itm_answers:
                ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
                self.itm_target_ids.append(list(ids) + [self.end_token_id])
        self._consumed_keys = (target_key, "itm_labels") if itm_answers is not None else (target_key,)

    def target(self, ids: Sequence[int]) -> list[int]:
        ids = list(ids)
        while ids and ids[0] in self.special_ids:
            ids = ids[1:]
        if not ids or ids[-1] != self.end_token_id:
            ids = ids + [self.end_token_id]
        return ids

    def __call__(self, features: Any) -> dict[str, Any]:
        features = _features_list(features)
        targets = []
        for index, feature in enumerate(features):
            if self.itm_target_ids is not None and "itm_labels" in feature:
                label = int(feature["itm_labels"])
                if label not in (0, 1):
                    raise ValueError(f"`itm_labels` of example {index} must be 0 or 1, got {label}.")
                targets.append(list(self.itm_target_ids[label]))
            elif self.target_key in feature:
                targets.append(self.target(_as_list(feature[self.target_key])))
            else:
                raise KeyError(f"Example {index} has no `{self.target_key}` (the target token ids).")
        return self._batch(features, [_as_list(feature["input_ids"]) for feature in features], targets)
