#!/usr/bin/env python
"""Pre-training check: examples/run_pretraining.py pre-trains a region model from the shipped MiniLM on the offline
easy-VQA caption set (InterBERT: MSM + MRM + ITM; Switch-BERT: MLM + MRC-KL + ITM; grid regions, k-means region
classes), then the pre-trained ITM head, untouched, ranks the 24 distinct captions for each of the 841 held-out test
images (zero-shot retrieval). Writes `benchmarks/results/pretraining_<model_type>.json`: the per-objective losses,
recall@1/5/10 image -> text and precision@1/5/10 text -> image with their chance levels, wall time, the command, the
machine and its load.

    python benchmarks/pretraining_zero_shot.py --model_type interbert
    python benchmarks/pretraining_zero_shot.py --model_type switch_bert
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
RECIPE = [
    "--text_num_layers", "3", "--pooler_size", "128", "--num_region_classes", "32", "--num_train_epochs", "12",
    "--per_device_train_batch_size", "64", "--learning_rate", "5e-4", "--warmup_steps", "20", "--logging_steps", "20",
    "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", "42",
]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_type", choices=["interbert", "switch_bert"], default="interbert")
    args = parser.parse_args()
    output_dir = ROOT / "runs" / f"{args.model_type}-pretraining"
    command = [sys.executable, "examples/run_pretraining.py", "--model_type", args.model_type, "--output_dir",
               str(output_dir.relative_to(ROOT)), *RECIPE]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    load_before = os.getloadavg()
    start = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    wall = time.time() - start
    results = json.loads((output_dir / "all_results.json").read_text())
    zero_shot = {key[len("zero_shot_"):]: round(value, 4) if isinstance(value, float) else value
                 for key, value in results.items() if key.startswith("zero_shot_")}  # fmt: skip
    report = {
        "benchmark": f"pre-training check: {args.model_type} pre-trained with the Trainer on the easy-VQA caption set "
                     "(examples/run_pretraining.py), zero-shot retrieval with the pre-trained ITM head",
        "zero_shot_retrieval": zero_shot,
        "train_losses": {key: value for key, value in results.items() if key.endswith("_loss")},
        "train_images": results["train_images"],
        "wall_time_s": round(wall, 1),
        "train_time_s": round(results["train_runtime"], 1) if "train_runtime" in results else None,
        "command": f"python benchmarks/pretraining_zero_shot.py --model_type {args.model_type}  (= "
                   + " ".join(["examples/run_pretraining.py", *command[2:]]) + ")",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results_file = ROOT / "benchmarks" / "results" / f"pretraining_{args.model_type}.json"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.model_type} zero-shot retrieval on {zero_shot['num_images']} held-out images: "
          + ", ".join(f"{key} {value}" for key, value in zero_shot.items() if "num_" not in key)
          + f"; wall time {wall / 60:.1f} min -> {results_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
