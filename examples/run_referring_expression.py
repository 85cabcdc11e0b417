#!/usr/bin/env python
"""Referring expression comprehension with Switch-BERT and the HF Trainer, offline, on data where boxes are known.

    python examples/run_referring_expression.py --output_dir runs/switch-bert-refexp
    python examples/run_referring_expression.py --model_name_or_path runs/switch-bert-refexp --do_eval \\
        --output_dir runs/refexp-eval

Data ("easy-RefExp", built from easy-VQA's caption set, `hf_vl.data.load_easy_vqa_captions`): each example is a
2x2 mosaic of four 64x64 easy-VQA images on a 128x128 canvas and the expression "the <colour> <shape>" naming one
of them. The referred object is unique: one distractor shares its colour (another shape), one its shape (another
colour), one is any other caption, so both words matter; a mosaic where the description would match two objects is
skipped (and counted). Test mosaics use easy-VQA's held-out test images only.

- Ground truth: the bounding box of the referred shape's foreground pixels (`GridFeatureExtractor.foreground_mask`
  >= 0.5: colour distance to the image's background), in canvas pixels.
- Candidates ("proposals", shuffled): per object its foreground box and `--jitters_per_object` jittered copies
  (scaled and shifted, so their IoU with the object spreads over ~0.1-0.9), plus the four 64x64 tiles. Some
  candidates of the referred object overlap it with IoU >= 0.5, others < 0.5.
- Region features: `hf_vl.regions.BoxFeatureExtractor`, each box cropped, framed by its surrounding background,
  resized to 32x32 and described by the weight-free pixel descriptor (colour, foreground fraction, edges,
  silhouette); `visual_pos` = the normalised box. Targets: the IoU of every candidate with the ground truth.
- Model: `SwitchBertForReferringExpression.from_bert_pretrained` from all-MiniLM-L6-v2's embeddings and first
  `--text_num_layers` layers (width 384); a region's score regresses its IoU (BCE). A prediction is correct when
  the best-scoring candidate has IoU >= 0.5 with the truth (accuracy@0.5).

Reported in `--output_dir/all_results.json`: `eval_accuracy_at_0.5`, `eval_mean_iou` of the chosen box, the
`eval_chance_accuracy` (a random candidate) and `eval_oracle_accuracy` (the best candidate), and the wall time. The
output folder (model, `RegionProcessor`, `box_feature_extractor/`) loads into
`pipeline("vl-referring-expression", model=output_dir)`.
"""

import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import hf_vl
from hf_vl import AutoModelForReferringExpression
from hf_vl.data import load_easy_vqa_captions
from hf_vl.hub import save_for_hub
from hf_vl.regions import (
    BOX_FEATURE_EXTRACTOR_SUBFOLDER,
    BoxFeatureExtractor,
    GridFeatureExtractor,
    RegionProcessor,
    box_iou,
)
from hf_vl.training import local_pretrained_path
from hf_vl.training.switch_bert_callbacks import GumbelTemperatureCallback

logger = logging.getLogger("run_referring_expression")

TILE = 64  # easy-VQA images are 64x64
GRID = 2  # 2x2 mosaics: a 128x128 canvas


# The default recipe (TrainingArguments defaults this script changes; any flag overrides them): ~2.5 min on 2 CPU
# cores, 3,000 train mosaics x 3 epochs.
RECIPE = {"per_device_train_batch_size": 32, "per_device_eval_batch_size": 64, "learning_rate": 2e-4,
          "warmup_steps": 30, "num_train_epochs": 3, "logging_steps": 20, "report_to": "none", "save_strategy": "no",
          "dataloader_num_workers": 0}  # fmt: skip


@dataclass
class ReferringArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained referring-expression folder (default: build a new model)."}
    )
    text_model_name_or_path: str = field(default="all-MiniLM-L6-v2", metadata={"help": "BERT-layout text encoder."})
    text_num_layers: int = field(default=2, metadata={"help": "Switch-BERT layers, from the first MiniLM layers."})
    dropout: float = field(default=0.1)
    num_train_mosaics: int = field(default=3000)
    num_eval_mosaics: int = field(default=500)
    jitters_per_object: int = field(default=2, metadata={"help": "Jittered proposals per object (+ its own box)."})
    max_text_length: int = field(default=16)
    mosaic_seed: int = field(default=0, metadata={"help": "Seed of the mosaics and proposals."})


# --- data -------------------------------------------------------------------------------------------------------------


def foreground_boxes(images, extractor: GridFeatureExtractor) -> np.ndarray:
    """`(K, 4)` pixel boxes `x1, y1, x2, y2` of the foreground (weight >= 0.5) of each 64x64 image; NaN rows when an
    image has no foreground."""
    pixels = torch.stack([torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
                          for image in images])  # fmt: skip  (K, 3, 64, 64)
    mask = extractor.foreground_mask(pixels)[:, 0] >= 0.5  # (K, 64, 64)
    boxes = np.full((len(images), 4), np.nan)
    for index, image_mask in enumerate(mask.numpy()):
        rows, cols = np.flatnonzero(image_mask.any(1)), np.flatnonzero(image_mask.any(0))
        if len(rows):
            boxes[index] = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    return boxes


