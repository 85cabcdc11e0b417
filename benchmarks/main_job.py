#!/usr/bin/env python
"""The main job as a benchmark: reruns `make main`'s recipe (examples/run_vqa.py, METER on easy-VQA), then scores the
saved model on all 9,673 test questions per question type, and writes `benchmarks/results/main_job.json`.

    python benchmarks/main_job.py                 # what `make main` runs
    python benchmarks/main_job.py --skip_training # re-score the saved folder only

Question types come from the answer: yes/no, colour (8 colours) or shape (circle, rectangle, triangle).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "main_job.json"
OUTPUT_DIR = ROOT / "runs" / "meter-easy-vqa"
# The recipe of `make main` (one place: the Makefile runs this script).
RECIPE = [
    "--vision_model_type", "resnet", "--image_size", "64", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "256", "--learning_rate", "1e-3",
    "--warmup_steps", "100", "--logging_steps", "100", "--save_strategy", "no", "--report_to", "none",
]
SHAPES = {"circle", "rectangle", "triangle"}


def question_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "colour"


def score_per_type(output_dir: Path, batch_size: int = 256) -> dict:
    from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

    import hf_vl  # noqa: F401  (registers METER)
    from hf_vl.data import load_easy_vqa

    model = AutoModelForVisualQuestionAnswering.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir)
    test = load_easy_vqa("test")
    correct, total = {}, {}
    for start in range(0, test.num_rows, batch_size):
        rows = test[start : start + batch_size]
        inputs = processor(images=[image.convert("RGB") for image in rows["image"]], text=rows["question"],
                           return_tensors="pt")
        with torch.no_grad():
            predictions = model(**inputs).logits.argmax(-1).tolist()
        for prediction, answer in zip(predictions, rows["answer"]):
            kind = question_type(answer)
            total[kind] = total.get(kind, 0) + 1
            correct[kind] = correct.get(kind, 0) + int(model.config.id2label[prediction] == answer)
    per_type = {kind: round(correct[kind] / total[kind], 4) for kind in sorted(total)}
    return {"accuracy": round(sum(correct.values()) / sum(total.values()), 4), "per_question_type": per_type,
            "questions_per_type": total, "questions": sum(total.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip_training", action="store_true")
    args = parser.parse_args()
    command = [sys.executable, "examples/run_vqa.py", "--output_dir", str(OUTPUT_DIR.relative_to(ROOT)),
               "--overwrite_output_dir", *RECIPE]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    start = time.time()
    if not args.skip_training:
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    job_seconds = time.time() - start
    eval_results = json.loads((OUTPUT_DIR / "eval_results.json").read_text())
    train_file = OUTPUT_DIR / "train_results.json"
    train_results = json.loads(train_file.read_text()) if train_file.is_file() else {}
    scored_start = time.time()
    scores = score_per_type(OUTPUT_DIR)
    report = {
        "benchmark": "main job: METER fine-tuned on easy-VQA with the Trainer (examples/run_vqa.py)",
        "vqa_score": round(eval_results["eval_vqa_score"], 4),
        **scores,
        "wall_time_s": round(eval_results.get("wall_time_s", job_seconds), 1),
        "train_time_s": round(train_results["train_runtime"], 1) if "train_runtime" in train_results else None,
        "eval_time_s": round(eval_results["eval_runtime"], 1) if "eval_runtime" in eval_results else None,
        "per_type_scoring_time_s": round(time.time() - scored_start, 1),
        "command": "make main  (= python benchmarks/main_job.py: " + " ".join(["examples/run_vqa.py", *command[2:]]) + ")",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_after": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\neasy-VQA test VQA score {report['vqa_score']:.4f} on {report['questions']} questions; accuracy per type: "
          + ", ".join(f"{kind} {value:.4f}" for kind, value in report["per_question_type"].items())
          + f"; wall time {report['wall_time_s'] / 60:.1f} min -> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
