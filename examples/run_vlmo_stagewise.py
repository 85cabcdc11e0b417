#!/usr/bin/env python
"""Stagewise pre-training of VLMo (paper Sec. 3.3) with the HF Trainer, offline on easy-VQA.

    python examples/run_vlmo_stagewise.py --output_dir runs/vlmo-stagewise
    python examples/run_vlmo_stagewise.py --stages text,vision_language --model_name_or_path runs/x/image \
        --output_dir runs/y

Three stages run in sequence; each starts from the folder the previous one saved (the first from
`--model_name_or_path`, or a new model), calls `set_pretraining_stage(stage)` so that the `Trainer` only updates what
the stage may train, and saves its model (with code and processor, `hf_vl.hub.save_for_hub`) to `--output_dir/<stage>`:

1. `image`: the vision expert. The paper trains it with BEiT masked image modelling, whose targets are the visual tokens
   of the DALL-E tokenizer; that tokenizer is not available offline, so this stage substitutes supervised image
   classification: [`VlmoForImageClassification`] (image-only V-FFN path) predicts the colour x shape class of each
   image (the 24 captions of `hf_vl.data.load_easy_vqa_captions`, "a <colour> <shape>"). Text embeddings, L-FFN and
   VL-FFN are frozen. Metric: accuracy on the held-out test images.
2. `text`: text-only masked language modelling ([`VlmoForMaskedLM`], L-FFN path; whole-word masking with
   `hf_vl.data.DataCollatorForVLMaskedLM`) on a text corpus of easy-VQA questions and captions, with the shared
   self-attention, the V-FFN experts and the image embeddings frozen: only the text embeddings and the L-FFN experts
   (and the MLM head) learn. Metric: MLM accuracy on held-out test questions and captions.
3. `vision_language`: image-text pre-training ([`VlmoForPreTraining`]: ITC, ITM with hard negatives mined from the
   contrastive similarities, MLM through the fusion encoder) on the image-caption pairs, everything trainable.
   Metrics: the held-out ITC / ITM / MLM losses, MLM and ITM accuracy, and caption-level image -> text R@1
   (`hf_vl.metrics.caption_level_retrieval`, every image and caption encoded once by the dual encoder).

Per-stage metrics go to `--output_dir/all_results.json` (`<stage>_<metric>`); the last stage's folder loads with
`AutoModelForPreTraining`. The defaults (image 64 px, patch 8, width 128, 4 layers, a few hundred steps per stage) run
in a few minutes on a CPU. The caption set has 24 distinct captions, each shared by many images, so ITC / ITM batches keep
the first image of each caption (two images with one caption would be each other's negatives).
"""

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoProcessor, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments, set_seed

import hf_vl
from hf_vl.data import DataCollatorForVLMaskedLM, load_easy_vqa, load_easy_vqa_captions
from hf_vl.hub import save_for_hub
from hf_vl.metrics import caption_level_retrieval
from hf_vl.training import local_pretrained_path

logger = logging.getLogger(__name__)

STAGES = ("image", "text", "vision_language")
STAGE_HEADS = {
    "image": hf_vl.VlmoForImageClassification,
    "text": hf_vl.VlmoForMaskedLM,
    "vision_language": hf_vl.VlmoForPreTraining,
}
# parser-level defaults of the TrainingArguments that suit tiny from-scratch stages (override them on the command line)
TRAINING_DEFAULTS = dict(learning_rate=1e-3, weight_decay=0.01, warmup_steps=20, per_device_train_batch_size=32,
                         logging_steps=20, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                         remove_unused_columns=False)  # fmt: skip


