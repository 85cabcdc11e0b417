"""Convert LXMERT-family checkpoints to hf_vl Adaptive LXMERT.

Three source formats (detected from the keys):

| format                 | file                                                    | keys                                         | HF class                              |
|------------------------|---------------------------------------------------------|----------------------------------------------|---------------------------------------|
| `adaptive_transformer` | prajjwal1/adaptive_transformer `learner.save` (`.pth`)   | `lxrt_encoder.model.bert.*`, `logit_fc.*`    | `AdaptiveLxmertForQuestionAnswering`  |
| `airsplay`             | airsplay/lxmert `model_LXRT.pth` (DataParallel)          | `module.bert.*`, `module.cls.*`, ...         | `AdaptiveLxmertForPreTraining`        |
| `transformers`         | a `transformers.Lxmert*` folder or state dict            | `lxmert.*` (+ `answer_head`, `cls`, ...)     | the matching head (same key names)    |

Every file is read with `torch.load(weights_only=True)`; nothing is unpickled.

Fix-ups (named, small):
- `lxrt_encoder.model.bert.` / `module.bert.` -> `lxmert.`; `logit_fc.` -> `answer_head.logit_fc.`; `module.` dropped.
- LayerDrop files wrap each stack: `.module_list.` is removed. The released code drops `layerdrop_num_layers` random
  layers of each stack on *every* forward, also in `eval()`; the converted model uses the rate
  `layerdrop_num_layers / num_layers` (at most 0.5) per stack during training only (deterministic evaluation; set
  `layerdrop_in_eval=True` for the original behaviour, or `prune_layers(...)` to remove chosen layers).
- Adaptive span: `adaptive_span.current_val` of shape `(bs, heads, 1, 1)` is one span per *batch position* (sample b of
  a batch of exactly `bs` uses row b; other batch sizes skip the mask). hf_vl learns one span per head: the converter
  takes the mean over the batch rows (`span_batch_row=None`) or one row (`span_batch_row=b`, which reproduces the
  original's outputs for sample b of a full batch exactly). The `mask_template_*` buffers are dropped (hf_vl builds
  the distances itself; the span is the same fraction of the key length).
- Entmax: `entmax_alpha.alpha` and `entmax_alpha.alpha_chooser` are one parameter stored twice (checked equal) ->
  `entmax_alpha`.
- `cls.predictions.decoder.weight` is the tied word embedding matrix (checked equal, then dropped: the model ties).

The adaptive_transformer files carry no configuration: sizes come from the tensor shapes; the head count (it cannot
be read from plain weights) and the mechanism parameters come from `--original-config` (a JSON with
`bert_config`-style fields and the code's `params` dict, as the fixtures') or `--num-attention-heads`.

Usage:

    python conversion/convert_adaptive_lxmert_original_to_hf.py --checkpoint-path snap/vqa/BEST.pth \\
        --num-attention-heads 12 --output-dir converted/adaptive_lxmert_vqa
    python conversion/convert_adaptive_lxmert_original_to_hf.py --checkpoint-path model_LXRT.pth \\
        --num-attention-heads 12 --output-dir converted/lxmert_pretraining

`load_original_checkpoint`, `detect_format`, `convert_state_dict`, `config_from_state_dict`, `convert` are the
reusable part (the tests import this file by path).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from hf_vl.models.adaptive_lxmert.configuration_adaptive_lxmert import AdaptiveLxmertConfig
from hf_vl.models.adaptive_lxmert.modeling_adaptive_lxmert import (
    AdaptiveLxmertForPreTraining,
    AdaptiveLxmertForQuestionAnswering,
    AdaptiveLxmertModel,
)

_RENAMES = {
    "adaptive_transformer": ((r"^lxrt_encoder\.model\.bert\.", "lxmert."), (r"^logit_fc\.", "answer_head.logit_fc.")),
    "airsplay": ((r"^module\.bert\.", "lxmert."), (r"^module\.", "")),
    "transformers": (),
}


def load_original_checkpoint(path) -> dict[str, torch.Tensor]:
    """A bare state dict from a `.pth` / `.bin` file, or the weights of a `save_pretrained` folder."""
    path = Path(path)
    if path.is_dir():
        safetensors_file = path / "model.safetensors"
        if safetensors_file.exists():
            from safetensors.torch import load_file

            return load_file(str(safetensors_file))
        path = path / "pytorch_model.bin"
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a bare state dict of tensors.")
    return state_dict


def detect_format(state_dict: dict) -> str:
    keys = list(state_dict)
    if any(k.startswith("lxrt_encoder.model.bert.") for k in keys):
        return "adaptive_transformer"
    if any(k.startswith("module.bert.") for k in keys):
        return "airsplay"
    if any(k.startswith("lxmert.") for k in keys) or any(k.startswith("embeddings.") for k in keys):
        return "transformers"
    raise ValueError(f"Unknown checkpoint layout (first keys: {keys[:3]}).")


def convert_state_dict(state_dict: dict, span_batch_row: int | None = None) -> tuple[dict, dict]:
    """Original keys -> hf_vl keys. Returns `(state_dict, info)`; `info` says which mechanisms the weights carry
    (`adaptive_span`, `attention_entmax`, `layerdrop`) and the number of heads when span / alpha tensors reveal it."""
    source = detect_format(state_dict)
    converted, info = {}, {"format": source, "adaptive_span": False, "attention_entmax": False, "layerdrop": False}
    alphas = {}
    for key, tensor in state_dict.items():
        new_key = key
        for pattern, replacement in _RENAMES[source]:
            new_key = re.sub(pattern, replacement, new_key)
        if source == "transformers" and not new_key.startswith(("lxmert.", "answer_head.", "cls.", "obj_predict_head.")):
            new_key = "lxmert." + new_key  # a bare LxmertModel state dict
        if ".module_list." in new_key:
            info["layerdrop"] = True
            new_key = new_key.replace(".module_list.", ".")
        if ".adaptive_span.mask_template_" in new_key:
            continue  # distances are rebuilt by the model
        if new_key.endswith(".adaptive_span.current_val"):
            info["adaptive_span"] = True
            spans = tensor.reshape(tensor.shape[0], -1)  # (bs, heads)
            info["num_attention_heads"] = spans.shape[1]
            info["span_batch_rows"] = spans.shape[0]
            if span_batch_row is not None and not 0 <= span_batch_row < spans.shape[0]:
                raise ValueError(f"`span_batch_row` must be in [0, {spans.shape[0]}), got {span_batch_row}.")
            value = spans.mean(0) if span_batch_row is None else spans[span_batch_row]
            converted[new_key.replace(".adaptive_span.current_val", ".span_fraction")] = value.clone()
            continue
        match = re.search(r"\.entmax_alpha\.(alpha|alpha_chooser)$", new_key)
        if match:
            info["attention_entmax"] = True
            info["num_attention_heads"] = tensor.numel()
            target = new_key[: match.start()] + ".entmax_alpha"
            if target in alphas and not torch.equal(alphas[target], tensor):
                raise ValueError(f"{key}: `alpha` and `alpha_chooser` differ; they should be one parameter.")
            alphas[target] = tensor
            converted[target] = tensor.reshape(-1).clone()
            continue
        converted[new_key] = tensor
    decoder = converted.get("cls.predictions.decoder.weight")
    embeddings = converted.get("lxmert.embeddings.word_embeddings.weight")
    if decoder is not None and embeddings is not None:
        if not torch.equal(decoder, embeddings):
            raise ValueError("`cls.predictions.decoder.weight` differs from the word embeddings; hf_vl ties them.")
        del converted["cls.predictions.decoder.weight"]
    return converted, info


def _count(state_dict: dict, pattern: str) -> int:
    indices = {int(m.group(1)) for k in state_dict for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(state_dict: dict, info: dict, num_attention_heads: int | None = None,
                           original_config: dict | None = None, **overrides) -> AdaptiveLxmertConfig:
    """An [`AdaptiveLxmertConfig`] for converted weights: sizes from the shapes; heads, activation and the mechanisms
    from `original_config` (the fixture / code layout: `bert_config (...)` fields and `params`) or the arguments."""
    original_config = original_config or {}
    bert = next((v for k, v in original_config.items() if k.startswith("bert_config")), {})
    params = original_config.get("params", {})
    if isinstance(params, dict) and "adapt_span_enabled" not in params and params:
        params = next(iter(params.values()))  # the fixtures keep one dict per checkpoint: pass the right one
    heads = num_attention_heads or info.get("num_attention_heads") or bert.get("num_attention_heads")
    if heads is None:
        raise ValueError("The number of attention heads cannot be read from plain LXMERT weights: pass "
                         "`num_attention_heads` (12 for LXMERT base) or an original config.")
    words = state_dict["lxmert.embeddings.word_embeddings.weight"]
    fields = {
        "vocab_size": words.shape[0],
        "hidden_size": words.shape[1],
        "num_attention_heads": heads,
        "intermediate_size": state_dict["lxmert.encoder.x_layers.0.lang_inter.dense.weight"].shape[0]
        if "lxmert.encoder.x_layers.0.lang_inter.dense.weight" in state_dict
        else state_dict["lxmert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": state_dict["lxmert.embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": state_dict["lxmert.embeddings.token_type_embeddings.weight"].shape[0],
        "l_layers": _count(state_dict, r"lxmert\.encoder\.layer\.(\d+)\."),
        "x_layers": _count(state_dict, r"lxmert\.encoder\.x_layers\.(\d+)\."),
        "r_layers": _count(state_dict, r"lxmert\.encoder\.r_layers\.(\d+)\."),
        "visual_feat_dim": state_dict["lxmert.encoder.visn_fc.visn_fc.weight"].shape[1],
        "visual_pos_dim": state_dict["lxmert.encoder.visn_fc.box_fc.weight"].shape[1],
        "hidden_act": bert.get("hidden_act", "gelu"),
        "hidden_dropout_prob": bert.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": bert.get("attention_probs_dropout_prob", 0.1),
        "initializer_range": bert.get("initializer_range", 0.02),
    }
    if "answer_head.logit_fc.3.weight" in state_dict:
        fields["num_qa_labels"] = state_dict["answer_head.logit_fc.3.weight"].shape[0]
    fields["task_qa"] = "answer_head.logit_fc.3.weight" in state_dict
    decoders = {name: state_dict.get(f"obj_predict_head.decoder_dict.{name}.weight") for name in ("obj", "attr", "feat")}
    fields["task_obj_predict"] = any(v is not None for v in decoders.values())
    if fields["task_obj_predict"]:
        fields["visual_obj_loss"], fields["visual_attr_loss"], fields["visual_feat_loss"] = (
            decoders[name] is not None for name in ("obj", "attr", "feat"))
        if decoders["obj"] is not None:
            fields["num_object_labels"] = decoders["obj"].shape[0]
        if decoders["attr"] is not None:
            fields["num_attr_labels"] = decoders["attr"].shape[0]
    if info["adaptive_span"]:
        fields.update(adaptive_span=True, adaptive_span_max_span=int(params.get("attn_span", 1024)),
                      adaptive_span_ramp=float(params.get("adapt_span_ramp", 4)),
                      adaptive_span_init=float(params.get("adapt_span_init", 0.002)),
                      adaptive_span_loss_coeff=float(params.get("adapt_span_loss_coeff", 5e-6)))
    if info["attention_entmax"]:
        fields.update(attention_entmax=True, entmax_learn_alpha=True)
    if info["layerdrop"]:
        dropped = int(params.get("layerdrop_num_layers", 1))
        for field, layers in (("language_layerdrop", "l_layers"), ("vision_layerdrop", "r_layers"),
                              ("cross_layerdrop", "x_layers")):
            fields[field] = min(dropped / fields[layers], 0.5) if fields[layers] else 0.0
    fields.update(overrides)
    return AdaptiveLxmertConfig(**fields)


def head_class_for(state_dict: dict):
    if any(k.startswith("cls.") for k in state_dict):
        return AdaptiveLxmertForPreTraining
    if any(k.startswith("answer_head.") for k in state_dict):
        return AdaptiveLxmertForQuestionAnswering
    return AdaptiveLxmertModel


def load_converted_model(state_dict: dict, config: AdaptiveLxmertConfig, model_class=None):
    """Builds the model and loads the converted weights strictly (the tied decoder aside)."""
    model_class = model_class or head_class_for(state_dict)
    model = model_class(config)
    if model_class is AdaptiveLxmertModel:
        state_dict = {k[len("lxmert."):]: v for k, v in state_dict.items() if k.startswith("lxmert.")}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k != "cls.predictions.decoder.weight"]
    if missing or unexpected:
        raise ValueError(f"Converted weights do not fit {model_class.__name__}: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}.")
    model.tie_weights()
    return model.eval()


def convert(checkpoint_path, output_dir=None, num_attention_heads=None, original_config=None, span_batch_row=None,
            **overrides):
    """Reads a checkpoint of any of the three formats and returns the converted hf_vl model (saved to `output_dir`
    with `save_pretrained` when given)."""
    checkpoint_path = Path(checkpoint_path)
    state_dict = load_original_checkpoint(checkpoint_path)
    converted, info = convert_state_dict(state_dict, span_batch_row=span_batch_row)
    if info["format"] == "transformers" and checkpoint_path.is_dir() and (checkpoint_path / "config.json").exists():
        lxmert_config = json.loads((checkpoint_path / "config.json").read_text())
        for key in ("model_type", "architectures", "transformers_version", "num_hidden_layers"):
            lxmert_config.pop(key, None)
        config = AdaptiveLxmertConfig(**{**lxmert_config, **overrides})
    else:
        if isinstance(original_config, (str, Path)):
            original_config = json.loads(Path(original_config).read_text())
        config = config_from_state_dict(converted, info, num_attention_heads, original_config, **overrides)
    model = load_converted_model(converted, config)
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-path", required=True, help=".pth / .bin state dict or a transformers folder")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-attention-heads", type=int, default=None)
    parser.add_argument("--original-config", default=None, help="JSON with the original sizes and `params`")
    parser.add_argument("--span-batch-row", type=int, default=None,
                        help="use this batch row of the per-batch-position spans (default: their mean)")
    args = parser.parse_args(argv)
    model = convert(args.checkpoint_path, args.output_dir, args.num_attention_heads, args.original_config,
                    args.span_batch_row)
    print(f"saved {type(model).__name__} ({model.num_parameters():,} parameters) to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
