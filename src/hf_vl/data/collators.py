"""Pre-training collators: masked language modelling, span masking and image-text matching negatives.

The masking collators are transformers' :class:`~transformers.DataCollatorForLanguageModeling`: its token
choice (``mlm_probability``), whole-word masking (``whole_word_mask``), replacement rule (``mask_replace_prob``
``[MASK]``, ``random_replace_prob`` random token, the rest unchanged: BERT's 80/10/10) and random generator
(``seed``: one ``torch.Generator`` seeded ``seed`` in the main process and ``seed + worker id`` in each
``DataLoader`` worker, so workers draw different masks and a run is reproducible). hf_vl adds only what it lacks
for image-text batches:

- examples carry more than text: text keys are padded with the tokenizer, every other key (``pixel_values``,
  region features, strings, ragged answer lists) is stacked into a tensor when its values share a shape and kept
  as a list otherwise; ``offset_mapping`` of examples of different lengths is padded too;
- the labels go to ``label_key`` (``mlm_labels``: the name the pre-training heads of hf_vl read);
- word boundaries without ``offset_mapping``: from the fast tokenizer's ``word_ids()`` when the batch is a
  ``BatchEncoding`` that still carries them, from a ``word_ids`` key per example, and otherwise from the token
  strings (WordPiece marks continuations with ``##``, byte-level BPE and SentencePiece mark word starts with
  ``Ġ`` / ``▁``). With ``offset_mapping`` (``tokenizer(..., return_offsets_mapping=True)``) transformers' own rule
  applies (a word is a run of tokens without a gap between their character spans);
- whole-word masking keeps the 80/10/10 replacement per token (as BERT's whole-word masking release does) where
  transformers switches it to 100% ``[MASK]``;
- InterBERT span masking (:class:`DataCollatorForSpanMasking`) and image-text matching negatives, random or hard
  (:class:`DataCollatorForImageTextMatching`), with the same per-worker ``seed``.

Special tokens and padding are never chosen. Every collator takes a list of examples (dicts as a
``datasets.Dataset`` yields them) or an already batched dict (a ``BatchEncoding`` straight from the tokenizer).

Note on ``seed``: as in transformers, a ``DataLoader`` worker seeds its generator when it starts, so with
``persistent_workers=False`` every epoch replays the same masks per worker (``persistent_workers=True`` or
``num_workers=0`` draw new masks each epoch). Without ``seed`` the global torch RNG is used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling

__all__ = [
    "IMAGE_INPUT_KEYS",
    "DataCollatorForImageTextMatching",
    "DataCollatorForSpanMasking",
    "DataCollatorForVLMaskedLM",
    "sample_hard_negatives",
    "sample_span_word_mask",
]

#: Keys that hold the image side of an example; ITM negatives swap these between examples.
IMAGE_INPUT_KEYS: tuple[str, ...] = (
    "pixel_values",
    "pixel_mask",
    "visual_feats",
    "visual_pos",
    "visual_attention_mask",
)
_TEXT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")
_WORD_IDS_KEY = "word_ids"
_OFFSETS_KEY = "offset_mapping"
_SUBWORD_MARKERS = {"wordpiece": "##", "byte_bpe": "Ġ", "sentencepiece": "▁"}


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _check_probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Number) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise TypeError(f"`seed` must be a non-negative int or None, got {seed!r}.")
    return seed


def _check_pad_to_multiple_of(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`pad_to_multiple_of` must be a positive int or None, got {value!r}.")
    return value


def _check_key(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty str, got {value!r}.")
    return value


def _resolve_tokenizer(tokenizer: Any, require_mask_token: bool):
    """Accept a tokenizer, or a processor that holds one in ``.tokenizer``."""
    if tokenizer is not None and not hasattr(tokenizer, "convert_ids_to_tokens") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer
    required = ("convert_ids_to_tokens", "pad", "get_vocab", "all_special_ids")
    if tokenizer is None or any(not hasattr(tokenizer, attribute) for attribute in required):
        raise TypeError(
            "`tokenizer` must be a transformers tokenizer (PreTrainedTokenizerBase) or a processor holding "
            f"one, got {type(tokenizer).__name__}."
        )
    if require_mask_token and tokenizer.mask_token_id is None:
        raise ValueError(
            f"`tokenizer` ({type(tokenizer).__name__}) has no mask token; masked language modelling needs one "
            "(set `tokenizer.mask_token`)."
        )
    return tokenizer


def _random_values(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device).cpu()


# ----------------------------------------------------------------------------------------------
# Collation: padding text, stacking everything else
# ----------------------------------------------------------------------------------------------


def _stack_values(values: list[Any], key: str) -> Any:
    """Stack per-example values into a tensor when they share a shape; keep a list otherwise."""
    if all(isinstance(value, torch.Tensor) for value in values):
        shapes = {tuple(value.shape) for value in values}
        if len(shapes) > 1:
            raise ValueError(
                f"Cannot stack `{key}`: examples have different shapes {sorted(shapes)}; pad them to one shape first."
            )
        return torch.stack(values)
    if all(isinstance(value, np.ndarray) for value in values):
        shapes = {value.shape for value in values}
        if len(shapes) > 1:
            raise ValueError(
                f"Cannot stack `{key}`: examples have different shapes {sorted(shapes)}; pad them to one shape first."
            )
        return torch.from_numpy(np.stack(values))
    if all(isinstance(value, (Number, np.number)) and not isinstance(value, str) for value in values):
        return torch.tensor(values)
    if all(isinstance(value, (list, tuple)) for value in values):
        try:
            return torch.tensor(values)
        except (TypeError, ValueError, RuntimeError):
            return list(values)  # ragged or non-numeric lists (answers, answer ids)
    return list(values)


def _pad_word_ids(word_ids: list[list[int | None]], length: int, padding_side: str) -> list[list[int | None]]:
    padded = []
    for row in word_ids:
        missing = length - len(row)
        if missing < 0:
            raise ValueError(f"`word_ids` row of length {len(row)} is longer than `input_ids` ({length}).")
        padded.append(([None] * missing + list(row)) if padding_side == "left" else (list(row) + [None] * missing))
    return padded


def _pad_offsets(offsets: list[Any], length: int, padding_side: str) -> torch.Tensor:
    padded = torch.zeros(len(offsets), length, 2, dtype=torch.long)
    for row, row_offsets in enumerate(offsets):
        values = torch.as_tensor(np.asarray(row_offsets, dtype=np.int64).reshape(-1, 2))
        if len(values) > length:
            raise ValueError(f"`offset_mapping` row of length {len(values)} is longer than `input_ids` ({length}).")
        if padding_side == "left":
            padded[row, length - len(values) :] = values
        else:
            padded[row, : len(values)] = values
    return padded


def _encoding_word_ids(encoding: Any, index: int) -> list[int | None]:
    """Word ids of one row of a fast ``BatchEncoding``, unique across the two sequences of a pair."""
    word_ids, sequence_ids = encoding.word_ids(index), encoding.sequence_ids(index)
    unique: dict[tuple[int, int], int] = {}
    row: list[int | None] = []
    for word_id, sequence_id in zip(word_ids, sequence_ids):
        if word_id is None:
            row.append(None)
        else:
            row.append(unique.setdefault((sequence_id or 0, word_id), len(unique)))
    return row


def _collate_batched(features: Mapping[str, Any]) -> tuple[dict[str, Any], list | None]:
    batch = dict(features)
    word_ids = batch.pop(_WORD_IDS_KEY, None)
    encodings = getattr(features, "encodings", None)
    if word_ids is None and encodings is not None and "input_ids" in batch:
        word_ids = [_encoding_word_ids(features, index) for index in range(len(encodings))]
    for key in (*_TEXT_KEYS, _OFFSETS_KEY):
        if key in batch and not isinstance(batch[key], torch.Tensor):
            try:
                batch[key] = torch.as_tensor(np.asarray(batch[key]))
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`{key}` of a batched input must be rectangular; pad it (tokenizer(..., padding=True)) "
                    "or pass a list of examples instead."
                ) from error
    return batch, word_ids


def _collate_examples(
    features: Sequence[Mapping[str, Any]], tokenizer: Any, pad_to_multiple_of: int | None
) -> tuple[dict[str, Any], list | None]:
    for index, feature in enumerate(features):
        if not isinstance(feature, Mapping):
            raise TypeError(f"`features[{index}]` must be a dict of inputs, got {type(feature).__name__}.")
    keys = list(features[0].keys())
    for index, feature in enumerate(features[1:], start=1):
        if set(feature.keys()) != set(keys):
            raise ValueError(
                f"All examples must have the same keys; `features[0]` has {sorted(keys)}, "
                f"`features[{index}]` has {sorted(feature.keys())}."
            )
    text_keys = [key for key in _TEXT_KEYS if key in keys]
    batch: dict[str, Any] = {}
    if text_keys:
        text = [{key: feature[key] for key in text_keys} for feature in features]
        lengths = {len(example[text_keys[0]]) for example in text}
        needs_padding = len(lengths) > 1 or (pad_to_multiple_of is not None and max(lengths) % pad_to_multiple_of)
        if needs_padding:
            if tokenizer is None:
                raise ValueError("Examples have text of different lengths and no `tokenizer` was given to pad them.")
            batch.update(tokenizer.pad(text, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"))
        else:
            for key in text_keys:
                batch[key] = torch.as_tensor(np.asarray([example[key] for example in text]))
    padding_side = getattr(tokenizer, "padding_side", "right")
    word_ids = None
    if _WORD_IDS_KEY in keys:
        word_ids = [list(feature[_WORD_IDS_KEY]) for feature in features]
        if "input_ids" in batch:
            word_ids = _pad_word_ids(word_ids, batch["input_ids"].shape[1], padding_side)
    if _OFFSETS_KEY in keys and "input_ids" in batch:
        # tokenizer.pad does not pad offsets; padding positions are never masked, so (0, 0) is as good as any.
        batch[_OFFSETS_KEY] = _pad_offsets(
            [feature[_OFFSETS_KEY] for feature in features], batch["input_ids"].shape[1], padding_side
        )
    for key in keys:
        if key not in batch and key != _WORD_IDS_KEY:
            batch[key] = _stack_values([feature[key] for feature in features], key)
    return batch, word_ids


def _collate(
    features: Any, tokenizer: Any = None, pad_to_multiple_of: int | None = None
) -> tuple[dict[str, Any], list | None]:
    """Batch ``features`` (a list of examples or an already batched dict); also return word ids if known."""
    if isinstance(features, Mapping):
        return _collate_batched(features)
    if isinstance(features, Sequence) and not isinstance(features, (str, bytes)):
        if len(features) == 0:
            raise ValueError("`features` is empty; a batch needs at least one example.")
        return _collate_examples(features, tokenizer, pad_to_multiple_of)
    raise TypeError(f"`features` must be a list of examples or a batched dict, got {type(features).__name__}.")


# ----------------------------------------------------------------------------------------------
# Masked language modelling, on transformers' DataCollatorForLanguageModeling
# ----------------------------------------------------------------------------------------------

# transformers warns about (and for whole words switches off) what hf_vl's word boundaries and 80/10/10 provide.
_SUPERSEDED_WARNINGS = (
    "Random token replacement is not supported with whole word masking",
    "Whole word masking depends on offset mapping",
)


class _PerWorkerGeneratorMixin:
    """The ``seed`` handling of ``DataCollatorForLanguageModeling``, made safe for forked ``DataLoader`` workers.

    The generator is (re)built whenever the collator runs in a process other than the one that built it, so a
    worker never reuses a generator copied from its parent: ``seed`` in the main process, ``seed + worker id``
    in a worker (transformers' ``create_rng``).
    """

    seed: int | None
    generator: torch.Generator | None

    def _worker_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None  # the global torch RNG
        if not isinstance(self.generator, torch.Generator) or getattr(self, "_generator_pid", None) != os.getpid():
            self.create_rng()
            self._generator_pid = os.getpid()
        return self.generator


@dataclass
class DataCollatorForVLMaskedLM(_PerWorkerGeneratorMixin, DataCollatorForLanguageModeling):
    """Masked language modelling on the text side of image-text batches (BERT masking).

    transformers' :class:`~transformers.DataCollatorForLanguageModeling` does the masking: each maskable token
    (every token but special tokens and padding) is chosen with probability ``mlm_probability``; with
    ``whole_word_mask=True`` each *word* is chosen with that probability and all its sub-tokens are masked
    together. Chosen tokens are replaced 80% ``[MASK]`` / 10% random token / 10% unchanged
    (``mask_replace_prob``, ``random_replace_prob``; kept for whole-word masking too). The original ids of chosen
    tokens go to ``batch[label_key]``, ``-100`` elsewhere. Image keys and any other key pass through (stacked
    when possible); see the module docstring for word boundaries.

    Args:
        tokenizer: the text tokenizer (or a processor holding one); it must have a mask token.
        whole_word_mask: mask whole words instead of single tokens.
        mlm_probability: probability of choosing a token (or a word).
        mask_replace_prob: share of chosen tokens replaced by ``[MASK]``.
        random_replace_prob: share of chosen tokens replaced by a random token.
        pad_to_multiple_of: pad text to a multiple of this length.
        seed: seeds the masks (``seed + worker id`` in each ``DataLoader`` worker); ``None``: global torch RNG.
        label_key: batch key of the labels.

    Example:
        >>> collator = DataCollatorForVLMaskedLM(tokenizer, seed=0)
        >>> batch = collator([tokenizer("a red circle"), tokenizer("is there a blue shape?")])
        >>> batch["mlm_labels"].shape == batch["input_ids"].shape
        True
    """

    mlm: bool = field(default=True, init=False, repr=False)
    return_tensors: str = field(default="pt", init=False, repr=False)
    label_key: str = "mlm_labels"

    def __post_init__(self):
        self.tokenizer = _resolve_tokenizer(self.tokenizer, require_mask_token=True)
        self.mlm_probability = _check_probability(self.mlm_probability, "mlm_probability")
        requested = (
            _check_probability(self.mask_replace_prob, "mask_replace_prob"),
            _check_probability(self.random_replace_prob, "random_replace_prob"),
        )
        if sum(requested) > 1.0 + 1e-9:
            raise ValueError(
                f"`mask_replace_prob + random_replace_prob` must not exceed 1, got {requested[0]} + {requested[1]}."
            )
        if not isinstance(self.whole_word_mask, bool):
            raise TypeError(f"`whole_word_mask` must be a bool, got {self.whole_word_mask!r}.")
        self.pad_to_multiple_of = _check_pad_to_multiple_of(self.pad_to_multiple_of)
        self.seed = _check_seed(self.seed)
        self.label_key = _check_key(self.label_key, "label_key")
        with warnings.catch_warnings():
            for message in _SUPERSEDED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            super().__post_init__()
        self.mask_replace_prob, self.random_replace_prob = requested  # transformers sets 1 / 0 for whole words
        self._generator_pid = None
        self._subword_scheme: str | None = None
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__}, mlm_probability={self.mlm_probability}, "
            f"whole_word_mask={self.whole_word_mask}, mask_replace_prob={self.mask_replace_prob}, "
            f"random_replace_prob={self.random_replace_prob}, seed={self.seed}, label_key={self.label_key!r})"
        )

    def __call__(self, features: Any, return_tensors: str | None = None) -> dict[str, Any]:
        if return_tensors not in (None, "pt"):
            raise ValueError(f"`return_tensors` must be 'pt' (torch tensors), got {return_tensors!r}.")
        return self.torch_call(features)

    # -- word boundaries (what transformers' collator lacks without offset_mapping) ------------

    @property
    def subword_scheme(self) -> str:
        """How token strings mark word boundaries: ``wordpiece``, ``byte_bpe``, ``sentencepiece`` or ``none``."""
        if self._subword_scheme is None:
            vocab = self.tokenizer.get_vocab()
            counts = {
                scheme: sum(token.startswith(marker) and len(token) > len(marker) for token in vocab)
                for scheme, marker in _SUBWORD_MARKERS.items()
            }
            best = max(counts, key=counts.get)
            self._subword_scheme = best if counts[best] > 0 else "none"
        return self._subword_scheme

    def _is_continuation(self, token: str) -> bool:
        scheme = self.subword_scheme
        if scheme == "wordpiece":
            return token.startswith("##")
        if scheme in ("byte_bpe", "sentencepiece"):
            return not token.startswith(_SUBWORD_MARKERS[scheme])
        return False

    def _maskable_positions(self, batch: dict[str, Any], input_ids: torch.Tensor) -> torch.Tensor:
        """``True`` where a token may be masked: not special, not padding (``special_tokens_mask`` is popped)."""
        maskable = ~torch.isin(input_ids, self._special_ids.to(input_ids.device))
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        if special_tokens_mask is not None:
            maskable &= ~torch.as_tensor(special_tokens_mask, device=input_ids.device).bool()
        attention_mask = batch.get("attention_mask")
        if attention_mask is not None:
            maskable &= torch.as_tensor(attention_mask, device=input_ids.device).bool()
        return maskable

    def word_structure(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, word_ids: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Group maskable tokens into words.

        Returns ``word_index`` ``(batch, seq_len)``, the word of each token (``-1`` for special tokens
        and padding), and ``word_segments`` ``(batch, num_words)``, the text segment of each word
        (segments are separated by special tokens; ``-1`` pads rows with fewer words).
        """
        batch_size, seq_len = input_ids.shape
        if word_ids is not None and (len(word_ids) != batch_size or any(len(row) != seq_len for row in word_ids)):
            raise ValueError(
                f"`word_ids` must have one row of length {seq_len} per example ({batch_size} rows), got "
                f"{[len(row) for row in word_ids]}."
            )
        maskable_rows = maskable.tolist()
        word_index = torch.full((batch_size, seq_len), -1, dtype=torch.long)
        segments_per_row: list[list[int]] = []
        for row in range(batch_size):
            tokens = self.tokenizer.convert_ids_to_tokens(input_ids[row].tolist()) if word_ids is None else None
            segments: list[int] = []
            segment, previous_maskable, previous_key = 0, False, None
            for position in range(seq_len):
                if not maskable_rows[row][position]:
                    segment += previous_maskable
                    previous_maskable = False
                    continue
                if word_ids is not None:
                    key = word_ids[row][position]
                    starts_word = not previous_maskable or key is None or key != previous_key
                    previous_key = key
                else:
                    starts_word = not previous_maskable or not self._is_continuation(tokens[position])
                if starts_word:
                    segments.append(segment)
                word_index[row, position] = len(segments) - 1
                previous_maskable = True
            segments_per_row.append(segments)
        num_words = max((len(segments) for segments in segments_per_row), default=0)
        word_segments = torch.full((batch_size, max(num_words, 1)), -1, dtype=torch.long)
        for row, segments in enumerate(segments_per_row):
            word_segments[row, : len(segments)] = torch.tensor(segments, dtype=torch.long)
        return word_index, word_segments

    @staticmethod
    def word_offsets(word_index: torch.Tensor) -> torch.Tensor:
        """Character-like ``(batch, seq_len, 2)`` offsets that carry ``word_index``'s words to transformers' rule.

        Tokens of one word get touching spans, a new word starts one step after the previous token ends:
        ``DataCollatorForLanguageModeling`` then finds exactly these words.
        """
        starts = word_index >= 0
        starts[:, 1:] &= word_index[:, 1:] != word_index[:, :-1]
        begin = torch.arange(word_index.shape[1]).expand_as(word_index) + starts.long().cumsum(dim=1)
        return torch.stack([begin, begin + 1], dim=-1)

    # -- collation ---------------------------------------------------------------------------

    def _prepare(self, features: Any) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, list | None, Any]:
        batch, word_ids = _collate(features, self.tokenizer, self.pad_to_multiple_of)
        if "input_ids" not in batch:
            raise ValueError(f"`features` must contain `input_ids` for masking, got keys {sorted(batch)}.")
        input_ids = batch["input_ids"]
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        input_ids = input_ids.long()
        offsets = batch.pop(_OFFSETS_KEY, None)
        if offsets is not None and tuple(offsets.shape) != (*input_ids.shape, 2):
            raise ValueError(
                f"`offset_mapping` must have shape {(*input_ids.shape, 2)} (one (start, end) per token), got "
                f"{tuple(offsets.shape)}."
            )
        return batch, input_ids, self._maskable_positions(batch, input_ids), word_ids, offsets

    def select_and_mask(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, word_ids: list | None, offsets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The corrupted ``input_ids`` and the labels, from ``DataCollatorForLanguageModeling.torch_mask_tokens``."""
        if self.whole_word_mask and offsets is None:
            offsets = self.word_offsets(self.word_structure(input_ids, maskable, word_ids)[0])
        return self.torch_mask_tokens(input_ids.clone(), special_tokens_mask=~maskable, offset_mapping=offsets)

    def torch_call(self, examples: Any) -> dict[str, Any]:
        self._worker_generator()
        batch, input_ids, maskable, word_ids, offsets = self._prepare(examples)
        batch["input_ids"], batch[self.label_key] = self.select_and_mask(input_ids, maskable, word_ids, offsets)
        return batch


def _check_span_extension(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`max_span_extension` must be a non-negative int, got {value!r}.")
    return value


def sample_span_word_mask(
    word_segments: torch.Tensor,
    anchor_probability: float = 0.10,
    max_span_extension: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InterBERT span sampling over words (Lin et al., 2020, masked segment modelling).

    Each word is an anchor with probability ``anchor_probability``; an anchor masks itself and the
    next ``e ~ Uniform{0, ..., max_span_extension}`` words, cut at the end of its text segment.
    Spans of neighbouring anchors may overlap and merge.

    Args:
        word_segments: ``(batch, num_words)`` segment id of each word, ``-1`` for padding words
            (as returned by ``word_structure`` of the collators); spans never cross segments.
        anchor_probability: probability that a word is an anchor.
        max_span_extension: largest number of words added after an anchor.
        generator: ``torch.Generator`` for reproducibility.

    Returns:
        ``word_mask`` ``(batch, num_words)`` bool, the masked words; ``anchors`` ``(batch, num_words)``
        bool; ``span_lengths`` ``(batch, num_words)`` long, the number of words each anchor masks
        (``1 .. max_span_extension + 1``, ``0`` for non-anchors).

    Example:
        >>> segments = torch.zeros(2, 20, dtype=torch.long)
        >>> word_mask, anchors, lengths = sample_span_word_mask(segments, generator=torch.Generator().manual_seed(0))
        >>> bool(((lengths >= 1) & (lengths <= 3))[anchors].all())
        True
    """
    anchor_probability = _check_probability(anchor_probability, "anchor_probability")
    _check_span_extension(max_span_extension)
    if not isinstance(word_segments, torch.Tensor):
        raise TypeError(f"`word_segments` must be a torch.Tensor, got {type(word_segments).__name__}.")
    if word_segments.dim() != 2:
        raise ValueError(f"`word_segments` must be (batch, num_words), got shape {tuple(word_segments.shape)}.")
    generator = _check_generator(generator)
    word_segments = word_segments.cpu().long()
    valid = word_segments >= 0
    anchors = valid & (_random_values(tuple(word_segments.shape), generator) < anchor_probability)
    device = generator.device if generator is not None else torch.device("cpu")
    extensions = torch.randint(
        0, max_span_extension + 1, tuple(word_segments.shape), generator=generator, device=device
    ).cpu()
    word_mask = anchors.clone()
    span_lengths = anchors.long()
    for offset in range(1, max_span_extension + 1):
        if offset >= word_segments.shape[1]:
            break
        # Word k is covered by the anchor k - offset if that span reaches k inside the same segment.
        covered = (
            anchors[:, :-offset]
            & (extensions[:, :-offset] >= offset)
            & valid[:, offset:]
            & (word_segments[:, offset:] == word_segments[:, :-offset])
        )
        word_mask[:, offset:] |= covered
        span_lengths[:, :-offset] += covered.long()
    return word_mask, anchors, span_lengths


@dataclass
class DataCollatorForSpanMasking(DataCollatorForVLMaskedLM):
    """InterBERT masked segment modelling on text: mask contiguous spans of whole words.

    Each word is an anchor with probability ``anchor_probability`` (10% in InterBERT); an anchor masks
    itself and ``0 .. max_span_extension`` (uniform) following words of the same segment (see
    :func:`sample_span_word_mask`). The tokens of the masked words then go through
    ``DataCollatorForLanguageModeling.torch_mask_tokens`` with certainty (``mlm_probability=1`` on them, every
    other token excluded), which applies the BERT replacement (80% ``[MASK]``, 10% random, 10% unchanged);
    labels go to ``batch[label_key]``. Word boundaries as in :class:`DataCollatorForVLMaskedLM` (with
    ``offset_mapping``, transformers' rule).

    Args:
        tokenizer: the text tokenizer (or a processor holding one); it must have a mask token.
        anchor_probability: probability that a word starts a span.
        max_span_extension: most words added after an anchor (InterBERT: 2, spans of 1-3 words).
        mask_replace_prob, random_replace_prob, pad_to_multiple_of, seed, label_key: as in
            :class:`DataCollatorForVLMaskedLM`.

    Example:
        >>> collator = DataCollatorForSpanMasking(tokenizer, seed=0)
        >>> batch = collator([tokenizer("the red circle is on the left of the blue square")])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'mlm_labels', 'token_type_ids']
    """

    whole_word_mask: bool = field(default=False, init=False, repr=False)
    mlm_probability: float = field(default=1.0, init=False, repr=False)
    anchor_probability: float = 0.10
    max_span_extension: int = 2

    def __post_init__(self):
        self.anchor_probability = _check_probability(self.anchor_probability, "anchor_probability")
        _check_span_extension(self.max_span_extension)
        super().__post_init__()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__}, anchor_probability="
            f"{self.anchor_probability}, max_span_extension={self.max_span_extension}, seed={self.seed}, "
            f"label_key={self.label_key!r})"
        )

    def select_tokens(
        self,
        input_ids: torch.Tensor,
        maskable: torch.Tensor,
        word_ids: list | None = None,
        offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Boolean ``(batch, seq_len)`` mask of the tokens of the sampled spans."""
        if offsets is not None:  # transformers' word rule: tokens whose character spans touch form one word
            word_numbers, _ = self._calc_word_ids_and_prob_mask(offsets.cpu().numpy(), (~maskable).cpu().numpy())
            word_ids = [[None if word < 0 else int(word) for word in row] for row in word_numbers.tolist()]
        word_index, word_segments = self.word_structure(input_ids, maskable, word_ids)
        word_mask, _, _ = sample_span_word_mask(
            word_segments, self.anchor_probability, self.max_span_extension, self._worker_generator()
        )
        chosen = word_mask.gather(1, word_index.clamp(min=0)) & (word_index >= 0)
        return chosen.to(maskable.device) & maskable

    def select_and_mask(
        self, input_ids: torch.Tensor, maskable: torch.Tensor, word_ids: list | None, offsets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.select_tokens(input_ids, maskable, word_ids, offsets)
        return self.torch_mask_tokens(input_ids.clone(), special_tokens_mask=~chosen)


# ----------------------------------------------------------------------------------------------
# Image-text matching
# ----------------------------------------------------------------------------------------------


def sample_hard_negatives(
    similarity: torch.Tensor,
    generator: torch.Generator | None = None,
    invalid_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sample one hard negative per row from a square similarity matrix (ALBEF / VLMo hard negative mining).

    Row ``i`` draws column ``j != i`` with probability ``softmax(similarity[i] / temperature)`` over the
    allowed columns, so more similar (harder) negatives are drawn more often (ALBEF, Li et al. 2021;
    VLMo, Bao et al. 2022). Pass an all-zero matrix for uniform random negatives.
    The similarity is detached: sampling takes no gradient.

    Args:
        similarity: ``(batch, batch)`` scores, row ``i`` = query ``i`` (e.g. text), column ``j`` =
            candidate ``j`` (e.g. image); the diagonal holds the positive pairs. ``-inf`` excludes a pair.
        generator: ``torch.Generator`` for reproducibility (on the device it samples on).
        invalid_mask: optional ``(batch, batch)`` bool, ``True`` for further pairs that must not be
            drawn (e.g. other captions of the same image).
        temperature: divides the similarities before the softmax.

    Returns:
        ``(batch,)`` long tensor of negative indices; ``-1`` for rows without any allowed column.

    Example:
        >>> sim = torch.tensor([[5.0, 4.0, -3.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]])
        >>> negatives = sample_hard_negatives(sim, generator=torch.Generator().manual_seed(0))
        >>> bool((negatives != torch.arange(3)).all())
        True
    """
    if not isinstance(similarity, torch.Tensor):
        raise TypeError(f"`similarity` must be a torch.Tensor, got {type(similarity).__name__}.")
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"`similarity` must be square (batch, batch), got shape {tuple(similarity.shape)}.")
    batch_size = similarity.shape[0]
    if batch_size < 2:
        raise ValueError(f"`similarity` needs a batch of at least 2 to draw negatives, got {batch_size}.")
    if torch.isnan(similarity).any():
        raise ValueError("`similarity` contains NaN.")
    if isinstance(temperature, bool) or not isinstance(temperature, Number) or not float(temperature) > 0:
        raise ValueError(f"`temperature` must be a positive number, got {temperature!r}.")
    generator = _check_generator(generator)
    device = generator.device if generator is not None else similarity.device
    logits = similarity.detach().to(device=device, dtype=torch.float32) / float(temperature)
    excluded = torch.eye(batch_size, dtype=torch.bool, device=device)
    if invalid_mask is not None:
        invalid_mask = torch.as_tensor(invalid_mask, device=device)
        if invalid_mask.shape != similarity.shape or invalid_mask.dtype != torch.bool:
            raise ValueError(
                f"`invalid_mask` must be a bool tensor of shape {tuple(similarity.shape)}, got "
                f"{invalid_mask.dtype} of shape {tuple(invalid_mask.shape)}."
            )
        excluded |= invalid_mask
    logits = logits.masked_fill(excluded, float("-inf"))
    has_candidate = torch.isfinite(logits).any(dim=1)
    # Rows whose allowed similarities are all -inf, or which allow nothing, get a dummy uniform row.
    logits[~has_candidate] = 0.0
    probabilities = torch.softmax(logits, dim=1)
    negatives = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
    negatives[~has_candidate] = -1
    return negatives.to(similarity.device)


