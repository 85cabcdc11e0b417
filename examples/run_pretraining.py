#!/usr/bin/env python
"""Vision-language pre-training of the region models with the HF Trainer, on an offline caption set, then zero-shot
image-text retrieval with the pre-trained matching head on held-out images.

    python examples/run_pretraining.py --model_type interbert --output_dir runs/interbert-pretraining
    python examples/run_pretraining.py --model_type switch_bert --output_dir runs/switch-bert-pretraining
    python examples/run_pretraining.py --model_name_or_path runs/interbert-pretraining --do_eval --output_dir runs/eval

Model-agnostic: any pre-training head with the region models' signature (`input_ids`, `visual_feats`, `visual_pos`,
`visual_attention_mask`, `mlm_labels`, `mrm_labels` + `mrm_mask`, `itm_labels`; per-objective `*_loss` outputs) and a
retrieval head with `from_pretraining_model` (the ITM head's match log-odds as the ranking score). Built in:

- `interbert` (`InterBertForPreTraining`, Lin et al. 2020): masked segment modelling (word anchors with probability
  10%, each masking itself and 0-2 following words, 80/10/10 replacement: `DataCollatorForSpanMasking`), masked region
  modelling (region anchors with probability 10% plus every region whose IoU with an anchor exceeds 0.4, zeroed
  features: `DataCollatorForIoURegionMasking`), image-text matching;
- `switch_bert` (`SwitchBertForPreTraining`): MLM with visual clues (15% of tokens), masked region classification with
  KL divergence (MRC-KL, 15% of regions), image-text matching.

Data (`hf_vl.data.load_easy_vqa_captions`): the easy-VQA images with the caption "a <colour> <shape>"; regions are the
weight-free grid descriptors of the raw images (`GridFeatureExtractor`, 4x4 cells, each image encoded once). The grid
has no detector, so the masked-region targets come from the extractor's features: a k-means codebook over the
training regions (`hf_vl.regions.RegionCodebook`, `--num_region_classes` clusters) gives each region a class
distribution (the KL target, like a detector's `cls_prob`; `--region_targets ids` for the nearest class instead). The
codebook is saved with the model. Grid cells never overlap, so InterBERT's IoU groups reduce to the anchors here.

ITM negatives (`DataCollatorForImageTextMatching`, 50%) swap in another example's regions (and their region targets);
two images with the same caption are never each other's negatives. Evaluation (`--do_eval`): the pre-trained ITM head,
untouched (`from_pretraining_model`), scores every held-out test image against the 24 distinct captions; recall@K
image -> text and precision@K text -> image (`hf_vl.metrics.caption_level_retrieval`, with the chance levels) go to
`<output_dir>/all_results.json`.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import (
    AutoModel,
    AutoModelForPreTraining,
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_vl
from hf_vl.data import (
    DataCollatorForImageTextMatching,
    DataCollatorForIoURegionMasking,
    DataCollatorForSpanMasking,
    DataCollatorForVLMaskedLM,
    load_easy_vqa_captions,
)
from hf_vl.hub import save_for_hub
from hf_vl.metrics import caption_level_retrieval
from hf_vl.regions import GridFeatureExtractor, RegionCodebook, RegionProcessor
from hf_vl.training import PretrainingTrainer, local_pretrained_path

logger = logging.getLogger(__name__)

#: model_type -> (pre-training head, retrieval head, the masking recipe of its paper)
MODELS = {
    "interbert": {
        "pretraining": hf_vl.InterBertForPreTraining, "retrieval": hf_vl.InterBertForImageAndTextRetrieval,
        "text_masking": "span", "region_anchor_probability": 0.10, "region_iou_threshold": 0.4,
    },
    "switch_bert": {
        "pretraining": hf_vl.SwitchBertForPreTraining, "retrieval": hf_vl.SwitchBertForImageAndTextRetrieval,
        "text_masking": "tokens", "region_anchor_probability": 0.15, "region_iou_threshold": 1.0,  # no IoU groups
    },
}  # fmt: skip
RETRIEVAL_HEADS = {spec["pretraining"].__name__: spec["retrieval"] for spec in MODELS.values()}


@dataclass
class PretrainingModelArguments:
    model_type: str = field(default="interbert", metadata={"help": f"One of {sorted(MODELS)} (new model from BERT)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from / evaluate a pre-training checkpoint saved by this script."}
    )
    text_model_name_or_path: str = field(
        default="all-MiniLM-L6-v2", metadata={"help": "BERT-layout checkpoint the text side starts from."}
    )
    text_num_layers: int = field(default=3, metadata={"help": "BERT layers used (InterBERT: interaction + text extractor)."})
    num_interaction_layers: int | None = field(
        default=None, metadata={"help": "interbert: BERT layers in the single-stream interaction module (default half)."}
    )
    pooler_size: int = field(default=128, metadata={"help": "Size of the poolers / fused representation."})
    region_grid_size: int = field(default=4)
    region_image_size: int = field(default=64)
    num_region_classes: int = field(default=32, metadata={"help": "k-means classes of the region codebook."})
    region_targets: str = field(
        default="distributions", metadata={"help": "'distributions' (KL, the codebook's soft classes) or 'ids'."}
    )
    itm_negative_probability: float = field(default=0.5)
    dropout: float = field(default=0.0, metadata={"help": "hidden and attention dropout."})
    initializer_range: float | None = field(
        default=None, metadata={"help": "Std of the new weights; default hidden_size ** -0.5 of the BERT checkpoint."}
    )


@dataclass
class PretrainingDataArguments:
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    ks: str = field(default="1,5,10", metadata={"help": "Comma-separated K of the retrieval metrics."})


def encode_regions(dataset, extractor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Every image of `dataset` through the region extractor once: `visual_feats`, `visual_pos`, mask."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(dataset), batch_size):
        images = [image.convert("RGB") for image in dataset[start : start + batch_size]["image"]]
        for key, value in extractor(images, return_tensors="pt").items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


def region_targets(codebook: RegionCodebook, regions: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    if kind == "distributions":
        return codebook.distribution(regions["visual_feats"])
    if kind == "ids":
        return codebook.assign(regions["visual_feats"], regions["visual_attention_mask"])
    raise ValueError(f"`--region_targets` must be 'distributions' or 'ids', got {kind!r}.")


class CaptionRegionDataset(torch.utils.data.Dataset):
    """(caption tokens, the image's regions, their region targets, caption id) per image."""

    def __init__(self, encodings: list[dict], caption_ids: list[int], regions: dict, targets: torch.Tensor):
        self.encodings, self.caption_ids, self.regions, self.targets = encodings, caption_ids, regions, targets

    def __len__(self) -> int:
        return len(self.caption_ids)

    def __getitem__(self, index: int) -> dict:
        return {**self.encodings[index], **{key: value[index] for key, value in self.regions.items()},
                "region_labels": self.targets[index], "caption_id": self.caption_ids[index]}  # fmt: skip


class PretrainingCollator:
    """Text masking, then ITM negatives (the regions and their targets swap together), then region masking."""

    def __init__(self, text_collator, matching_collator, region_collator):
        self.text_collator, self.matching_collator, self.region_collator = text_collator, matching_collator, region_collator

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.region_collator(self.matching_collator(self.text_collator(examples)))
        batch.pop("caption_id")
        return batch


def build_collator(model_type: str, tokenizer, model_args: PretrainingModelArguments, seed: int) -> PretrainingCollator:
    spec = MODELS[model_type]
    if spec["text_masking"] == "span":
        text_collator = DataCollatorForSpanMasking(tokenizer, seed=seed)
    else:
        text_collator = DataCollatorForVLMaskedLM(tokenizer, mlm_probability=0.15, seed=seed)
    matching = DataCollatorForImageTextMatching(
        negative_probability=model_args.itm_negative_probability, image_id_key="caption_id", seed=seed + 1,
        image_keys=("visual_feats", "visual_pos", "visual_attention_mask", "region_labels"),
    )  # fmt: skip
    regions = DataCollatorForIoURegionMasking(
        anchor_probability=spec["region_anchor_probability"], iou_threshold=spec["region_iou_threshold"], seed=seed + 2
    )  # fmt: skip
    return PretrainingCollator(text_collator, matching, regions)


def build_model(model_args: PretrainingModelArguments, extractor) -> torch.nn.Module:
    spec = MODELS[model_args.model_type]
    kwargs = dict(visual_feat_dim=extractor.feature_dim, visual_pos_dim=extractor.pos_dim,
                  num_region_classes=model_args.num_region_classes, pooler_size=model_args.pooler_size,
                  hidden_dropout_prob=model_args.dropout, attention_probs_dropout_prob=model_args.dropout,
                  classifier_dropout_prob=model_args.dropout)  # fmt: skip
    if model_args.model_type == "interbert":
        interaction = model_args.num_interaction_layers or max(model_args.text_num_layers // 2, 1)
        kwargs.update(num_interaction_layers=interaction,
                      num_text_extraction_layers=model_args.text_num_layers - interaction,
                      num_image_extraction_layers=max(model_args.text_num_layers - interaction, 1),
                      image_hidden_dropout_prob=model_args.dropout,
                      image_attention_probs_dropout_prob=model_args.dropout)  # fmt: skip
    else:
        kwargs["num_hidden_layers"] = model_args.text_num_layers
    bert = AutoModel.from_pretrained(local_pretrained_path(model_args.text_model_name_or_path), add_pooling_layer=False)
    # unit-gain init of the new weights (regions, poolers, heads), as run_vqa.py: BERT's 0.02 suits width 768
    kwargs["initializer_range"] = (model_args.initializer_range if model_args.initializer_range is not None
                                   else bert.config.hidden_size**-0.5)  # fmt: skip
    return spec["pretraining"].from_bert_pretrained(bert, **kwargs)


@torch.no_grad()
def cross_encoder_caption_retrieval(retrieval_model, tokenizer, captions: list[str], image_captions: list[int],
                                regions: dict, ks=(1, 5, 10), batch_size: int = 32) -> dict[str, float]:  # fmt: skip
    """Every image against every distinct caption with the matching head (one fused forward per pair)."""
    retrieval_model.eval()
    text = tokenizer(captions, padding=True, return_tensors="pt")
    num_images, num_captions = len(image_captions), len(captions)
    scores = []
    for start in range(0, num_images, batch_size):
        rows = slice(start, min(start + batch_size, num_images))
        count = rows.stop - rows.start
        outputs = retrieval_model(
            input_ids=text["input_ids"][None].expand(count, -1, -1),
            attention_mask=text["attention_mask"][None].expand(count, -1, -1),
            **{key: value[rows] for key, value in regions.items()},
        )
        scores.append(outputs.logits)  # (count, num_captions)
    similarity = torch.cat(scores)
    if similarity.shape != (num_images, num_captions):
        raise RuntimeError(f"expected ({num_images}, {num_captions}) scores, got {tuple(similarity.shape)}")
    return caption_level_retrieval(similarity, image_captions, ks=ks)


def main():
    parser = HfArgumentParser((PretrainingModelArguments, PretrainingDataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    if not (training_args.do_train or training_args.do_eval):
        training_args.do_train = training_args.do_eval = True
    training_args.remove_unused_columns = False
    if model_args.model_type not in MODELS:
        raise ValueError(f"--model_type must be one of {sorted(MODELS)}, got {model_args.model_type!r}.")
    set_seed(training_args.seed)
    started = time.time()
    data = load_easy_vqa_captions()
    train, test = data["train"], data["test"]
    if data_args.max_train_samples is not None:
        train = train.shuffle(seed=0).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        test = test.select(range(min(data_args.max_eval_samples, len(test))))

    if model_args.model_name_or_path:  # a folder written by this script: model, tokenizer + extractor, codebook
        model = AutoModelForPreTraining.from_pretrained(model_args.model_name_or_path)
        processor = RegionProcessor.from_pretrained(model_args.model_name_or_path)
        codebook = RegionCodebook.from_pretrained(model_args.model_name_or_path)
        tokenizer, extractor = processor.tokenizer, processor.feature_extractor
    else:
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(model_args.text_model_name_or_path))
        extractor = GridFeatureExtractor(image_size=model_args.region_image_size, grid_size=model_args.region_grid_size,
                                         pos_dim=4)  # fmt: skip
        model = build_model(model_args, extractor)
        processor = RegionProcessor(tokenizer, extractor)
        codebook = None
    processor.check_compatible(model.config)
    train_regions = encode_regions(train, extractor) if training_args.do_train else None
    if codebook is None:
        if train_regions is None:
            raise ValueError("Evaluating a new model needs training data for its region codebook: pass --do_train.")
        real = train_regions["visual_attention_mask"].bool()
        codebook = RegionCodebook.fit(train_regions["visual_feats"][real], model.config.num_region_classes,
                                      seed=training_args.seed)  # fmt: skip
    captions = sorted(set(train["caption"]) | set(test["caption"]))
    encoded = {caption: dict(tokenizer(caption)) for caption in captions}

    trainer = None
    results: dict = {"model_type": model.config.model_type, "train_images": len(train), "test_images": len(test)}
    if training_args.do_train:
        dataset = CaptionRegionDataset([encoded[caption] for caption in train["caption"]],
                                       [captions.index(caption) for caption in train["caption"]], train_regions,
                                       region_targets(codebook, train_regions, model_args.region_targets))  # fmt: skip
        trainer = PretrainingTrainer(model=model, args=training_args, train_dataset=dataset,
                                     data_collator=build_collator(model.config.model_type, tokenizer, model_args,
                                                                  training_args.seed))  # fmt: skip
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update({key: value for key, value in train_result.metrics.items() if key.startswith("train_")})
        if trainer.is_world_process_zero():
            save_for_hub(trainer.model, training_args.output_dir)
            processor.save_pretrained(training_args.output_dir)
            codebook.save_pretrained(training_args.output_dir)
        model = trainer.model
    if training_args.do_eval and training_args.process_index == 0:
        retrieval_class = RETRIEVAL_HEADS[type(model).__name__]
        retrieval = retrieval_class.from_pretraining_model(model)
        test_regions = encode_regions(test, extractor)
        ks = tuple(int(k) for k in data_args.ks.split(","))
        test_captions = sorted(set(test["caption"]))
        metrics = cross_encoder_caption_retrieval(retrieval, tokenizer, test_captions,
                                                  [test_captions.index(caption) for caption in test["caption"]],
                                                  test_regions, ks=ks)  # fmt: skip
        results.update({f"zero_shot_{key}": value for key, value in metrics.items()})
        print(f"Zero-shot retrieval with the pre-trained ITM head ({len(test)} held-out images, "
              f"{metrics['num_captions']} captions): " + ", ".join(
                  f"{key} {value:.4f}" for key, value in metrics.items() if "num_" not in key and "chance" not in key)
              + f" (chance i2t_r1 {metrics['i2t_chance_r1']:.4f})")  # fmt: skip
    results["wall_time_s"] = round(time.time() - started, 1)
    if training_args.process_index == 0:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "all_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