@dataclass
class StagewiseArguments:
    stages: str = field(default=",".join(STAGES), metadata={"help": "Comma-separated stages, run in this order."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "VLMo folder the first stage starts from."})
    tokenizer_name_or_path: str = field(default="all-MiniLM-L6-v2", metadata={"help": "BERT uncased WordPiece."})
    image_size: int = field(default=64)
    patch_size: int = field(default=8)
    hidden_size: int = field(default=128)
    num_hidden_layers: int = field(default=4)
    num_attention_heads: int = field(default=4)
    vl_ffn_start_layer: int = field(default=2, metadata={"help": "First layer with the VL-FFN expert (fusion)."})
    image_steps: int = field(default=300, metadata={"help": "Optimiser steps of the image stage."})
    text_steps: int = field(default=300, metadata={"help": "Optimiser steps of the text stage."})
    vision_language_steps: int = field(default=200, metadata={"help": "Optimiser steps of the vision-language stage."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Images / texts per training set."})
    max_eval_samples: int | None = field(default=256, metadata={"help": "Held-out images / texts per evaluation."})
    mlm_probability: float = field(default=0.15)
    max_text_length: int = field(default=24, metadata={"help": "Tokens per text (questions are short)."})

    def stage_list(self) -> list[str]:
        stages = [stage.strip() for stage in self.stages.split(",") if stage.strip()]
        unknown = [stage for stage in stages if stage not in STAGES]
        if not stages or unknown or len(set(stages)) != len(stages):
            raise ValueError(f"`--stages` must be distinct names from {STAGES}, got {self.stages!r}.")
        return stages


# --- data -------------------------------------------------------------------------------------------------------------


def _subset(dataset, count: int | None, shuffle: bool):
    if count is None or count >= len(dataset):
        return dataset
    return (dataset.shuffle(seed=0) if shuffle else dataset).select(range(count))


def caption_classes(captions) -> list[str]:
    """The 24 colour x shape classes of the image stage, sorted (`id2label`)."""
    return sorted(set(captions["caption"]))


def text_corpus(split: str, max_samples: int | None):
    """Questions and captions of easy-VQA's `split`, one `text` per row (the text-only corpus of the text stage)."""
    from datasets import Dataset

    questions = load_easy_vqa(split, max_questions_per_split=max_samples)["question"]
    captions = load_easy_vqa_captions(split)["caption"]
    texts = list(questions) + list(captions)[: max_samples if max_samples is not None else None]
    return _subset(Dataset.from_dict({"text": texts}), max_samples, shuffle=True)


class ImageClassificationCollator:
    """Images -> `pixel_values`, captions -> class `labels` (the image stage)."""

    def __init__(self, processor, classes: list[str]):
        self.processor, self.label2id = processor, {caption: index for index, caption in enumerate(classes)}

    def __call__(self, examples):
        images = [example["image"].convert("RGB") for example in examples]
        batch = dict(self.processor.image_processor(images=images, return_tensors="pt"))
        batch["labels"] = torch.tensor([self.label2id[example["caption"]] for example in examples])
        return batch


class TextMLMCollator:
    """Texts -> whole-word masked `input_ids` and `labels` (the text stage)."""

    def __init__(self, processor, max_length: int, mlm_probability: float, seed: int | None):
        self.tokenizer, self.max_length = processor.tokenizer, max_length
        self.masking = DataCollatorForVLMaskedLM(self.tokenizer, whole_word_mask=True, mlm_probability=mlm_probability,
                                                 seed=seed, label_key="labels")

    def __call__(self, examples):
        texts = [example["text"] for example in examples]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding="longest",
                                 return_tensors="pt")
        return self.masking(encoded)


class ImageTextPretrainingCollator:
    """Image-caption pairs -> VLMo pre-training inputs: masked `input_ids` with `mlm_labels` (the model restores the
    clean text for ITC / ITM) and `return_loss=True`. Keeps the first image of each caption (at least two pairs)."""

    def __init__(self, processor, max_length: int, mlm_probability: float, seed: int | None):
        self.processor, self.max_length = processor, max_length
        self.masking = DataCollatorForVLMaskedLM(processor.tokenizer, whole_word_mask=True,
                                                 mlm_probability=mlm_probability, seed=seed, label_key="mlm_labels")

    def __call__(self, examples):
        seen, kept = set(), []
        for example in examples:
            if example["caption"] not in seen:
                seen.add(example["caption"])
                kept.append(example)
        kept = kept if len(kept) >= 2 else list(examples[:2])  # ITM negatives need a second pair
        batch = self.processor(images=[example["image"].convert("RGB") for example in kept],
                               text=[example["caption"] for example in kept], padding="longest", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = self.masking(dict(batch))
        batch["return_loss"] = True
        return batch


# --- model ------------------------------------------------------------------------------------------------------------


def build_config(args: StagewiseArguments, tokenizer, classes: list[str]) -> hf_vl.VlmoConfig:
    return hf_vl.VlmoConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads, intermediate_size=4 * args.hidden_size,
        vl_ffn_start_layer=args.vl_ffn_start_layer, image_size=args.image_size, patch_size=args.patch_size,
        max_text_len=args.max_text_length, max_relative_text_length=args.max_text_length, drop_path_rate=0.0,
        embedding_dropout_prob=0.0, initializer_range=args.hidden_size**-0.5,
        id2label=dict(enumerate(classes)), label2id={caption: index for index, caption in enumerate(classes)},
    )  # fmt: skip


def load_stage_model(stage: str, source: str | None, config: hf_vl.VlmoConfig | None, classes: list[str]):
    """The head of `stage`, from the previous stage's folder (`source`) or new from `config`."""
    head = STAGE_HEADS[stage]
    if source is None:
        model = head(config)
    elif stage == "image":  # the classes of this stage, whatever head the folder was saved with
        model = head.from_pretrained(source, num_labels=len(classes), id2label=dict(enumerate(classes)),
                                     label2id={caption: index for index, caption in enumerate(classes)})
    else:
        model = head.from_pretrained(source)
    trainable = model.set_pretraining_stage(stage)
    total = sum(param.numel() for param in model.parameters())
    count = sum(param.numel() for name, param in model.named_parameters() if name in set(trainable))
    logger.info("stage %s: %s, %d of %d parameters trainable", stage, head.__name__, count, total)
    return model


# --- evaluation -------------------------------------------------------------------------------------------------------


@torch.no_grad()
def image_accuracy(model, processor, dataset, classes, batch_size: int = 128) -> dict[str, float]:
    model.eval()
    collate = ImageClassificationCollator(processor, classes)
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[index] for index in range(start, min(start + batch_size, len(dataset)))])
        correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum())
    return {"eval_accuracy": correct / len(dataset), "eval_chance_accuracy": 1 / len(classes),
            "eval_num_images": len(dataset)}  # fmt: skip