def _same_image_matrix(image_ids: Any, batch_size: int) -> torch.Tensor:
    """``(batch, batch)`` bool: examples that show the same image (by id)."""
    if isinstance(image_ids, torch.Tensor):
        if image_ids.shape[:1] != (batch_size,) or image_ids.dim() != 1:
            raise ValueError(f"image ids must have shape ({batch_size},), got {tuple(image_ids.shape)}.")
        image_ids = image_ids.cpu()
        return image_ids[:, None] == image_ids[None, :]
    image_ids = list(image_ids)
    if len(image_ids) != batch_size:
        raise ValueError(f"Expected {batch_size} image ids, got {len(image_ids)}.")
    return torch.tensor([[a == b for b in image_ids] for a in image_ids], dtype=torch.bool)


def _gather_rows(value: Any, source: torch.Tensor, key: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.index_select(0, source.to(value.device))
    if isinstance(value, np.ndarray):
        return value[source.numpy()]
    if isinstance(value, (list, tuple)):
        return [value[index] for index in source.tolist()]
    raise TypeError(f"Cannot swap `{key}` between examples: unsupported type {type(value).__name__}.")


class DataCollatorForImageTextMatching(_PerWorkerGeneratorMixin):
    """Build image-text matching (ITM) pairs: keep every text, swap some images for another example's.

    With probability ``negative_probability`` an example gets the image of another example of the
    batch (label 0, mismatch); otherwise it keeps its own (label 1, match). The swapped keys are the
    image inputs present in the batch (``pixel_values``/``pixel_mask``, or LXMERT-style
    ``visual_feats``/``visual_pos``/``visual_attention_mask``; override with ``image_keys``) plus
    ``image_id_key``. Examples with the same ``image_id_key`` value (several captions or questions of one
    image) are never used as each other's negatives; an example with no other image keeps its own.

    Negatives are uniform over the other examples, or with ``hard_negatives=True`` drawn by
    :func:`sample_hard_negatives` from text-to-image similarities (ALBEF / VLMo hard negative mining).
    ``similarity`` supplies them, either as

    - a callable ``similarity(batch) -> Tensor (batch, batch)``, row ``i`` = text ``i``, column ``j`` =
      image ``j`` (e.g. a frozen dual encoder such as VLMo's retrieval mode), or
    - a dataset-level tensor ``(num_texts, num_images)``, read at rows ``batch[text_index_key]`` and
      columns ``batch[image_index_key]`` (precomputed similarities).

    Args:
        negative_probability: probability that an example becomes a negative pair.
        hard_negatives: draw negatives by similarity instead of uniformly.
        similarity: the similarity source (required with ``hard_negatives=True``).
        label_key: batch key of the labels (1 = match, 0 = mismatch).
        tokenizer: pads text when examples have different lengths (optional otherwise).
        image_keys: keys to swap; default: those of :data:`IMAGE_INPUT_KEYS` present in the batch.
        image_id_key: key identifying the image of an example (used if present).
        text_index_key, image_index_key: keys indexing a dataset-level ``similarity`` tensor.
        temperature: softmax temperature of hard negative sampling.
        pad_to_multiple_of: pad text to a multiple of this length.
        seed: seeds the negatives, as ``DataCollatorForLanguageModeling`` seeds masks: ``seed`` in the main
            process, ``seed + worker id`` in each ``DataLoader`` worker; ``None``: global torch RNG.

    Example:
        >>> collator = DataCollatorForImageTextMatching(seed=0)
        >>> examples = [{"input_ids": [101, 102], "pixel_values": torch.full((3, 4, 4), float(i))} for i in range(4)]
        >>> batch = collator(examples)
        >>> batch["itm_labels"].shape
        torch.Size([4])
    """

    def __init__(
        self,
        negative_probability: float = 0.5,
        hard_negatives: bool = False,
        similarity: Callable[[dict[str, Any]], torch.Tensor] | torch.Tensor | None = None,
        label_key: str = "itm_labels",
        tokenizer: Any = None,
        image_keys: Sequence[str] | None = None,
        image_id_key: str = "image_id",
        text_index_key: str = "index",
        image_index_key: str = "index",
        temperature: float = 1.0,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
    ):
        self.negative_probability = _check_probability(negative_probability, "negative_probability")
        if not isinstance(hard_negatives, bool):
            raise TypeError(f"`hard_negatives` must be a bool, got {hard_negatives!r}.")
        if hard_negatives and similarity is None:
            raise ValueError("`hard_negatives=True` needs `similarity` (a callable or a similarity tensor).")
        if not hard_negatives and similarity is not None:
            raise ValueError("`similarity` is only used with `hard_negatives=True`; set it or drop `similarity`.")
        if similarity is not None and not (callable(similarity) or isinstance(similarity, torch.Tensor)):
            raise TypeError(f"`similarity` must be a callable or a torch.Tensor, got {type(similarity).__name__}.")
        if isinstance(similarity, torch.Tensor) and similarity.dim() != 2:
            raise ValueError(
                f"`similarity` tensor must be (num_texts, num_images), got shape {tuple(similarity.shape)}."
            )
        self.hard_negatives = hard_negatives
        self.similarity = similarity
        self.label_key = _check_key(label_key, "label_key")
        self.tokenizer = None if tokenizer is None else _resolve_tokenizer(tokenizer, require_mask_token=False)
        if image_keys is not None:
            if isinstance(image_keys, str) or not all(isinstance(key, str) for key in image_keys) or not image_keys:
                raise TypeError(f"`image_keys` must be a non-empty list of str, got {image_keys!r}.")
            image_keys = tuple(image_keys)
        self.image_keys = image_keys
        self.image_id_key = _check_key(image_id_key, "image_id_key")
        self.text_index_key = _check_key(text_index_key, "text_index_key")
        self.image_index_key = _check_key(image_index_key, "image_index_key")
        if isinstance(temperature, bool) or not isinstance(temperature, Number) or not float(temperature) > 0:
            raise ValueError(f"`temperature` must be a positive number, got {temperature!r}.")
        self.temperature = float(temperature)
        self.pad_to_multiple_of = _check_pad_to_multiple_of(pad_to_multiple_of)
        self.seed = _check_seed(seed)
        self.generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(negative_probability={self.negative_probability}, "
            f"hard_negatives={self.hard_negatives}, seed={self.seed}, label_key={self.label_key!r})"
        )

    def _batch_similarity(self, batch: dict[str, Any], batch_size: int) -> torch.Tensor:
        if isinstance(self.similarity, torch.Tensor):
            for key in (self.text_index_key, self.image_index_key):
                if key not in batch:
                    raise ValueError(
                        f"A dataset-level `similarity` tensor needs the batch key `{key}`; got keys {sorted(batch)}."
                    )
            rows = torch.as_tensor(batch[self.text_index_key]).long().cpu()
            columns = torch.as_tensor(batch[self.image_index_key]).long().cpu()
            similarity = self.similarity.detach().cpu()
            if (
                rows.max() >= similarity.shape[0]
                or columns.max() >= similarity.shape[1]
                or min(rows.min(), columns.min()) < 0
            ):
                raise ValueError(
                    f"Batch indices `{self.text_index_key}`/`{self.image_index_key}` fall outside the similarity "
                    f"matrix of shape {tuple(similarity.shape)}."
                )
            return similarity[rows][:, columns]
        similarity = self.similarity(batch)
        if not isinstance(similarity, torch.Tensor) or tuple(similarity.shape) != (batch_size, batch_size):
            raise ValueError(
                f"`similarity(batch)` must return a ({batch_size}, {batch_size}) tensor, got "
                f"{tuple(similarity.shape) if isinstance(similarity, torch.Tensor) else type(similarity).__name__}."
            )
        return similarity

    # transformers' per-worker seeding (``seed`` / ``seed + worker id``), shared with the masking collators.
    return_tensors = "pt"
    get_generator = DataCollatorForLanguageModeling.get_generator
    create_rng = DataCollatorForLanguageModeling.create_rng

    def __call__(self, features: Any) -> dict[str, Any]:
        generator = self._worker_generator()
        batch, _ = _collate(features, self.tokenizer, self.pad_to_multiple_of)
        image_keys = self.image_keys or tuple(key for key in IMAGE_INPUT_KEYS if key in batch)
        missing = [key for key in image_keys if key not in batch]
        if not image_keys or missing:
            raise ValueError(
                f"`features` must contain the image inputs {list(missing or IMAGE_INPUT_KEYS)} to build ITM "
                f"negatives; got keys {sorted(batch)}."
            )
        batch_size = len(batch[image_keys[0]])
        if batch_size < 2:
            raise ValueError(f"Image-text matching negatives need a batch of at least 2 examples, got {batch_size}.")
        same_image = (
            _same_image_matrix(batch[self.image_id_key], batch_size)
            if self.image_id_key in batch
            else torch.eye(batch_size, dtype=torch.bool)
        )
        if self.hard_negatives:
            similarity = self._batch_similarity(batch, batch_size)
        else:
            similarity = torch.zeros(batch_size, batch_size)  # uniform over the allowed examples
        partners = sample_hard_negatives(
            similarity, generator, invalid_mask=same_image.to(similarity.device), temperature=self.temperature
        ).cpu()
        is_negative = (_random_values((batch_size,), generator) < self.negative_probability) & (partners >= 0)
        source = torch.where(is_negative, partners, torch.arange(batch_size))
        swapped_keys = dict.fromkeys(image_keys + ((self.image_id_key,) if self.image_id_key in batch else ()))
        for key in swapped_keys:
            if len(batch[key]) != batch_size:
                raise ValueError(f"`{key}` has {len(batch[key])} rows, expected {batch_size}.")
            batch[key] = _gather_rows(batch[key], source, key)
        batch[self.label_key] = (~is_negative).long()
        return batch


# ----------------------------------------------------------------------------------------------
# InterBERT masked region modelling: IoU-group region masking
# ----------------------------------------------------------------------------------------------


class DataCollatorForIoURegionMasking(_PerWorkerGeneratorMixin):
    """InterBERT masked group modelling on regions (Lin et al., 2020, Sec. 3.2): mask groups of overlapping regions.

    Each real region (``visual_attention_mask == 1``) is an anchor with probability ``anchor_probability`` (10% in
    InterBERT); every real region whose IoU with an anchor exceeds ``iou_threshold`` (0.4) is masked with it, so
    the model cannot copy a masked object from an almost identical neighbouring box. Masked regions get zero
    features (``visual_feats``); the boxes stay. The batch gains ``mask_key`` (``(batch, num_regions)`` bool, the
    masked regions) and, when the examples carry region targets under ``region_labels_key``, ``label_key``:

    - class ids ``(num_regions,)`` per example -> ``(batch, num_regions)`` long, the id at masked regions and
      ``-100`` elsewhere (cross-entropy in ``InterBertForPreTraining``);
    - class distributions ``(num_regions, num_classes)`` (the detector's, as the InterBERT code uses) -> passed
      through; ``mask_key`` marks which rows count (KL divergence).

    Text is collated by ``text_collator`` when given (e.g. :class:`DataCollatorForSpanMasking` for masked segment
    modelling: both objectives in one pass), otherwise padded with ``tokenizer``. Boxes are read from the first four
    values of ``visual_pos`` (``x1, y1, x2, y2`` normalised, as every hf_vl region source writes them).

    Args:
        anchor_probability: probability that a region is an anchor.
        iou_threshold: regions with IoU strictly above it join their anchor's group.
        text_collator: a collator for the text keys (its output is extended with the region masking).
        tokenizer: pads text when no ``text_collator`` is given (optional when all texts have one length).
        skip_first_region: never mask region 0 (when the inputs carry the global image region in row 0).
        region_labels_key, label_key, mask_key: batch keys of the region targets, of the labels and of the mask.
        pad_to_multiple_of: pad text to a multiple of this length (without ``text_collator``).
        seed: seeds the masks (``seed + worker id`` in each ``DataLoader`` worker); ``None``: global torch RNG.

    Example:
        >>> collator = DataCollatorForIoURegionMasking(anchor_probability=0.5, seed=0)
        >>> boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.25], [0.0, 0.0, 0.45, 0.5, 0.225], [0.6, 0.6, 1.0, 1.0, 0.16]])
        >>> batch = collator([{"input_ids": [101, 102], "visual_feats": torch.ones(3, 4), "visual_pos": boxes}])
        >>> batch["mrm_mask"].shape
        torch.Size([1, 3])
    """

    return_tensors = "pt"
    get_generator = DataCollatorForLanguageModeling.get_generator
    create_rng = DataCollatorForLanguageModeling.create_rng

    def __init__(
        self,
        anchor_probability: float = 0.10,
        iou_threshold: float = 0.4,
        text_collator: Callable[[Any], dict[str, Any]] | None = None,
        tokenizer: Any = None,
        skip_first_region: bool = False,
        region_labels_key: str = "region_labels",
        label_key: str = "mrm_labels",
        mask_key: str = "mrm_mask",
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
    ):
        self.anchor_probability = _check_probability(anchor_probability, "anchor_probability")
        self.iou_threshold = _check_probability(iou_threshold, "iou_threshold")
        if text_collator is not None and not callable(text_collator):
            raise TypeError(f"`text_collator` must be a callable collator, got {type(text_collator).__name__}.")
        if not isinstance(skip_first_region, bool):
            raise TypeError(f"`skip_first_region` must be a bool, got {skip_first_region!r}.")
        self.text_collator = text_collator
        self.tokenizer = tokenizer
        self.skip_first_region = skip_first_region
        self.region_labels_key = _check_key(region_labels_key, "region_labels_key")
        self.label_key = _check_key(label_key, "label_key")
        self.mask_key = _check_key(mask_key, "mask_key")
        self.pad_to_multiple_of = _check_pad_to_multiple_of(pad_to_multiple_of)
        self.seed = _check_seed(seed)
        self.generator = None
        self._generator_pid = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(anchor_probability={self.anchor_probability}, iou_threshold={self.iou_threshold}, "
            f"text_collator={type(self.text_collator).__name__ if self.text_collator else None}, seed={self.seed})"
        )

    def sample_region_mask(
        self, visual_pos: torch.Tensor, visual_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked, anchors)``, both ``(batch, num_regions)`` bool, for boxes ``visual_pos (batch, num_regions, >= 4)``."""
        from ..regions.boxes import box_iou

        if not isinstance(visual_pos, torch.Tensor) or visual_pos.dim() != 3 or visual_pos.shape[-1] < 4:
            raise ValueError(
                "`visual_pos` must be a (batch, num_regions, pos_dim >= 4) tensor of normalised boxes, got "
                f"{tuple(visual_pos.shape) if isinstance(visual_pos, torch.Tensor) else type(visual_pos).__name__}."
            )
        batch_size, num_regions = visual_pos.shape[:2]
        valid = torch.ones(batch_size, num_regions, dtype=torch.bool)
        if visual_attention_mask is not None:
            valid = torch.as_tensor(visual_attention_mask).cpu().bool()
            if tuple(valid.shape) != (batch_size, num_regions):
                raise ValueError(
                    f"`visual_attention_mask` must be ({batch_size}, {num_regions}), got {tuple(valid.shape)}."
                )
        if self.skip_first_region:
            valid[:, 0] = False
        generator = self._worker_generator()
        anchors = valid & (_random_values((batch_size, num_regions), generator) < self.anchor_probability)
        boxes = visual_pos[..., :4].detach().cpu().float()
        masked = anchors.clone()
        for row in range(batch_size):
            if anchors[row].any():
                # regions overlapping any anchor of this image by more than the threshold join the group
                overlap = box_iou(boxes[row], boxes[row][anchors[row]]) > self.iou_threshold  # (N, num_anchors)
                masked[row] |= overlap.any(dim=1) & valid[row]
        return masked, anchors

    def __call__(self, features: Any) -> dict[str, Any]:
        if self.text_collator is not None:
            batch = dict(self.text_collator(features))
        else:
            batch, _ = _collate(features, self.tokenizer, self.pad_to_multiple_of)
        for key in ("visual_feats", "visual_pos"):
            if not isinstance(batch.get(key), torch.Tensor):
                raise ValueError(
                    f"`features` must contain `{key}` with one shape per example (pad regions with "
                    f"hf_vl.regions.pad_regions), got {type(batch.get(key)).__name__} for keys {sorted(batch)}."
                )
        masked, _ = self.sample_region_mask(batch["visual_pos"], batch.get("visual_attention_mask"))
        visual_feats = batch["visual_feats"]
        batch["visual_feats"] = visual_feats.masked_fill(masked.to(visual_feats.device)[..., None], 0.0)
        batch[self.mask_key] = masked
        targets = batch.pop(self.region_labels_key, None)
        if targets is not None:
            targets = torch.as_tensor(targets)
            if targets.shape[:2] != masked.shape:
                raise ValueError(
                    f"`{self.region_labels_key}` must have one target per region {tuple(masked.shape)}, got "
                    f"{tuple(targets.shape)}."
                )
            if targets.is_floating_point() and targets.dim() == 3:
                batch[self.label_key] = targets  # distributions: `mask_key` selects the rows
            else:
                batch[self.label_key] = targets.long().masked_fill(~masked, -100)
        return batch


__all__ += ["DataCollatorForIoURegionMasking"]
