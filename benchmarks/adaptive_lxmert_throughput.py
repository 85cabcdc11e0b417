#!/usr/bin/env python
"""Adaptive LXMERT forward throughput against transformers' `LxmertModel`, and the cost of its mechanisms.

Timings are the fastest of `--iterations` interleaved rounds (variants alternate, so load from other processes on
a shared CPU hits them alike).

1. Plain `AdaptiveLxmertModel` (every mechanism off, eager and sdpa) vs `transformers.LxmertModel` with identical
   weights (LXMERT base: 9 / 5 / 5 layers, hidden 768, random weights: the cost does not depend on them): batch 32,
   20 tokens, 36 regions, CPU; equal outputs are asserted (max abs diff <= 1e-4) and the ratio printed.
2. The alpha-entmax normaliser (bisection + Newton, learnable alpha) vs softmax and vs `entmax.entmax_bisect`
   (50 bisection steps) at LXMERT's attention shape `(32, 12, 36, 36)` (needs `pip install entmax`; skipped without).
3. Model-level cost of span (eager and sdpa), entmax and span + entmax relative to the plain eager model, with the
   share of attention FLOPs (score and value products) the spans keep.
4. Layer-level cost of the same variants: one vision self-attention layer (attention + FFN) on `(batch, regions,
   hidden)` states, each variant's own layer, relative to the plain eager layer (the issue's goal: a learnable-alpha
   entmax layer <= 1.5x a softmax layer).

    python benchmarks/adaptive_lxmert_throughput.py                 # writes benchmarks/results/adaptive_lxmert_throughput.json
    python benchmarks/adaptive_lxmert_throughput.py --iterations 2 --threads 2
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import LxmertConfig, LxmertModel

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertModel
from hf_vl.models.adaptive_lxmert.modeling_adaptive_lxmert import entmax_bisect_newton

RESULTS = Path(__file__).parent / "results" / "adaptive_lxmert_throughput.json"


def timed(function, iterations: int) -> float:
    """Fastest of `iterations` calls after one warm-up call (the minimum is the least disturbed by other load)."""
    return compare({"f": function}, iterations)["f"]


def compare(functions: dict, iterations: int) -> dict[str, float]:
    """Fastest seconds of each function over `iterations` interleaved rounds (A, B, C, A, B, C, ...), so load from
    other processes on a shared machine hits every variant alike."""
    best = {name: float("inf") for name in functions}
    with torch.no_grad():
        for function in functions.values():
            function()  # warm-up
        for _ in range(iterations):
            for name, function in functions.items():
                start = time.perf_counter()
                function()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def make_inputs(batch_size, text_length, num_regions, config):
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(batch_size, num_regions, 2, generator=generator) * 0.5
    return {
        "input_ids": torch.randint(1000, config.vocab_size, (batch_size, text_length), generator=generator),
        "attention_mask": torch.ones(batch_size, text_length, dtype=torch.long),
        "visual_feats": torch.rand(batch_size, num_regions, config.visual_feat_dim, generator=generator),
        "visual_pos": torch.cat([corner, corner + 0.4], dim=-1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--text-length", type=int, default=20)
    parser.add_argument("--num-regions", type=int, default=36)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    lxmert_config = LxmertConfig()  # LXMERT base
    torch.manual_seed(0)
    reference = LxmertModel(lxmert_config).eval()
    inputs = make_inputs(args.batch_size, args.text_length, args.num_regions, lxmert_config)
    results = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "batch_size": args.batch_size,
               "text_length": args.text_length, "num_regions": args.num_regions, "iterations": args.iterations,
               "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}

    def adaptive(attn_implementation="eager", **mechanisms):
        config = AdaptiveLxmertConfig(**{**lxmert_config.to_dict(), **mechanisms})
        model = AdaptiveLxmertModel(config).eval()
        model.load_state_dict(reference.state_dict(), strict=False)  # span / alpha parameters keep their init
        model.config._attn_implementation = attn_implementation
        return model

    # 1. plain model vs transformers' LXMERT, identical weights
    with torch.no_grad():
        expected = reference(**inputs)
    models = {"lxmert": reference, "eager": adaptive("eager"), "sdpa": adaptive("sdpa")}
    diffs = {}
    for implementation in ("eager", "sdpa"):
        with torch.no_grad():
            actual = models[implementation](**inputs)
        diffs[implementation] = max((expected[k] - actual[k]).abs().max().item()
                                    for k in ("language_output", "vision_output", "pooled_output"))
        assert diffs[implementation] <= 1e-4, f"outputs differ from LxmertModel ({implementation}): {diffs}"
    seconds = compare({name: (lambda m=model: m(**inputs)) for name, model in models.items()}, args.iterations)
    reference_seconds = seconds["lxmert"]
    plain = {}
    for implementation in ("eager", "sdpa"):
        plain[implementation] = {"seconds": seconds[implementation], "max_abs_diff": diffs[implementation],
                                 "speedup_vs_lxmert": reference_seconds / seconds[implementation]}
        print(f"plain {implementation}: {seconds[implementation]:.3f}s vs LxmertModel {reference_seconds:.3f}s "
              f"(x{reference_seconds / seconds[implementation]:.2f}, max |diff| {diffs[implementation]:.1e})")
    results["lxmert_seconds"] = reference_seconds
    results["plain"] = plain

    # 2. the normaliser alone at LXMERT's attention shape
    heads = lxmert_config.num_attention_heads
    scores = torch.randn(args.batch_size, heads, args.num_regions, args.num_regions) * 3
    alpha = torch.full((1, heads, 1, 1), 1.5) + torch.linspace(-0.3, 0.3, heads).view(1, heads, 1, 1)
    normalisers = compare({"softmax": lambda: scores.softmax(-1),
                           "ours": lambda: entmax_bisect_newton(scores, alpha)}, 10 * args.iterations)
    softmax_seconds, ours_seconds = normalisers["softmax"], normalisers["ours"]
    normaliser = {"softmax_seconds": softmax_seconds, "entmax_bisect_newton_seconds": ours_seconds,
                  "entmax_bisect_newton_vs_softmax": ours_seconds / softmax_seconds}
    try:
        import entmax

        expanded = alpha.expand(*scores.shape[:-1], 1)
        reference_probs = entmax.entmax_bisect(scores, expanded, dim=-1)
        bisect_seconds = timed(lambda: entmax.entmax_bisect(scores, expanded, dim=-1), 10 * args.iterations)
        normaliser.update(entmax_bisect_seconds=bisect_seconds, entmax_bisect_vs_softmax=bisect_seconds / softmax_seconds,
                          max_abs_diff_vs_entmax_bisect=(entmax_bisect_newton(scores, alpha) - reference_probs)
                          .abs().max().item())
    except ImportError:
        normaliser["entmax_bisect"] = "not installed (pip install entmax)"
    results["normaliser"] = normaliser
    print("normaliser:", json.dumps(normaliser))

    # 3. model-level overhead of the mechanisms (span fraction 0.5: about half the keys are computed)
    mechanisms = {  # name -> (attention implementation, config fields)
        "span": ("eager", dict(adaptive_span=True, adaptive_span_init=0.5)),
        "span_sdpa": ("sdpa", dict(adaptive_span=True, adaptive_span_init=0.5)),
        "entmax": ("eager", dict(attention_entmax=True)),
        "span_entmax": ("eager", dict(adaptive_span=True, adaptive_span_init=0.5, attention_entmax=True)),
    }
    del models
    variants = {"plain_eager": adaptive("eager"),
                **{name: adaptive(implementation, **fields) for name, (implementation, fields) in mechanisms.items()}}
    seconds = compare({name: (lambda m=model: m(**inputs)) for name, model in variants.items()}, args.iterations)
    eager_seconds = seconds["plain_eager"]
    results["mechanisms"] = {"plain_eager_seconds": eager_seconds}
    for name in mechanisms:
        flops = variants[name].attention_flops(args.text_length, args.num_regions, args.batch_size)
        results["mechanisms"][name] = {"seconds": seconds[name], "vs_plain_eager": seconds[name] / eager_seconds,
                                       "attention_flops_effective_vs_dense": flops["effective"] / flops["dense"]}
        print(f"{name}: {seconds[name]:.3f}s (x{seconds[name] / eager_seconds:.2f} of plain eager)")
    # 4. layer level: the first vision self-attention layer of each variant (its span / alpha parameters included)
    states = torch.randn(args.batch_size, args.num_regions, lxmert_config.hidden_size)
    layers = {name: model.encoder.r_layers[0] for name, model in variants.items()}
    layer_seconds = compare({name: (lambda layer=layer: layer(states)) for name, layer in layers.items()},
                            5 * args.iterations)  # fmt: skip
    results["layer"] = {"plain_eager_seconds": layer_seconds["plain_eager"]}
    for name in mechanisms:
        ratio = layer_seconds[name] / layer_seconds["plain_eager"]
        results["layer"][name] = {"seconds": layer_seconds[name], "vs_plain_eager": ratio}
        print(f"layer {name}: {layer_seconds[name] * 1e3:.1f} ms (x{ratio:.2f} of a plain eager layer)")
    results["wall_seconds"] = time.time() - started
    # a load above the core count means other processes shared the CPU: ratios are then only indicative
    results["load_average_at_end"] = os.getloadavg()[0]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