def _masked_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    masked = labels != -100
    return int((logits.argmax(-1)[masked] == labels[masked]).sum()), int(masked.sum())


@torch.no_grad()
def mlm_metrics(model, processor, dataset, args: StagewiseArguments, batch_size: int = 128) -> dict[str, float]:
    """Held-out masked-LM loss and accuracy (masked positions), with a fixed masking seed."""
    model.eval()
    collate = TextMLMCollator(processor, args.max_text_length, args.mlm_probability, seed=1234)
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[index] for index in range(start, min(start + batch_size, len(dataset)))])
        outputs = model(**batch)
        hits, count = _masked_accuracy(outputs.logits, batch["labels"])
        correct, total, loss_sum = correct + hits, total + count, loss_sum + float(outputs.loss) * count
    return {"eval_mlm_accuracy": correct / max(total, 1), "eval_mlm_loss": loss_sum / max(total, 1),
            "eval_masked_tokens": total}  # fmt: skip


@torch.no_grad()
def vision_language_metrics(model, processor, dataset, args: StagewiseArguments) -> dict[str, float]:
    """Held-out ITC / ITM / MLM losses and accuracies on one image per caption (eval mode: hardest negatives), and
    caption-level image -> text R@1 over `dataset` with the dual encoder."""
    model.eval()
    collate = ImageTextPretrainingCollator(processor, args.max_text_length, args.mlm_probability, seed=1234)
    batch = collate([dataset[index] for index in range(len(dataset))])
    outputs = model(**batch)
    hits, count = _masked_accuracy(outputs.mlm_logits, batch["mlm_labels"])
    metrics = {f"eval_{name}": float(getattr(outputs, name)) for name in ("loss", "itc_loss", "itm_loss", "mlm_loss")}
    metrics["eval_mlm_accuracy"] = hits / max(count, 1)
    metrics["eval_itm_accuracy"] = float((outputs.itm_logits.argmax(-1) == outputs.itm_labels).float().mean())
    captions = sorted(set(dataset["caption"]))
    text = processor.tokenizer(captions, padding=True, return_tensors="pt")
    text_embeds = model.vlmo.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    images = [image.convert("RGB") for image in dataset["image"]]
    pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    image_embeds = model.vlmo.get_image_features(pixel_values=pixel_values).pooler_output
    retrieval = caption_level_retrieval(image_embeds @ text_embeds.pooler_output.t(),
                                        [captions.index(caption) for caption in dataset["caption"]], ks=(1,))
    metrics.update({f"eval_{key}": retrieval[key] for key in ("i2t_r1", "i2t_chance_r1")})
    return metrics


