"""Tests of hf_vl.data.collators: BERT masking, whole-word and span masking, ITM negatives, per-worker seeding."""

import copy

import easy_vqa
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForLanguageModeling

from hf_vl.data import (
    DataCollatorForImageTextMatching,
    DataCollatorForSpanMasking,
    DataCollatorForVLMaskedLM,
    sample_hard_negatives,
    sample_span_word_mask,
)

NUM_QUESTIONS = 2_000


@pytest.fixture(scope="module")
def questions():
    return easy_vqa.get_train_questions()[0][:NUM_QUESTIONS]


@pytest.fixture(scope="module")
def question_batch(minilm_tokenizer, questions):
    """2,000 real easy-VQA questions paired with an answer sentence, padded (about 30k maskable tokens)."""
    answers = ["the answer is a small teal rectangle"] * len(questions)
    return minilm_tokenizer(questions, answers, padding=True)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def _maskable(tokenizer, input_ids, attention_mask):
    special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))
    return ~special & attention_mask.bool()


def _word_groups(encoding, row):
    """{(sequence id, word id): [token positions]} of one row of a fast BatchEncoding."""
    groups = {}
    for position, (word, sequence) in enumerate(zip(encoding.word_ids(row), encoding.sequence_ids(row))):
        if word is not None:
            groups.setdefault((sequence, word), []).append(position)
    return groups


# ----------------------------------------------------------------------------------------------
# Token-level BERT masking
# ----------------------------------------------------------------------------------------------


def test_masking_rate_and_never_special_or_padding(minilm_tokenizer, question_batch):
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, seed=0)
    original = torch.tensor(question_batch["input_ids"])
    attention_mask = torch.tensor(question_batch["attention_mask"])
    batch = collator(copy.deepcopy(question_batch))
    labels = batch["mlm_labels"]
    maskable = _maskable(minilm_tokenizer, original, attention_mask)
    chosen = labels != -100
    assert maskable.sum() > 25_000
    assert chosen.sum() / maskable.sum() == pytest.approx(0.15, abs=0.01)
    assert not chosen[~maskable].any()  # [CLS], [SEP] and padding are never chosen
    assert torch.equal(batch["input_ids"][~maskable], original[~maskable])
    assert torch.equal(labels[chosen], original[chosen])
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    assert torch.equal(batch["attention_mask"], attention_mask)


def test_replacement_is_80_10_10(minilm_tokenizer, question_batch):
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, mlm_probability=0.5, seed=1)
    original = torch.tensor(question_batch["input_ids"])
    batch = collator(copy.deepcopy(question_batch))
    chosen = batch["mlm_labels"] != -100
    corrupted = batch["input_ids"][chosen]
    num_chosen = chosen.sum().item()
    as_mask = (corrupted == minilm_tokenizer.mask_token_id).sum().item() / num_chosen
    unchanged = (corrupted == original[chosen]).sum().item() / num_chosen
    randomized = 1.0 - as_mask - unchanged
    assert num_chosen > 15_000
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1, abs=0.01)
    assert randomized == pytest.approx(0.1, abs=0.01)
    random_tokens = corrupted[(corrupted != minilm_tokenizer.mask_token_id) & (corrupted != original[chosen])]
    assert len(set(random_tokens.tolist())) > 1_000  # drawn from the whole vocabulary (as transformers and BERT do)


def test_masking_is_transformers_data_collator(minilm_tokenizer):
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, whole_word_mask=True, seed=0)
    assert isinstance(collator, DataCollatorForLanguageModeling)
    assert isinstance(DataCollatorForSpanMasking(minilm_tokenizer), DataCollatorForLanguageModeling)
    # transformers turns whole-word masking into 100% [MASK]; hf_vl keeps the requested 80/10/10.
    assert (collator.mask_replace_prob, collator.random_replace_prob) == (0.8, 0.1)


def test_masks_are_reproducible_with_a_seeded_generator(minilm_tokenizer, questions):
    features = [minilm_tokenizer(question) for question in questions[:64]]
    first = DataCollatorForVLMaskedLM(minilm_tokenizer, seed=7)(features)
    second = DataCollatorForVLMaskedLM(minilm_tokenizer, seed=7)(features)
    third = DataCollatorForVLMaskedLM(minilm_tokenizer, seed=8)(features)
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert torch.equal(first["mlm_labels"], second["mlm_labels"])
    assert not torch.equal(first["mlm_labels"], third["mlm_labels"])
    # One collator draws new masks for each batch (its generator persists across calls).
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, seed=7)
    assert torch.equal(collator(features)["mlm_labels"], first["mlm_labels"])
    assert not torch.equal(collator(features)["mlm_labels"], first["mlm_labels"])


