#!/usr/bin/env python
"""Speed of encoder-decoder METER's `generate()` with the KV cache against without it, in the same run.

`MeterForConditionalGeneration` caches the decoder's self-attention keys/values per step and the two cross-attention
blocks' keys/values (fused text, fused image) once per generation, in transformers' `EncoderDecoderCache`. Without
the cache every step re-runs the decoder over the whole prefix and re-projects the encoder states. Both ways give
identical tokens (checked here on every measurement, and in the tests).

Setup (default): the paper's 3 fusion + 3 decoder layers at width 768 (12 heads, FFN 3072), a 6-layer BERT text tower
and a 6-layer ViT-B/16 vision tower at 224 px (197 image tokens), random weights; batch 8, a 12-token prompt, greedy
decoding of exactly `--new_tokens` tokens (`min_new_tokens` = `max_new_tokens`). Timed in interleaved rounds (cached
/ uncached alternate); the median over rounds of each round's ratio is kept. On CPU the clock is the process CPU
time of a single-threaded run (robust to other jobs on a shared machine). Writes
`benchmarks/results/meter_generation_cache.json`.

    python benchmarks/meter_generation_cache.py                      # 32 new tokens, 5 rounds
    python benchmarks/meter_generation_cache.py --new_tokens 64 --rounds 3
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hf_vl import MeterConfig, MeterForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "meter_generation_cache.json"


def make_model(args) -> MeterForConditionalGeneration:
    text = dict(model_type="bert", num_hidden_layers=args.tower_layers, max_position_embeddings=64)
    vision = dict(model_type="vit", num_hidden_layers=args.tower_layers, image_size=224, patch_size=16)
    config = MeterConfig(text_config=text, vision_config=vision, num_fusion_layers=3, num_decoder_layers=3,
                         max_decoder_position_embeddings=args.new_tokens + 2, decoder_start_token_id=101,
                         eos_token_id=102, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return MeterForConditionalGeneration(config).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tower_layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    model = make_model(args)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(1000, 30000, (args.batch_size, 12), generator=generator),
        "attention_mask": torch.ones(args.batch_size, 12, dtype=torch.long),
        "pixel_values": torch.randn(args.batch_size, 3, 224, 224, generator=generator),
    }
    settings = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def run(use_cache: bool) -> tuple[float, float, torch.Tensor]:
        cpu, wall = time.process_time(), time.perf_counter()
        with torch.no_grad():
            tokens = model.generate(**inputs, use_cache=use_cache, **settings)
        return time.process_time() - cpu, time.perf_counter() - wall, tokens

    run(True)  # warm-up
    rounds = []
    for index in range(args.rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        measured = {use_cache: run(use_cache) for use_cache in order}
        if not torch.equal(measured[True][2], measured[False][2]):
            raise AssertionError("generate() with and without the cache gave different tokens")
        rounds.append({"cached_cpu_s": measured[True][0], "uncached_cpu_s": measured[False][0],
                       "cached_wall_s": measured[True][1], "uncached_wall_s": measured[False][1]})  # fmt: skip
    speedup = statistics.median(r["uncached_cpu_s"] / r["cached_cpu_s"] for r in rounds)
    wall_speedup = statistics.median(r["uncached_wall_s"] / r["cached_wall_s"] for r in rounds)
    generated = args.batch_size * args.new_tokens
    cached_s = statistics.median(r["cached_cpu_s"] for r in rounds)
    uncached_s = statistics.median(r["uncached_cpu_s"] for r in rounds)
    result = {
        "benchmark": "MeterForConditionalGeneration.generate(): KV cache vs no cache (greedy, identical tokens)",
        "speedup_cache_vs_no_cache": round(speedup, 3),
        "speedup_wall_clock": round(wall_speedup, 3),
        "tokens_per_second_cached": round(generated / cached_s, 1),
        "tokens_per_second_uncached": round(generated / uncached_s, 1),
        "identical_tokens": True,
        "setup": {"batch_size": args.batch_size, "prompt_tokens": 12, "new_tokens": args.new_tokens,
                  "image_tokens": 197, "fusion_layers": 3, "decoder_layers": 3, "hidden_size": 768,
                  "tower_layers": args.tower_layers, "rounds": args.rounds, "threads": 1},  # fmt: skip
        "rounds": [{key: round(value, 3) for key, value in r.items()} for r in rounds],
        "clock": "process CPU time (single-threaded); median of per-round ratios",
        "command": "python benchmarks/meter_generation_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},  # fmt: skip
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_cache_vs_no_cache", "tokens_per_second_cached",
                                             "tokens_per_second_uncached")}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