# --- stages -----------------------------------------------------------------------------------------------------------


def run_stage(stage, model, processor, training_args, data, args: StagewiseArguments) -> dict[str, float]:
    """Train `model` for its stage with the Trainer, save it to `output_dir/<stage>`, return its metrics."""
    steps = getattr(args, f"{stage}_steps")
    stage_args = dataclasses.replace(training_args, output_dir=os.path.join(training_args.output_dir, stage),
                                     max_steps=steps)
    seed = training_args.seed
    if stage == "image":
        train, collate = data["captions_train"], ImageClassificationCollator(processor, data["classes"])
    elif stage == "text":
        train = data["text_train"]
        collate = TextMLMCollator(processor, args.max_text_length, args.mlm_probability, seed=seed)
    else:
        train = data["captions_train"]
        collate = ImageTextPretrainingCollator(processor, args.max_text_length, args.mlm_probability, seed=seed)
    set_seed(seed)
    trainer = Trainer(model=model, args=stage_args, train_dataset=train, data_collator=collate)
    result = trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {"train_loss": result.metrics["train_loss"], "train_steps": trainer.state.global_step}
    if logged:
        metrics["final_train_loss"] = logged[-1]
    if stage == "image":
        metrics.update(image_accuracy(model, processor, data["captions_test"], data["classes"]))
    elif stage == "text":
        metrics.update(mlm_metrics(model, processor, data["text_test"], args))
    else:
        metrics.update(vision_language_metrics(model, processor, data["captions_test"], args))
    save_for_hub(trainer.model, stage_args.output_dir, processor=processor)
    trainer.log_metrics(stage, metrics)
    return metrics


def load_data(args: StagewiseArguments, stages: list[str]) -> dict:
    captions = load_easy_vqa_captions()
    data = {
        "captions_train": _subset(captions["train"], args.max_train_samples, shuffle=True),
        "captions_test": _subset(captions["test"], args.max_eval_samples, shuffle=False),
        "classes": caption_classes(captions["train"]),
    }
    if "text" in stages:
        data["text_train"] = text_corpus("train", args.max_train_samples)
        data["text_test"] = text_corpus("test", args.max_eval_samples)
    return data


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((StagewiseArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    stages = args.stage_list()
    set_seed(training_args.seed)
    data = load_data(args, stages)
    if args.model_name_or_path:
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        config = None
    else:
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path(args.tokenizer_name_or_path))
        image_processor = hf_vl.VlmoImageProcessor(size={"height": args.image_size, "width": args.image_size})
        processor = hf_vl.VlmoProcessor(image_processor, tokenizer)
        config = build_config(args, tokenizer, data["classes"])
    results: dict = {"stages": stages}
    source = args.model_name_or_path
    for stage in stages:
        model = load_stage_model(stage, source, config, data["classes"])
        for key, value in run_stage(stage, model, processor, training_args, data, args).items():
            results[f"{stage}_{key}"] = value
        source = os.path.join(training_args.output_dir, stage)
        results[f"{stage}_model_path"] = source
    with open(os.path.join(training_args.output_dir, "all_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