# ----------------------------------------------------------------------------------------------
# Seeding across DataLoader workers
# ----------------------------------------------------------------------------------------------

_LONG_TEXT = "the unaffordable housing crisis is unbelievably overwhelming for every small teal rectangle " * 3


def _masks_from_loader(collator, features, num_workers, batch_size=8):
    loader = DataLoader(features, batch_size=batch_size, num_workers=num_workers, collate_fn=collator)
    return [batch["mlm_labels"] != -100 for batch in loader]


@pytest.mark.parametrize(
    "make_collator",
    [
        lambda tokenizer, seed: DataCollatorForVLMaskedLM(tokenizer, seed=seed),
        lambda tokenizer, seed: DataCollatorForVLMaskedLM(tokenizer, whole_word_mask=True, seed=seed),
        lambda tokenizer, seed: DataCollatorForSpanMasking(tokenizer, anchor_probability=0.2, seed=seed),
    ],
    ids=["token", "whole_word", "span"],
)
def test_seeded_dataloader_workers_draw_different_reproducible_masks(minilm_tokenizer, make_collator):
    # 32 identical examples: any difference between batches comes from the random generator.
    features = [dict(minilm_tokenizer(_LONG_TEXT))] * 32
    collator = make_collator(minilm_tokenizer, 3)
    collator(features[:8])  # used in the main process first: the workers must not inherit its generator
    batches = _masks_from_loader(collator, features, num_workers=2)  # batches 0, 2: worker 0; 1, 3: worker 1
    assert len(batches) == 4 and all(batch.any() for batch in batches)
    assert not torch.equal(batches[0], batches[1])  # the two workers draw different masks
    assert not torch.equal(batches[0], batches[2])  # one worker draws new masks per batch
    assert not torch.equal(batches[1], batches[3])
    # Reproducible: a new run with the same seed gives the same masks, batch for batch.
    again = _masks_from_loader(make_collator(minilm_tokenizer, 3), features, num_workers=2)
    assert all(torch.equal(first, second) for first, second in zip(batches, again))
    other_seed = _masks_from_loader(make_collator(minilm_tokenizer, 4), features, num_workers=2)
    assert not torch.equal(batches[0], other_seed[0])
    # transformers' scheme: worker k draws what a single process seeded `seed + k` draws.
    for worker in (0, 1):
        single = make_collator(minilm_tokenizer, 3 + worker)
        expected = [single(features[:8])["mlm_labels"] != -100 for _ in range(2)]
        assert torch.equal(batches[worker], expected[0]) and torch.equal(batches[worker + 2], expected[1])


def test_seeded_itm_negatives_differ_across_workers_and_repeat():
    features = _itm_features(8) * 4

    def shown_images(seed):
        collator = DataCollatorForImageTextMatching(seed=seed)
        collator(features[:8])  # used in the main process first: the workers must not inherit its generator
        loader = DataLoader(features, batch_size=8, num_workers=2, collate_fn=collator)
        return [batch["pixel_values"][:, 0, 0, 0].long() for batch in loader]

    first, second = shown_images(5), shown_images(5)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1 pick different negatives


def test_examples_are_padded_and_other_keys_pass_through(minilm_tokenizer):
    features = []
    for index, text in enumerate(["is there a red circle?", "what color is the shape in the image?"]):
        example = dict(minilm_tokenizer(text, return_special_tokens_mask=True))
        example.update(
            pixel_values=torch.full((3, 8, 8), float(index)), question=text, answer_ids=[index] * (index + 1)
        )
        features.append(example)
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, label_key="text_labels", seed=0)
    batch = collator(features)
    lengths = [len(example["input_ids"]) for example in features]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"][1].eq(1).all()
    assert batch["question"] == ["is there a red circle?", "what color is the shape in the image?"]
    assert batch["answer_ids"] == [[0], [1, 1]]  # ragged lists stay lists
    assert "special_tokens_mask" not in batch and "mlm_labels" not in batch
    assert batch["text_labels"].shape == batch["input_ids"].shape
    padded = DataCollatorForVLMaskedLM(minilm_tokenizer, pad_to_multiple_of=16)(features)
    assert padded["input_ids"].shape[1] == 16


