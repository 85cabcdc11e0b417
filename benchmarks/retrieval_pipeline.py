#!/usr/bin/env python
"""Retrieval pipeline over 1 image x 100 candidate texts: encoding the query image once vs once per pair.

A METER-sized-down model (CLIP-style ViT tower at 224 px, MiniLM-sized text tower, 2 co-attention layers; random
weights: the cost does not depend on them) behind `pipeline("image-text-retrieval")`, timed in one process with
`encode_query_once=True` (default) and `False` (the previous behaviour: the vision tower runs for every pair).

    python benchmarks/retrieval_pipeline.py            # writes benchmarks/results/retrieval_pipeline.json
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import BertTokenizerFast, pipeline

import hf_vl
from hf_vl import MeterConfig, MeterForImageAndTextRetrieval, MeterImageProcessor, MeterProcessor

RESULTS = Path(__file__).parent / "results" / "retrieval_pipeline.json"


def build(folder: str) -> None:
    config = MeterConfig(
        text_config=dict(model_type="bert", vocab_size=1000, hidden_size=384, num_hidden_layers=6,
                         num_attention_heads=12, intermediate_size=1536),
        vision_config=dict(model_type="clip_vision_model", hidden_size=384, num_hidden_layers=6,
                           num_attention_heads=6, intermediate_size=1536, image_size=224, patch_size=16),
        hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_fusion_layers=2,
    )
    model = MeterForImageAndTextRetrieval(config).eval()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(995)]
    vocab_file = Path(folder) / "vocab.txt"
    vocab_file.write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file))
    processor = MeterProcessor(MeterImageProcessor(resolution=224), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num_texts", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    texts = [" ".join(f"w{(7 * i + j) % 995}" for j in range(8)) for i in range(args.num_texts)]
    with tempfile.TemporaryDirectory() as folder:
        build(folder)
        pipe = pipeline("image-text-retrieval", model=folder, device="cpu")
        timings = {}
        results = {}
        for mode in (False, True, False, True):  # interleaved, so machine load affects both alike
            pipe(image, candidate_texts=texts[:4], encode_query_once=mode)  # warm-up
            for _ in range(args.repeats):
                start = time.perf_counter()
                results[mode] = pipe(image, candidate_texts=texts, batch_size=args.batch_size, encode_query_once=mode)
                timings.setdefault(mode, []).append(time.perf_counter() - start)
    same_ranking = [r["text"] for r in results[True]] == [r["text"] for r in results[False]]
    max_score_diff = max(abs(a["score"] - b["score"]) for a, b in zip(results[True], results[False]))
    before, after = statistics.median(timings[False]), statistics.median(timings[True])
    report = {
        "benchmark": "image-text-retrieval pipeline, 1 image x %d texts" % args.num_texts,
        "seconds_encode_per_pair": round(before, 3),
        "seconds_encode_query_once": round(after, 3),
        "speedup": round(before / after, 2),
        "same_ranking": same_ranking,
        "max_score_difference": max_score_diff,
        "timings": {"encode_per_pair": timings[False], "encode_query_once": timings[True]},
        "batch_size": args.batch_size,
        "command": "python benchmarks/retrieval_pipeline.py",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("seconds_encode_per_pair", "seconds_encode_query_once", "speedup",
                                            "same_ranking")}, indent=2))


if __name__ == "__main__":
    main()
