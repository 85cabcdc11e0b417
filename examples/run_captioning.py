#!/usr/bin/env python
"""Image captioning with encoder-decoder METER (`MeterForConditionalGeneration`) and transformers' `Seq2SeqTrainer`,
on the offline easy-VQA caption set (`hf_vl.data.load_easy_vqa_captions`: one "a <colour> <shape>" caption per image,
3,395 train / 841 test images), evaluated with `generate()` (`--predict_with_generate`) and offline caption metrics
(`hf_vl.metrics.caption_metrics`: exact match, corpus BLEU-1..4, CIDEr-D) plus colour / shape accuracy read off the
generated captions; they are written to `<output_dir>/all_results.json` (with 8 example captions).

    python examples/run_captioning.py --output_dir runs/meter-captioning --num_train_epochs 4 \
        --per_device_train_batch_size 64 --learning_rate 1e-3 --warmup_steps 50 --save_strategy no
    python examples/run_captioning.py --model_name_or_path runs/meter-captioning --do_eval --output_dir runs/eval

The model: the shipped MiniLM text tower (its first `--text_num_layers` layers, frozen; the encoder text is a fixed
prompt), a small randomly initialised ResNet at 64 px (4x4 image tokens), `--num_fusion_layers` co-attention layers
and `--num_decoder_layers` decoder layers (each: causal self-attention, cross-attention over the fused text,
cross-attention over the fused image, FFN). The decoder's vocabulary is the text tower's; its start token is [CLS]
and generation stops at [SEP]. The saved folder carries its code (`trust_remote_code`) and a generation config.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

import hf_vl
from hf_vl.data import DataCollatorForVLSeq2Seq, load_easy_vqa_captions
from hf_vl.hub import render_model_card, save_for_hub
from hf_vl.metrics import caption_metrics
from hf_vl.training import local_pretrained_path
from hf_vl.training.caching import ProcessedImageCache

logger = logging.getLogger(__name__)


@dataclass
class CaptioningArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A folder saved by this script."})
    text_model_name_or_path: str = field(default="minilm", metadata={"help": "Text tower (the shipped MiniLM)."})
    text_num_layers: int = field(default=2, metadata={"help": "Text tower layers kept (frozen)."})
    prompt: str = field(default="a picture of", metadata={"help": "The encoder text of every image."})
    image_size: int = field(default=64)
    vision_hidden_size: int = field(default=128, metadata={"help": "Width of the last ResNet stage."})
    vision_num_stages: int = field(default=3)
    hidden_size: int = field(default=128, metadata={"help": "Fusion (and decoder) width."})
    num_attention_heads: int = field(default=4)
    num_fusion_layers: int = field(default=2)
    num_decoder_layers: int = field(default=2)
    dropout: float = field(default=0.0, metadata={"help": "Fusion / decoder dropout."})
    max_target_length: int = field(default=16)
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


def build_model(args: CaptioningArguments, tokenizer):
    widths = [args.vision_hidden_size // 2 ** (args.vision_num_stages - 1 - i) for i in range(args.vision_num_stages)]
    vision_config = {"model_type": "resnet", "embedding_size": widths[0], "hidden_sizes": widths,
                     "depths": [1] * args.vision_num_stages, "layer_type": "basic"}  # fmt: skip
    model = hf_vl.MeterForConditionalGeneration.from_text_vision_pretrained(
        local_pretrained_path(args.text_model_name_or_path), vision_config,
        text_model_kwargs={"num_hidden_layers": args.text_num_layers, "hidden_dropout_prob": 0.0,
                           "attention_probs_dropout_prob": 0.0},
        hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size, num_fusion_layers=args.num_fusion_layers,
        num_decoder_layers=args.num_decoder_layers, max_decoder_position_embeddings=max(32, args.max_target_length + 1),
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
        decoder_start_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=args.hidden_size**-0.5,
    )  # fmt: skip
    for param in model.meter.text_model.parameters():  # a fixed prompt through a frozen tower
        param.requires_grad_(False)
    model.generation_config.max_new_tokens = args.max_target_length
    return model


class CaptionCollator:
    """Raw examples (image, caption) -> pixel values, the prompt's ids and the caption as target ids; each image is
    processed once (`ProcessedImageCache`, keyed by the image's file: `image_id`s restart in every split, and one
    collator serves train and eval)."""

    def __init__(self, processor, prompt: str, max_target_length: int):
        self.processor = processor
        self.prompt_ids = processor.tokenizer(prompt)["input_ids"]
        self.seq2seq = DataCollatorForVLSeq2Seq(processor.tokenizer, max_target_length=max_target_length)
        self.images = ProcessedImageCache(
            lambda images: dict(processor.image_processor([image.convert("RGB") for image in images], return_tensors="pt"))
        )

    def __call__(self, examples):
        tokenizer = self.processor.tokenizer
        pixel_values = self.images([example["image"] for example in examples])["pixel_values"]
        features = [{"input_ids": self.prompt_ids, "pixel_values": pixels, "target_ids": tokenizer(example["caption"])["input_ids"]}
                    for example, pixels in zip(examples, pixel_values)]  # fmt: skip
        return self.seq2seq(features)


def caption_scores(predictions, references, colours, shapes) -> dict:
    metrics = caption_metrics(predictions, [[reference] for reference in references])
    words = [prediction.split() for prediction in predictions]
    metrics["colour_accuracy"] = float(np.mean([colour in word for colour, word in zip(colours, words)]))
    metrics["shape_accuracy"] = float(np.mean([shape in word for shape, word in zip(shapes, words)]))
    return metrics


def main():
    parser = HfArgumentParser((CaptioningArguments, Seq2SeqTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    if not (training_args.do_train or training_args.do_eval):
        training_args.do_train = training_args.do_eval = True
    training_args.remove_unused_columns = False  # the collator reads the raw image / caption columns
    training_args.predict_with_generate = True
    set_seed(training_args.seed)
    start = time.time()
    data = load_easy_vqa_captions()
    train, test = data["train"], data["test"]
    if args.max_train_samples is not None:
        train = train.shuffle(seed=0).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        test = test.select(range(min(args.max_eval_samples, len(test))))
    if args.model_name_or_path:
        model = hf_vl.MeterForConditionalGeneration.from_pretrained(args.model_name_or_path)
        processor = hf_vl.MeterProcessor.from_pretrained(args.model_name_or_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.text_model_name_or_path))
        model = build_model(args, tokenizer)
        processor = hf_vl.MeterProcessor(hf_vl.MeterImageProcessor(resolution=args.image_size), tokenizer)
    collator = CaptionCollator(processor, args.prompt, args.max_target_length)
    tokenizer = processor.tokenizer

    def compute_metrics(eval_pred):
        predictions = np.where(eval_pred.predictions < 0, tokenizer.pad_token_id, eval_pred.predictions)
        texts = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        return caption_scores(texts, test["caption"], test["colour"], test["shape"])

    trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=test,
                             data_collator=collator, compute_metrics=compute_metrics)  # fmt: skip
    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.log_metrics("train", train_result.metrics)
        results["train_time_s"] = round(train_result.metrics["train_runtime"], 1)
    if training_args.do_eval:
        metrics = trainer.evaluate(max_new_tokens=args.max_target_length, num_beams=1)
        trainer.log_metrics("eval", metrics)
        results.update({key.removeprefix("eval_"): value for key, value in metrics.items()})
        batch = collator([test[index] for index in range(min(8, len(test)))])
        with torch.no_grad():
            generated = model.generate(input_ids=batch["input_ids"].to(model.device),
                                       attention_mask=batch["attention_mask"].to(model.device),
                                       pixel_values=batch["pixel_values"].to(model.device))  # fmt: skip
        results["examples"] = [{"reference": test[index]["caption"], "generated": text} for index, text in
                               enumerate(tokenizer.batch_decode(generated, skip_special_tokens=True))]  # fmt: skip
        print("\n".join(f"  {e['reference']!r:>20} -> {e['generated']!r}" for e in results["examples"]))
    results["wall_time_s"] = round(time.time() - start, 1)
    if training_args.do_train and trainer.is_world_process_zero():
        name = os.path.basename(os.path.abspath(training_args.output_dir))
        evaluation = (f"On the {len(test)} held-out test images, greedy decoding: exact match "
                      f"**{results['exact_match']:.4f}**, BLEU-1 {results['bleu_1']:.4f}, CIDEr-D {results['cider']:.4f}, "
                      f"colour {results['colour_accuracy']:.4f} / shape {results['shape_accuracy']:.4f} named correctly."
                      if "exact_match" in results else "Not evaluated.")  # fmt: skip
        card = render_model_card(
            model, template="meter_generation", model_name=name, repo_id=f"<user>/{name}", prompt=args.prompt,
            num_fusion_layers=model.config.num_fusion_layers, num_decoder_layers=model.config.num_decoder_layers,
            image_size=args.image_size, decoder_start_token_id=model.config.decoder_start_token_id,
            eos_token_id=model.config.eos_token_id,
            intended_uses="Captioning the simple synthetic easy-VQA images it was trained on (one coloured shape on a "
            "background): a demonstration model, not a captioner of natural photographs.",
            training_data=f"The easy-VQA caption set (`hf_vl.data.load_easy_vqa_captions`, PyPI package `easy-vqa`): "
            f"{len(train)} training images, each with its caption \"a <colour> <shape>\"; `examples/run_captioning.py` "
            "(transformers' Seq2SeqTrainer).",
            evaluation_results=evaluation,
            provenance="Built with `MeterForConditionalGeneration.from_text_vision_pretrained` from all-MiniLM-L6-v2 "
            f"(its first {args.text_num_layers} layers, frozen) and a randomly initialised ResNet; fusion, decoder and "
            "output layers new, trained end to end with token cross-entropy.",
        )  # fmt: skip
        save_for_hub(model, training_args.output_dir, processor=processor, model_card=card)
        model.generation_config.save_pretrained(training_args.output_dir)
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "all_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