# ----------------------------------------------------------------------------------------------
# Whole-word masking
# ----------------------------------------------------------------------------------------------


def test_whole_word_masking_wordpiece(minilm_tokenizer, questions):
    texts = ["the unaffordable housing crisis is unbelievably overwhelming"] * 400 + list(questions[:400])
    encoding = minilm_tokenizer(texts, padding=True)
    # Word boundaries from the fast tokenizer's word_ids() (BatchEncoding) and from "##" (examples).
    from_encoding = DataCollatorForVLMaskedLM(
        minilm_tokenizer, mlm_probability=0.3, whole_word_mask=True, seed=0
    )(copy.deepcopy(encoding))
    from_strings = DataCollatorForVLMaskedLM(
        minilm_tokenizer, mlm_probability=0.3, whole_word_mask=True, seed=0
    )([{key: encoding[key][row] for key in encoding} for row in range(len(texts))])
    assert torch.equal(from_encoding["mlm_labels"], from_strings["mlm_labels"])
    chosen_words = total_words = multi_token_words = 0
    for row in range(len(texts)):
        chosen = (from_encoding["mlm_labels"][row] != -100).tolist()
        for positions in _word_groups(encoding, row).values():
            states = {chosen[position] for position in positions}
            assert len(states) == 1, f"word {positions} of row {row} partly masked"
            chosen_words += states.pop()
            total_words += 1
            multi_token_words += len(positions) > 1
    assert multi_token_words > 750
    assert chosen_words / total_words == pytest.approx(0.3, abs=0.02)


def test_whole_word_masking_byte_level_bpe(tiny_roberta_tokenizer):
    texts = ["the cat sat on the unhappy mat."] * 600
    encoding = tiny_roberta_tokenizer(texts)
    tokens = tiny_roberta_tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])
    assert tokens == ["<s>", "the", "Ġcat", "Ġsat", "Ġon", "Ġ", "the", "Ġun", "happy", "Ġmat", ".", "</s>"]
    collator = DataCollatorForVLMaskedLM(
        tiny_roberta_tokenizer, mlm_probability=0.4, whole_word_mask=True, seed=2
    )
    assert collator.subword_scheme == "byte_bpe"
    batch = collator(
        [
            {"input_ids": ids, "attention_mask": mask}
            for ids, mask in zip(encoding["input_ids"], encoding["attention_mask"])
        ]
    )
    chosen = batch["mlm_labels"] != -100
    assert torch.equal(chosen[:, 5], chosen[:, 6])  # "Ġ" + "the"
    assert torch.equal(chosen[:, 7], chosen[:, 8])  # "Ġun" + "happy"
    assert torch.equal(chosen[:, 9], chosen[:, 10])  # "Ġmat" + "." (token strings glue punctuation)
    assert not chosen[:, [0, 11]].any()
    assert chosen[:, 1].float().mean().item() == pytest.approx(0.4, abs=0.07)
    assert not torch.equal(chosen[:, 1], chosen[:, 2])  # different words are masked independently
    # word_ids() of the fast tokenizer split "." from "mat".
    from_encoding = DataCollatorForVLMaskedLM(
        tiny_roberta_tokenizer, mlm_probability=0.4, whole_word_mask=True, seed=2
    )(tiny_roberta_tokenizer(texts))
    chosen = from_encoding["mlm_labels"] != -100
    assert torch.equal(chosen[:, 7], chosen[:, 8]) and not torch.equal(chosen[:, 9], chosen[:, 10])


def test_word_ids_key_in_examples_is_used_and_dropped(minilm_tokenizer):
    encoding = minilm_tokenizer(["a bc", "de"])
    features = []
    for row in range(2):
        ids = encoding["input_ids"][row]
        # Declare every token of the text to be one word.
        word_ids = [None] + [0] * (len(ids) - 2) + [None]
        features.append({"input_ids": ids, "attention_mask": encoding["attention_mask"][row], "word_ids": word_ids})
    collator = DataCollatorForVLMaskedLM(
        minilm_tokenizer, mlm_probability=0.5, whole_word_mask=True, seed=0
    )
    for _ in range(20):
        batch = collator(features)
        assert "word_ids" not in batch
        chosen = batch["mlm_labels"][0] != -100
        assert chosen[1:-1].all() or not chosen.any()


