#!/usr/bin/env python
"""Image-text retrieval with a VLMo dual encoder and the HF Trainer: contrastive (ITC) training on the offline
easy-VQA caption set (`hf_vl.data.load_easy_vqa_captions`: one "a <colour> <shape>" caption per image), then
retrieval on the held-out test images, each image and each caption encoded once (`get_image_features` /
`get_text_features`).

    python examples/run_retrieval.py --output_dir runs/vlmo-retrieval
    python examples/run_retrieval.py --model_name_or_path runs/vlmo-retrieval --do_eval --output_dir runs/eval

The caption set has 24 distinct captions, each shared by many images, so the protocol is caption-level:
- image -> text: rank the 24 distinct captions for every test image; R@K = the image's caption is in the top K;
- text -> image: rank the test images for every caption; P@K = the fraction of the top K images it describes.
In-batch contrastive training needs distinct captions in a batch (two images with the same caption would be each
other's negatives): the collator keeps the first image of each caption in a batch.

Region models (InterBERT, Switch-BERT: cross-encoders, one fused forward per image-caption pair) take a folder written
by `examples/run_pretraining.py` (model, region processor, region codebook) or by this script:

    python examples/run_retrieval.py --model_name_or_path runs/interbert-pretraining --do_eval --output_dir runs/zs
    python examples/run_retrieval.py --model_name_or_path runs/interbert-pretraining --output_dir runs/interbert-ft

A pre-training folder evaluated as is is zero-shot retrieval (the ITM head's match log-odds through
`from_pretraining_model`); with `--do_train` the retrieval head is fine-tuned with the papers' 4-way multiple choice:
for each image-caption pair, the true pair, the image with a random other caption, a random other image with the
caption, and a hard image negative (an image sharing the caption's colour or shape but not both), cross-entropy over
the four scores. Every test image is then scored against every distinct caption.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForPreTraining,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_vl
from hf_vl.data import load_easy_vqa_captions
from hf_vl.hub import save_for_hub
from hf_vl.metrics import caption_level_retrieval
from hf_vl.regions import RegionProcessor
from hf_vl.training import local_pretrained_path
from run_pretraining import RETRIEVAL_HEADS, cross_encoder_caption_retrieval, encode_regions


@dataclass
class RetrievalArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A VLMo retrieval folder, or a region model's pre-training / retrieval folder (cross-encoder)."},
    )
    tokenizer_name_or_path: str = field(default="all-MiniLM-L6-v2", metadata={"help": "BERT uncased WordPiece."})
    image_size: int = field(default=64)
    patch_size: int = field(default=8)
    hidden_size: int = field(default=128)
    num_hidden_layers: int = field(default=4)
    num_attention_heads: int = field(default=4)
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    ks: str = field(default="1,5,10", metadata={"help": "Comma-separated K of the recalls / precisions."})


class ContrastiveCollator:
    """Images + captions -> VLMo inputs with `return_loss=True`; one image per distinct caption in a batch."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        seen, kept = set(), []
        for example in examples:
            if example["caption"] not in seen:
                seen.add(example["caption"])
                kept.append(example)
        batch = self.processor(images=[example["image"].convert("RGB") for example in kept],
                               text=[example["caption"] for example in kept], padding="longest", return_tensors="pt")
        batch["return_loss"] = True
        return batch


@torch.no_grad()
def caption_retrieval_metrics(model, processor, dataset, ks=(1, 5, 10), batch_size=128) -> dict[str, float]:
    """The caption-level protocol of the module docstring; every image and every distinct caption encoded once."""
    model.eval()
    captions = sorted(set(dataset["caption"]))
    text = processor.tokenizer(captions, padding=True, return_tensors="pt")
    text_embeds = model.vlmo.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    text_embeds = text_embeds.pooler_output  # L2-normalised ITC embeddings
    image_embeds = []
    for start in range(0, len(dataset), batch_size):
        images = [image.convert("RGB") for image in dataset[start : start + batch_size]["image"]]
        pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        image_embeds.append(model.vlmo.get_image_features(pixel_values=pixel_values).pooler_output)
    similarity = torch.cat(image_embeds) @ text_embeds.t()  # (num_images, num_captions)
    truth = [captions.index(caption) for caption in dataset["caption"]]
    return caption_level_retrieval(similarity, truth, ks=ks)


def build_model(args: RetrievalArguments, tokenizer):
    config = hf_vl.VlmoConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads, intermediate_size=4 * args.hidden_size,
        vl_ffn_start_layer=args.num_hidden_layers, image_size=args.image_size, patch_size=args.patch_size,
        drop_path_rate=0.0, embedding_dropout_prob=0.0, initializer_range=args.hidden_size**-0.5,
    )  # fmt: skip  (a dual encoder: no VL-FFN experts needed)
    return hf_vl.VlmoForImageAndTextRetrieval(config)


