#!/usr/bin/env python
"""Runs an example script at its default recipe and records what it reports: `benchmarks/results/<example>.json`
holds the example's `all_results.json` (with run_retrieval.py's `retrieval_results.json`), the wall time, the command,
the machine and its load.

    python benchmarks/example_runs.py --example referring_expression   # Switch-BERT on easy-VQA mosaics
    python benchmarks/example_runs.py --example vlmo_stagewise         # VLMo image / text / vision-language stages
    python benchmarks/example_runs.py --example captioning             # encoder-decoder METER captions easy-VQA
    python benchmarks/example_runs.py --example retrieval              # VLMo dual encoder, easy-VQA captions (ITC)
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from main_job import machine_record  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"referring_expression": "examples/run_referring_expression.py",
            "vlmo_stagewise": "examples/run_vlmo_stagewise.py",
            "captioning": "examples/run_captioning.py",
            "retrieval": "examples/run_retrieval.py"}  # fmt: skip
# examples whose defaults are transformers' TrainingArguments defaults: the recipe they are recorded with
RECIPES = {
    "captioning": ["--num_train_epochs", "4", "--per_device_train_batch_size", "64", "--per_device_eval_batch_size",
                   "128", "--learning_rate", "1e-3", "--warmup_steps", "50", "--logging_steps", "20",
                   "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", "42"],
    # VLMo dual encoder (the script's default size: 4 blocks of width 128, 8-px patches of 64-px images), ITC
    "retrieval": ["--num_train_epochs", "5", "--per_device_train_batch_size", "64", "--learning_rate", "1e-3",
                  "--warmup_steps", "20", "--logging_steps", "20", "--save_strategy", "no", "--report_to", "none",
                  "--disable_tqdm", "true", "--seed", "42"],
}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--example", choices=sorted(EXAMPLES), required=True)
    args = parser.parse_args()
    output_dir = ROOT / "runs" / f"{args.example}-default"
    command = [sys.executable, EXAMPLES[args.example], "--output_dir", str(output_dir.relative_to(ROOT)),
               *RECIPES.get(args.example, [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    load_before = os.getloadavg()
    start = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    wall = time.time() - start
    retrieval_file = output_dir / "retrieval_results.json"  # run_retrieval.py's evaluation
    retrieval = json.loads(retrieval_file.read_text()) if retrieval_file.is_file() else {}
    report = {
        "benchmark": f"{EXAMPLES[args.example]} at its default recipe",
        "results": {**json.loads((output_dir / "all_results.json").read_text()), **retrieval},
        "wall_time_s": round(wall, 1),
        "command": f"python benchmarks/example_runs.py --example {args.example}  (= "
                   + " ".join([EXAMPLES[args.example], *command[2:]]) + ")",
        "machine": machine_record(load_before, os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results_file = ROOT / "benchmarks" / "results" / f"{args.example}.json"
    results_file.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.example}: wall time {wall / 60:.1f} min -> {results_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