def test_whole_word_masking_keeps_80_10_10(minilm_tokenizer, question_batch):
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, mlm_probability=0.5, whole_word_mask=True, seed=11)
    original = torch.tensor(question_batch["input_ids"])
    batch = collator(copy.deepcopy(question_batch))
    chosen = batch["mlm_labels"] != -100
    corrupted, targets = batch["input_ids"][chosen], original[chosen]
    assert chosen.sum() > 15_000
    assert (corrupted == minilm_tokenizer.mask_token_id).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert (corrupted == targets).float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(batch["mlm_labels"][chosen], targets)


def test_whole_word_masking_with_offset_mapping_follows_transformers(minilm_tokenizer):
    # Examples of different lengths with offsets: transformers' own collator cannot pad `offset_mapping`.
    texts = ["an unaffordable teal shape?", "is the unbelievably overwhelming circle red?", "no"] * 300
    features = [dict(minilm_tokenizer(text, return_offsets_mapping=True)) for text in texts]
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer, mlm_probability=0.4, whole_word_mask=True, seed=1)
    batch = collator(features)
    assert "offset_mapping" not in batch
    chosen = batch["mlm_labels"] != -100
    chosen_words = total_words = 0
    for row, example in enumerate(features):
        # transformers' rule: a word is a run of tokens whose character spans touch ("shape?" is one word).
        words, previous_end = [], None
        for position, (start, end) in enumerate(example["offset_mapping"]):
            if start == end:  # [CLS] / [SEP]
                previous_end = None
                continue
            if start != previous_end:
                words.append([])
            words[-1].append(position)
            previous_end = end
        for positions in words:
            states = set(chosen[row, positions].tolist())
            assert len(states) == 1, f"word {positions} of row {row} partly masked"
            chosen_words += states.pop()
            total_words += 1
        assert not chosen[row, len(example["input_ids"]) :].any()  # padding
    assert texts[0].endswith("shape?") and len(minilm_tokenizer.tokenize("unaffordable")) > 1
    assert chosen_words / total_words == pytest.approx(0.4, abs=0.03)


# ----------------------------------------------------------------------------------------------
# InterBERT span masking
# ----------------------------------------------------------------------------------------------


def test_span_sampling_statistics_and_lengths():
    word_segments = torch.zeros(4_000, 30, dtype=torch.long)
    word_segments[:, 20:] = -1  # 20 words per row
    word_mask, anchors, span_lengths = sample_span_word_mask(word_segments, generator=_generator(3))
    assert anchors.float()[:, :20].mean().item() == pytest.approx(0.10, abs=0.005)
    assert not word_mask[:, 20:].any() and not anchors[:, 20:].any()
    assert ((span_lengths[anchors] >= 1) & (span_lengths[anchors] <= 3)).all()
    assert (span_lengths[~anchors] == 0).all()
    # Away from the end of the text the extension 0, 1, 2 is uniform.
    inner = span_lengths[:, :15][anchors[:, :15]]
    for length in (1, 2, 3):
        assert (inner == length).float().mean().item() == pytest.approx(1 / 3, abs=0.02)
    # The masked words are exactly the union of the spans.
    union = torch.zeros_like(word_mask)
    for row, start in anchors.nonzero().tolist():
        union[row, start : start + span_lengths[row, start]] = True
    assert torch.equal(union, word_mask)


def test_spans_stop_at_segment_boundaries():
    # Two segments of 3 words: [0, 0, 0, 1, 1, 1]; a span starting at word 2 must stop there.
    word_segments = torch.tensor([[0, 0, 0, 1, 1, 1]]).repeat(3_000, 1)
    word_mask, anchors, span_lengths = sample_span_word_mask(
        word_segments, anchor_probability=0.3, generator=_generator(4)
    )
    assert (span_lengths[:, 2] <= 1).all() and (span_lengths[:, 5] <= 1).all()
    assert (span_lengths[:, 1] <= 2).all() and (span_lengths[:, 4] <= 2).all()
    assert word_mask[:, 3][~anchors[:, 3]].sum() == 0  # word 3 is only masked when it is an anchor


