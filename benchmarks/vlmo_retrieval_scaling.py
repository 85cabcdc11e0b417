#!/usr/bin/env python
"""VLMo retrieval cost: dual-encoder ranking against full fusion scoring as the number of images and texts grows.

For N images and N texts, the dual encoder (VLMo's retrieval use) encodes each image and each text once (V-FFN / L-FFN
paths) and ranks by the N x N dot products; the fusion encoder (ITM scoring, VLMo-as-fusion) must run the Multiway
Transformer on all N^2 image-text pairs. Both produce an N x N score matrix; the script times them and prints the
ratio. A sized-down VLMo (hidden 384, 6 layers, 224 px, 40 text tokens; random weights: the cost does not depend on
them) keeps the run to minutes on a CPU.

    python benchmarks/vlmo_retrieval_scaling.py                 # writes benchmarks/results/vlmo_retrieval_scaling.json
    python benchmarks/vlmo_retrieval_scaling.py --sizes 4 8 16 32
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from hf_vl import VlmoConfig, VlmoForPreTraining

RESULTS = Path(__file__).parent / "results" / "vlmo_retrieval_scaling.json"


def dual_encoder_scores(model, input_ids, pixel_values, batch_size):
    vlmo = model.vlmo
    texts = torch.cat([vlmo.get_text_features(input_ids[i : i + batch_size]).pooler_output
                       for i in range(0, len(input_ids), batch_size)])
    images = torch.cat([vlmo.get_image_features(pixel_values[i : i + batch_size]).pooler_output
                        for i in range(0, len(pixel_values), batch_size)])
    return vlmo.logit_scale.exp() * images @ texts.t()  # (N images, N texts)


def fusion_scores(model, input_ids, pixel_values, batch_size):
    n = len(pixel_values)
    image_index = torch.arange(n).repeat_interleave(n)  # every (image, text) pair
    text_index = torch.arange(n).repeat(n)
    scores = []
    for start in range(0, n * n, batch_size):
        rows = slice(start, start + batch_size)
        fused = model.vlmo(input_ids=input_ids[text_index[rows]], pixel_values=pixel_values[image_index[rows]])
        scores.append(model.itm_score(fused.pooler_output)[:, 1])
    return torch.cat(scores).reshape(n, n)


def timed(function, *args):
    start = time.perf_counter()
    with torch.no_grad():
        function(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = VlmoConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                        vl_ffn_start_layer=4, image_size=224, max_text_len=40, drop_path_rate=0.0)
    model = VlmoForPreTraining(config).eval()
    rows = []
    for n in args.sizes:
        input_ids = torch.randint(1000, 29000, (n, 40))
        input_ids[:, 0], input_ids[:, -1] = 101, 102
        pixel_values = torch.randn(n, 3, 224, 224)
        dual = timed(dual_encoder_scores, model, input_ids, pixel_values, args.batch_size)
        fusion = timed(fusion_scores, model, input_ids, pixel_values, args.batch_size)
        rows.append({"images": n, "texts": n, "pairs": n * n, "dual_encoder_s": round(dual, 4),
                     "fusion_s": round(fusion, 4), "fusion_over_dual": round(fusion / dual, 2)})
        print(f"N={n:4d}  dual encoder {dual:8.3f} s   fusion {fusion:8.3f} s   ratio {fusion / dual:7.1f}x", flush=True)
    result = {
        "benchmark": "vlmo_retrieval_scaling",
        "model": "VLMo hidden 384, 6 layers (VL-FFN in the top 2), 224 px, 40 text tokens, random weights",
        "rows": rows,
        "command": " ".join(["python", *sys.argv]),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