def jittered_boxes(box: np.ndarray, count: int, rng: np.random.Generator, canvas: int) -> list[np.ndarray]:
    """`count` copies of `box`, each side scaled by 0.6-1.5 and the centre shifted by up to half the box size."""
    centre, size = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
    jittered = []
    for _ in range(count):
        new_size = size * rng.uniform(0.6, 1.5, size=2)
        new_centre = centre + size * rng.uniform(-0.5, 0.5, size=2)
        corner = np.clip(np.concatenate([new_centre - new_size / 2, new_centre + new_size / 2]), 0, canvas)
        corner[2:] = np.maximum(corner[2:], corner[:2] + 2)  # at least 2 pixels wide and high
        jittered.append(np.clip(corner, 0, canvas))
    return jittered


def build_mosaics(split, num_mosaics: int, jitters: int, rng: np.random.Generator):
    """Mosaics of one caption split: `(canvases, expressions, candidate_boxes (M, C, 4), ious (M, C), skipped)`."""
    images = [image.convert("RGB") for image in split["image"]]
    colours, shapes = np.asarray(split["colour"]), np.asarray(split["shape"])
    boxes = foreground_boxes(images, GridFeatureExtractor())
    usable = np.flatnonzero(~np.isnan(boxes).any(1))
    canvases, expressions, candidates, ious, skipped = [], [], [], [], 0
    while len(canvases) < num_mosaics:
        target = rng.choice(usable)
        colour, shape = colours[target], shapes[target]
        pools = (
            usable[(colours[usable] == colour) & (shapes[usable] != shape)],  # same colour, another shape
            usable[(colours[usable] != colour) & (shapes[usable] == shape)],  # same shape, another colour
            usable[(colours[usable] != colour) | (shapes[usable] != shape)],  # any other description
        )
        members = [target] + [rng.choice(pool if len(pool) else pools[2]) for pool in pools]
        if sum(colours[m] == colour and shapes[m] == shape for m in members) != 1:
            skipped += 1  # ambiguous: the expression would describe two objects
            continue
        order = rng.permutation(GRID * GRID)  # tile of each member
        canvas = np.zeros((GRID * TILE, GRID * TILE, 3), dtype=np.uint8)
        proposals, truth = [], None
        for member, tile in zip(members, order):
            top, left = TILE * (tile // GRID), TILE * (tile % GRID)
            canvas[top : top + TILE, left : left + TILE] = np.asarray(images[member])
            object_box = boxes[member] + [left, top, left, top]
            truth = object_box if member == target else truth
            proposals += [object_box] + jittered_boxes(object_box, jitters, rng, GRID * TILE)
            proposals.append(np.array([left, top, left + TILE, top + TILE], dtype=np.float64))
        proposals = np.stack(proposals)[rng.permutation(len(proposals))]
        canvases.append(canvas)
        expressions.append(f"the {colour} {shape}")
        candidates.append(proposals)
        ious.append(box_iou(proposals, truth[None])[:, 0])
    return canvases, expressions, np.stack(candidates), np.stack(ious).astype(np.float32), skipped


class ReferringExamples(torch.utils.data.Dataset):
    """Mosaics with their candidate regions' features: `{"expression", "visual_feats", "visual_pos", "labels"}`."""

    def __init__(self, expressions, visual_feats, visual_pos, ious, boxes, canvases):
        self.expressions, self.visual_feats, self.visual_pos = expressions, visual_feats, visual_pos
        self.ious, self.boxes, self.canvases = ious, boxes, canvases

    def __len__(self):
        return len(self.expressions)

    def __getitem__(self, index):
        return {"expression": self.expressions[index], "visual_feats": self.visual_feats[index],
                "visual_pos": self.visual_pos[index], "labels": self.ious[index]}  # fmt: skip


def build_examples(split, num_mosaics, jitters, extractor: BoxFeatureExtractor, rng, batch_size=64):
    canvases, expressions, boxes, ious, skipped = build_mosaics(split, num_mosaics, jitters, rng)
    feats, pos = [], []
    for start in range(0, len(canvases), batch_size):
        regions = extractor(canvases[start : start + batch_size], list(boxes[start : start + batch_size]),
                            return_tensors="np")  # fmt: skip
        feats.append(regions["visual_feats"])
        pos.append(regions["visual_pos"])
    examples = ReferringExamples(expressions, np.concatenate(feats), np.concatenate(pos), ious, boxes, canvases)
    return examples, skipped


class ReferringCollator:
    """Examples -> model inputs: the `RegionProcessor` tokenizes the expressions and checks the regions; `labels`
    are the candidates' IoUs with the referred box."""

    def __init__(self, processor: RegionProcessor, max_length: int):
        self.processor, self.max_length = processor, max_length

    def __call__(self, examples):
        batch = self.processor(
            text=[example["expression"] for example in examples],
            visual_feats=np.stack([example["visual_feats"] for example in examples]),
            visual_pos=np.stack([example["visual_pos"] for example in examples]),
            padding="longest", truncation=True, max_length=self.max_length,
        )  # fmt: skip
        batch["labels"] = torch.from_numpy(np.stack([example["labels"] for example in examples])).float()
        return batch


def compute_metrics(eval_pred):
    """accuracy@0.5 (the best-scoring candidate has IoU >= 0.5 with the truth) and the mean IoU of that candidate."""
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    logits, ious = torch.as_tensor(logits), torch.as_tensor(eval_pred.label_ids)
    chosen = ious.gather(-1, logits.argmax(-1, keepdim=True))
    return {"accuracy_at_0.5": hf_vl.SwitchBertForReferringExpression.accuracy(logits, ious),
            "mean_iou": float(chosen.mean())}  # fmt: skip


def baselines(ious: np.ndarray) -> dict[str, float]:
    """Chance (a uniformly random candidate) and oracle (the best candidate) accuracy@0.5."""
    hits = ious >= 0.5
    return {"chance_accuracy": float(hits.mean(1).mean()), "oracle_accuracy": float(hits.any(1).mean()),
            "num_candidates": int(ious.shape[1])}  # fmt: skip


# --- model ------------------------------------------------------------------------------------------------------------


def build_model(args: ReferringArguments, extractor: BoxFeatureExtractor):
    """Switch-BERT from MiniLM's embeddings and first layers + a `RegionProcessor` for precomputed box regions."""
    text_path = local_pretrained_path(args.text_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(text_path)
    bert = AutoModel.from_pretrained(text_path, add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[: args.text_num_layers]
    bert.config.num_hidden_layers = args.text_num_layers
    model = hf_vl.SwitchBertForReferringExpression.from_bert_pretrained(
        bert, visual_feat_dim=extractor.feature_dim, visual_pos_dim=extractor.pos_dim,
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout, classifier_dropout_prob=0.0,
    )  # fmt: skip
    processor = RegionProcessor(tokenizer, feature_extractor=None, feat_dim=extractor.feature_dim,
                                pos_dim=extractor.pos_dim)  # fmt: skip
    return model, processor


def load_model(path: str):
    model = AutoModelForReferringExpression.from_pretrained(path)
    return model, RegionProcessor.from_pretrained(path), BoxFeatureExtractor.from_pretrained(path)


def save_folder(model, processor, extractor, output_dir: str) -> None:
    """Model (safetensors, with its code: `save_for_hub`), `RegionProcessor` and `box_feature_extractor/`: what the
    pipeline loads."""
    save_for_hub(model, output_dir)
    processor.save_pretrained(output_dir)
    extractor.save_pretrained(os.path.join(output_dir, BOX_FEATURE_EXTRACTOR_SUBFOLDER))


def main():
    parser = HfArgumentParser((ReferringArguments, TrainingArguments))
    parser.set_defaults(**RECIPE)
    args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    if not (training_args.do_train or training_args.do_eval):
        training_args.do_train = training_args.do_eval = True
    training_args.remove_unused_columns = False  # the collator reads the raw expression / region columns
    set_seed(training_args.seed)
    start = time.time()
    if args.model_name_or_path:
        model, processor, extractor = load_model(args.model_name_or_path)
    else:
        extractor = BoxFeatureExtractor()
        model, processor = build_model(args, extractor)
    rng = np.random.default_rng(args.mosaic_seed)
    captions = load_easy_vqa_captions()
    train, train_skipped = build_examples(captions["train"], args.num_train_mosaics, args.jitters_per_object,
                                          extractor, rng)  # fmt: skip
    test, test_skipped = build_examples(captions["test"], args.num_eval_mosaics, args.jitters_per_object,
                                        extractor, rng)  # fmt: skip
    print(f"easy-RefExp: {len(train)} train / {len(test)} test mosaics, {test.ious.shape[1]} candidates each "
          f"({train_skipped + test_skipped} ambiguous mosaics skipped); data + features {time.time() - start:.0f} s")
    callbacks = [GumbelTemperatureCallback()] if model.config.use_switch_attention else []
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=test,
                      data_collator=ReferringCollator(processor, args.max_text_length), compute_metrics=compute_metrics,
                      callbacks=callbacks)  # fmt: skip
    if training_args.do_train:
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
        trainer.save_metrics("train", {**result.metrics, "train_samples": len(train)})
        trainer.save_state()
        if trainer.is_world_process_zero():
            save_folder(trainer.model, processor, extractor, training_args.output_dir)
    metrics = {}
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), **{f"eval_{key}": value for key, value in baselines(test.ious).items()},
                   "eval_samples": len(test), "eval_skipped_ambiguous": test_skipped,
                   "wall_time_s": time.time() - start}  # fmt: skip
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)  # also merged into all_results.json
        if trainer.is_world_process_zero():
            print(f"\nTest accuracy@0.5 ({len(test)} mosaics, {test.ious.shape[1]} candidates): "
                  f"{metrics['eval_accuracy_at_0.5']:.4f} (chance {metrics['eval_chance_accuracy']:.4f}, oracle "
                  f"{metrics['eval_oracle_accuracy']:.4f}); mean IoU {metrics['eval_mean_iou']:.4f}; wall time "
                  f"{metrics['wall_time_s'] / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