def test_span_masking_collator_masks_whole_word_spans(minilm_tokenizer, question_batch):
    collator = DataCollatorForSpanMasking(minilm_tokenizer, seed=5)
    original = torch.tensor(question_batch["input_ids"])
    batch = collator(copy.deepcopy(question_batch))
    chosen = batch["mlm_labels"] != -100
    maskable = _maskable(minilm_tokenizer, original, torch.tensor(question_batch["attention_mask"]))
    assert not chosen[~maskable].any()
    assert torch.equal(batch["mlm_labels"][chosen], original[chosen])
    word_chosen = total_words = 0
    for row in range(0, len(original), 4):
        row_chosen = chosen[row].tolist()
        groups = _word_groups(question_batch, row)
        for positions in groups.values():
            states = {row_chosen[position] for position in positions}
            assert len(states) == 1
            word_chosen += states.pop()
            total_words += 1
    # 10% anchors x 2 words per span, minus overlaps and spans cut at the end of a segment.
    assert 0.13 < word_chosen / total_words < 0.20
    masked = batch["input_ids"][chosen]
    assert (masked == minilm_tokenizer.mask_token_id).float().mean().item() == pytest.approx(0.8, abs=0.02)


# ----------------------------------------------------------------------------------------------
# Image-text matching
# ----------------------------------------------------------------------------------------------


def _itm_features(batch_size, image_ids=None):
    features = []
    for index in range(batch_size):
        example = {
            "input_ids": [101, 2000 + index, 102],
            "attention_mask": [1, 1, 1],
            "pixel_values": torch.full((3, 4, 4), float(index)),
        }
        if image_ids is not None:
            example["image_id"] = image_ids[index]
        features.append(example)
    return features


def test_itm_labels_match_the_swapped_images():
    collator = DataCollatorForImageTextMatching(seed=0)
    negatives = total = 0
    for _ in range(60):
        batch = collator(_itm_features(8))
        shown_image = batch["pixel_values"][:, 0, 0, 0].long()
        own_image = torch.arange(8)
        labels = batch["itm_labels"]
        assert labels.dtype == torch.long
        assert torch.equal(labels == 1, shown_image == own_image)
        assert batch["pixel_values"].shape == (8, 3, 4, 4)
        negatives += (labels == 0).sum().item()
        total += 8
    assert negatives / total == pytest.approx(0.5, abs=0.06)


def test_itm_never_pairs_examples_of_the_same_image():
    image_ids = [0, 0, 0, 1, 1, 2, 2, 2]
    collator = DataCollatorForImageTextMatching(negative_probability=1.0, seed=1)
    for _ in range(30):
        batch = collator(_itm_features(8, image_ids))
        shown = batch["pixel_values"][:, 0, 0, 0].long()
        original_image_ids = torch.tensor(image_ids)
        assert (batch["itm_labels"] == 0).all()
        assert (original_image_ids[shown] != original_image_ids).all()
        assert torch.equal(batch["image_id"], original_image_ids[shown])  # image ids travel with the image
    all_same = collator(_itm_features(4, [7, 7, 7, 7]))
    assert (all_same["itm_labels"] == 1).all()  # no other image to swap in


def test_itm_pads_text_with_a_tokenizer_and_honours_image_keys(minilm_tokenizer):
    features = [dict(minilm_tokenizer(text)) for text in ["a red circle", "is there a blue shape in the image?", "no"]]
    for index, example in enumerate(features):
        example.update(image_embeds=torch.full((2, 8), float(index)), image_id=index)
    collator = DataCollatorForImageTextMatching(
        negative_probability=1.0,
        tokenizer=minilm_tokenizer,
        image_keys=["image_embeds", "image_id"],
        seed=0,
    )
    batch = collator(features)
    assert batch["input_ids"].shape == (3, max(len(example["input_ids"]) for example in features))
    shown = batch["image_embeds"][:, 0, 0].long()
    assert (shown != torch.arange(3)).all() and (batch["itm_labels"] == 0).all()
    assert torch.equal(batch["image_id"], shown)  # swapped once, together with its image