def main():
    parser = HfArgumentParser((RetrievalArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    if not (training_args.do_train or training_args.do_eval):
        training_args.do_train = training_args.do_eval = True
    training_args.remove_unused_columns = False  # the collator reads the raw image / caption columns
    set_seed(training_args.seed)
    data = load_easy_vqa_captions()
    train, test = data["train"], data["test"]
    if args.max_train_samples is not None:
        train = train.shuffle(seed=0).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        test = test.select(range(min(args.max_eval_samples, len(test))))
    ks = tuple(int(k) for k in args.ks.split(","))
    if args.model_name_or_path and RegionProcessor.is_saved_in(args.model_name_or_path):
        return run_cross_encoder(args, training_args, train, test, ks)
    if args.model_name_or_path:
        model = hf_vl.VlmoForImageAndTextRetrieval.from_pretrained(args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.tokenizer_name_or_path))
        model = build_model(args, tokenizer)
        image_processor = hf_vl.VlmoImageProcessor(size={"height": args.image_size, "width": args.image_size})
        processor = hf_vl.VlmoProcessor(image_processor, tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=ContrastiveCollator(processor))
    if training_args.do_train:
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            save_for_hub(trainer.model, training_args.output_dir, processor=processor)
    if training_args.do_eval and trainer.is_world_process_zero():
        metrics = {f"eval_{key}": value for key, value in
                   caption_retrieval_metrics(trainer.model, processor, test, ks=ks).items()}  # fmt: skip
        trainer.log_metrics("eval", metrics)
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "retrieval_results.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print("Test retrieval (" + f"{len(test)} images, {metrics['eval_num_captions']} captions): "
              + ", ".join(f"{key[5:]} {value:.4f}" for key, value in metrics.items() if "num_" not in key))
        return metrics
    return {}


class MultipleChoiceCollator:
    """The 4-way multiple choice of InterBERT / Switch-BERT retrieval fine-tuning; see the module docstring. Examples
    are image indices; the candidates are drawn with `seed`."""

    def __init__(self, tokenizer, captions: list[str], colours: list[str], shapes: list[str], regions: dict, seed: int):
        self.tokenizer, self.captions, self.regions = tokenizer, captions, regions
        self.colours, self.shapes = np.asarray(colours), np.asarray(shapes)
        self.caption_array = np.asarray(captions)
        self.distinct = sorted(set(captions))
        self.rng = np.random.default_rng(seed)

    def __call__(self, examples: list[dict]) -> dict:
        texts, images = [], []
        for example in examples:
            i = example["index"]
            other_captions = [caption for caption in self.distinct if caption != self.captions[i]]
            other_images = np.flatnonzero(self.caption_array != self.captions[i])
            hard = np.flatnonzero((self.caption_array != self.captions[i])
                                  & ((self.colours == self.colours[i]) | (self.shapes == self.shapes[i])))  # fmt: skip
            texts += [self.captions[i], other_captions[self.rng.integers(len(other_captions))], self.captions[i],
                      self.captions[i]]  # fmt: skip
            images += [i, i, int(self.rng.choice(other_images)), int(self.rng.choice(hard if len(hard) else other_images))]
        text = self.tokenizer(texts, padding=True, return_tensors="pt")
        batch = {key: value.view(len(examples), 4, -1) for key, value in text.items()}
        index = torch.tensor(images)
        batch.update({key: value[index].unflatten(0, (len(examples), 4)) for key, value in self.regions.items()})
        batch["labels"] = torch.zeros(len(examples), dtype=torch.long)  # the true pair is candidate 0
        return batch


def run_cross_encoder(args: RetrievalArguments, training_args: TrainingArguments, train, test, ks) -> dict:
    """Region models: zero-shot from a pre-training folder, or 4-way multiple-choice fine-tuning, then evaluation."""
    path = args.model_name_or_path
    architecture = (AutoConfig.from_pretrained(path).architectures or [""])[0]
    processor = RegionProcessor.from_pretrained(path)
    if architecture in RETRIEVAL_HEADS:  # a pre-training checkpoint: its ITM head scores the pairs
        model = RETRIEVAL_HEADS[architecture].from_pretraining_model(AutoModelForPreTraining.from_pretrained(path))
    else:
        model = getattr(hf_vl, architecture).from_pretrained(path)
    metrics = {"zero_shot": architecture in RETRIEVAL_HEADS and not training_args.do_train}
    if training_args.do_train:
        regions = encode_regions(train, processor.feature_extractor)
        collator = MultipleChoiceCollator(processor.tokenizer, train["caption"], train["colour"], train["shape"],
                                          regions, seed=training_args.seed)  # fmt: skip
        dataset = [{"index": i} for i in range(len(train))]
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
        result = trainer.train()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        metrics.update(result.metrics)
        if trainer.is_world_process_zero():
            save_for_hub(trainer.model, training_args.output_dir)
            processor.save_pretrained(training_args.output_dir)
        model = trainer.model
    if training_args.do_eval and training_args.process_index == 0:
        captions = sorted(set(test["caption"]))
        scores = cross_encoder_caption_retrieval(model, processor.tokenizer, captions,
                                                 [captions.index(caption) for caption in test["caption"]],
                                                 encode_regions(test, processor.feature_extractor), ks=ks)  # fmt: skip
        metrics.update({f"eval_{key}": value for key, value in scores.items()})
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "retrieval_results.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(("Zero-shot" if metrics["zero_shot"] else "Fine-tuned") + f" retrieval ({len(test)} images, "
              f"{scores['num_captions']} captions): " + ", ".join(f"{key} {value:.4f}" for key, value in scores.items()
                                                             if "num_" not in key and "chance" not in key))  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
