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
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoProcessor, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import hf_vl
from hf_vl.data import load_easy_vqa_captions
from hf_vl.hub import save_for_hub
from hf_vl.metrics import caption_level_retrieval
from hf_vl.training import local_pretrained_path


@dataclass
class RetrievalArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A trained VLMo retrieval checkpoint."})
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
    if args.model_name_or_path:
        model = hf_vl.VlmoForImageAndTextRetrieval.from_pretrained(args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.tokenizer_name_or_path))
        model = build_model(args, tokenizer)
        image_processor = hf_vl.VlmoImageProcessor(size={"height": args.image_size, "width": args.image_size})
        processor = hf_vl.VlmoProcessor(image_processor, tokenizer)
    ks = tuple(int(k) for k in args.ks.split(","))
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


if __name__ == "__main__":
    main()