def test_itm_swaps_region_features_together():
    features = []
    for index in range(6):
        features.append(
            {
                "input_ids": [101, 102],
                "visual_feats": torch.full((5, 16), float(index)),
                "visual_pos": torch.full((5, 4), float(index) / 10),
                "visual_attention_mask": torch.tensor([1] * (index % 5 + 1) + [0] * (4 - index % 5)),
            }
        )
    batch = DataCollatorForImageTextMatching(negative_probability=0.5, seed=2)(features)
    shown = batch["visual_feats"][:, 0, 0].long()
    assert torch.allclose(batch["visual_pos"][:, 0, 0], shown.float() / 10)
    assert torch.equal(batch["visual_attention_mask"].sum(dim=1), shown % 5 + 1)
    assert torch.equal(batch["itm_labels"] == 1, shown == torch.arange(6))


def test_itm_hard_negatives_follow_the_similarity():
    # Text i is most similar to image (i + 1) % 6: hard negative mining must pick it.
    def similarity(batch):
        size = batch["input_ids"].shape[0]
        scores = torch.zeros(size, size)
        scores[torch.arange(size), (torch.arange(size) + 1) % size] = 50.0
        scores += torch.eye(size) * 100.0  # the positive pair, always excluded
        return scores

    collator = DataCollatorForImageTextMatching(
        negative_probability=1.0, hard_negatives=True, similarity=similarity, seed=3
    )
    batch = collator(_itm_features(6))
    assert torch.equal(batch["pixel_values"][:, 0, 0, 0].long(), (torch.arange(6) + 1) % 6)
    assert (batch["itm_labels"] == 0).all()

    # A dataset-level (num_texts, num_images) matrix read at the batch's indices.
    dataset_similarity = torch.zeros(10, 10)
    dataset_similarity[3, 8] = dataset_similarity[8, 5] = dataset_similarity[5, 3] = 50.0
    features = _itm_features(3)
    for example, index in zip(features, (3, 8, 5)):
        example["index"] = index
    collator = DataCollatorForImageTextMatching(
        negative_probability=1.0, hard_negatives=True, similarity=dataset_similarity, seed=4
    )
    batch = collator(features)
    assert batch["pixel_values"][:, 0, 0, 0].long().tolist() == [1, 2, 0]


def test_sample_hard_negatives_never_picks_self_and_follows_softmax():
    similarity = torch.randn(4, 4, generator=_generator(5)) * 2
    # 1,000 independent copies of the 4x4 problem in one call: a block-diagonal matrix, -inf elsewhere.
    copies = 1_000
    blocks = torch.full((4 * copies, 4 * copies), float("-inf"))
    for copy_index in range(copies):
        blocks[4 * copy_index : 4 * copy_index + 4, 4 * copy_index : 4 * copy_index + 4] = similarity
    draws = sample_hard_negatives(blocks, generator=_generator(6))
    assert (draws != torch.arange(4 * copies)).all()
    offsets = draws.view(copies, 4) - 4 * torch.arange(copies)[:, None]  # index inside each block
    assert ((offsets >= 0) & (offsets < 4)).all()
    expected = torch.softmax(similarity.masked_fill(torch.eye(4, dtype=torch.bool), float("-inf")), dim=1)
    frequencies = torch.stack([torch.bincount(offsets[:, row], minlength=4).float() / copies for row in range(4)])
    assert torch.allclose(frequencies, expected, atol=0.05)


def test_sample_hard_negatives_respects_invalid_mask_and_flags_empty_rows():
    similarity = torch.zeros(4, 4)
    invalid = torch.tensor(
        [[False, True, True, False], [True, False, True, True], [False, False, False, False], [True, True, True, False]]
    )
    negatives = sample_hard_negatives(similarity, generator=_generator(), invalid_mask=invalid)
    assert negatives[0].item() == 3 and negatives[1].item() == -1 and negatives[3].item() == -1
    assert negatives[2].item() in (0, 1, 3)


