"""Data utilities of hf_vl: dataset builders, VQA answer processing and pre-training collators.

- :mod:`hf_vl.data.easy_vqa`: the easy-VQA dataset built offline from the ``easy-vqa`` package.
- :mod:`hf_vl.data.vqa`: official VQA answer normalisation, soft scores, answer vocabularies.
- :mod:`hf_vl.data.collators`: masked language modelling (token, whole-word, InterBERT span) on
  transformers' ``DataCollatorForLanguageModeling`` (80/10/10, per-``DataLoader``-worker ``seed``) and
  image-text matching negatives (random or hard).
- :mod:`hf_vl.data.seq2seq`: encoder-decoder batches: T5 span corruption, captioning / answer generation, ITM as
  generation.
- :mod:`hf_vl.data.visual_tokens`: discrete visual tokens (any image tokenizer, or the k-means patch tokenizer)
  for masked patch classification with discrete codes.
"""

from .collators import (
    IMAGE_INPUT_KEYS,
    DataCollatorForImageTextMatching,
    DataCollatorForIoURegionMasking,
    DataCollatorForSpanMasking,
    DataCollatorForVLMaskedLM,
    sample_hard_negatives,
    sample_span_word_mask,
)
from .easy_vqa import (
    EASY_VQA_ANSWERS,
    EASY_VQA_NUM_IMAGES,
    EASY_VQA_NUM_QUESTIONS,
    EASY_VQA_SPLITS,
    easy_vqa_answer_vocab,
    easy_vqa_features,
    easy_vqa_id2label,
    easy_vqa_label2id,
    easy_vqa_question_type,
    load_easy_vqa,
    load_easy_vqa_captions,
)
from .seq2seq import (
    DataCollatorForVLSeq2Seq,
    DataCollatorForVLSpanCorruption,
    random_spans_noise_mask,
    sentinel_token_ids,
)
from .visual_tokens import PatchKMeansTokenizer, VisualTokenizer, discrete_mim_labels
from .vqa import (
    answers_to_soft_target,
    build_answer_vocab,
    normalize_vqa_answer,
    process_digit_article,
    process_punctuation,
    soft_target_tensor,
    vqa_soft_score,
)

__all__ = [
    "DataCollatorForVLSeq2Seq",
    "DataCollatorForVLSpanCorruption",
    "PatchKMeansTokenizer",
    "VisualTokenizer",
    "discrete_mim_labels",
    "random_spans_noise_mask",
    "sentinel_token_ids",
    "EASY_VQA_ANSWERS",
    "EASY_VQA_NUM_IMAGES",
    "EASY_VQA_NUM_QUESTIONS",
    "EASY_VQA_SPLITS",
    "IMAGE_INPUT_KEYS",
    "DataCollatorForImageTextMatching",
    "DataCollatorForIoURegionMasking",
    "DataCollatorForSpanMasking",
    "DataCollatorForVLMaskedLM",
    "answers_to_soft_target",
    "build_answer_vocab",
    "easy_vqa_answer_vocab",
    "easy_vqa_features",
    "easy_vqa_id2label",
    "easy_vqa_label2id",
    "easy_vqa_question_type",
    "load_easy_vqa",
    "load_easy_vqa_captions",
    "normalize_vqa_answer",
    "process_digit_article",
    "process_punctuation",
    "sample_hard_negatives",
    "sample_span_word_mask",
    "soft_target_tensor",
    "vqa_soft_score",
]