@pytest.mark.parametrize(
    ("similarity", "kwargs", "error", "argument"),
    [
        (torch.zeros(3, 4), {}, ValueError, "similarity"),
        (torch.zeros(1, 1), {}, ValueError, "similarity"),
        (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), {}, ValueError, "NaN"),
        ([[0.0, 1.0], [1.0, 0.0]], {}, TypeError, "similarity"),
        (torch.zeros(2, 2), {"temperature": 0}, ValueError, "temperature"),
        (torch.zeros(2, 2), {"invalid_mask": torch.zeros(3, 3, dtype=torch.bool)}, ValueError, "invalid_mask"),
        (torch.zeros(2, 2), {"generator": 0}, TypeError, "generator"),
    ],
)
def test_sample_hard_negatives_errors(similarity, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        sample_hard_negatives(similarity, **kwargs)


# ----------------------------------------------------------------------------------------------
# Argument and input errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"mlm_probability": 1.5}, ValueError, "mlm_probability"),
        ({"mlm_probability": -0.1}, ValueError, "mlm_probability"),
        ({"mask_replace_prob": 0.95, "random_replace_prob": 0.1}, ValueError, "random_replace_prob"),
        ({"whole_word_mask": "yes"}, TypeError, "whole_word_mask"),
        ({"label_key": ""}, TypeError, "label_key"),
        ({"pad_to_multiple_of": 0}, ValueError, "pad_to_multiple_of"),
        ({"seed": -1}, TypeError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"generator": torch.Generator()}, TypeError, "generator"),  # replaced by `seed` (per-worker generators)
    ],
)
def test_masked_lm_argument_errors(minilm_tokenizer, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        DataCollatorForVLMaskedLM(minilm_tokenizer, **kwargs)


def test_span_masking_argument_errors(minilm_tokenizer):
    with pytest.raises(TypeError, match="mlm_probability"):
        DataCollatorForSpanMasking(minilm_tokenizer, mlm_probability=0.3)  # spans set the rate, not tokens
    with pytest.raises(ValueError, match="anchor_probability"):
        DataCollatorForSpanMasking(minilm_tokenizer, anchor_probability=2.0)
    with pytest.raises(ValueError, match="max_span_extension"):
        DataCollatorForSpanMasking(minilm_tokenizer, max_span_extension=-1)


def test_tokenizer_errors(minilm_tokenizer):
    with pytest.raises(TypeError, match="tokenizer"):
        DataCollatorForVLMaskedLM("bert-base-uncased")
    no_mask = copy.deepcopy(minilm_tokenizer)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="mask token"):
        DataCollatorForSpanMasking(no_mask)


def test_input_errors(minilm_tokenizer):
    collator = DataCollatorForVLMaskedLM(minilm_tokenizer)
    with pytest.raises(ValueError, match="return_tensors"):
        collator([{"input_ids": [101, 102]}], return_tensors="np")
    with pytest.raises(ValueError, match="offset_mapping"):
        collator({"input_ids": torch.tensor([[101, 5, 102]]), "offset_mapping": torch.zeros(1, 2, 2)})
    with pytest.raises(ValueError, match="input_ids"):
        collator([{"pixel_values": torch.zeros(3)}, {"pixel_values": torch.zeros(3)}])
    with pytest.raises(ValueError, match="empty"):
        collator([])
    with pytest.raises(TypeError, match="features"):
        collator("is there a circle?")
    with pytest.raises(ValueError, match="same keys"):
        collator([{"input_ids": [101, 102]}, {"input_ids": [101, 102], "extra": 1}])
    with pytest.raises(ValueError, match="pixel_values"):
        collator([
            {"input_ids": [101, 102], "pixel_values": torch.zeros(3, 4, 4)},
            {"input_ids": [101, 102], "pixel_values": torch.zeros(3, 5, 5)},
        ])  # fmt: skip


def test_itm_errors():
    with pytest.raises(ValueError, match="negative_probability"):
        DataCollatorForImageTextMatching(negative_probability=1.5)
    with pytest.raises(TypeError, match="seed"):
        DataCollatorForImageTextMatching(seed="0")
    with pytest.raises(ValueError, match="similarity"):
        DataCollatorForImageTextMatching(hard_negatives=True)
    with pytest.raises(ValueError, match="hard_negatives"):
        DataCollatorForImageTextMatching(similarity=torch.zeros(2, 2))
    collator = DataCollatorForImageTextMatching()
    with pytest.raises(ValueError, match="pixel_values"):
        collator([{"input_ids": [101, 102]}, {"input_ids": [101, 102]}])
    with pytest.raises(ValueError, match="at least 2"):
        collator(_itm_features(1))
    ragged = _itm_features(2)
    ragged[1]["input_ids"] = [101, 5, 6, 102]
    ragged[1]["attention_mask"] = [1, 1, 1, 1]
    with pytest.raises(ValueError, match="tokenizer"):
        collator(ragged)
    bad_similarity = DataCollatorForImageTextMatching(hard_negatives=True, similarity=lambda batch: torch.zeros(3, 3))
    with pytest.raises(ValueError, match="similarity"):
        bad_similarity(_itm_features(2))
