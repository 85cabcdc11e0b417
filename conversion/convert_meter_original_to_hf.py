"""Convert original METER checkpoints (https://github.com/zdou0830/METER, PyTorch Lightning `.ckpt`) to hf_vl METER.

METER = CLIP-ViT or Swin vision tower + RoBERTa or BERT text tower + co-attention fusion layers + task heads. One
original checkpoint holds the heads its `loss_names` enabled; every head present becomes its own HF folder:

| original keys            | HF class                               | folder        |
|--------------------------|----------------------------------------|---------------|
| `mlm_score`, `itm_score` | `MeterForPreTraining`                  | `pretraining` |
| `vqa_classifier`         | `MeterForQuestionAnswering`            | `vqa`         |
| `nlvr2_classifier`       | `MeterForImagesAndTextClassification`  | `nlvr2`       |
| `snli_classifier`        | `MeterForImageTextClassification`      | `snli_ve`     |
| `rank_output`            | `MeterForImageAndTextRetrieval`        | `retrieval`   |

The conversion follows timm's `checkpoint_filter_fn` habit: a regex table of key renames, a few named tensor fix-ups
(split the fused q/k/v projections of CLIP and Swin, drop unused buffers), a strict load into the HF model (only
head modules an original checkpoint lacks as a whole, e.g. `mim_score`, may stay initialised; they are reported as
new) and a comparison with outputs recorded by the original code. Everything the HF configs need is read from the
tensors (sizes, layer counts, image resolution, head counts where they can be seen); what tensors cannot tell
(attention heads of a tower whose heads are not 64 wide, LayerNorm eps, dropout) comes from `--original-config` or
the pretrained defaults METER used (roberta-base / bert-base-uncased).

Usage:

    python conversion/convert_meter_original_to_hf.py --checkpoint-path meter_clip16_288_roberta_vqa.ckpt \\
        --output-dir converted/meter-vqa --task vqa --answer-vocab vqa_answers.json --tokenizer path/to/roberta-base

    # every head of a checkpoint, checked against outputs recorded with the original code:
    python conversion/convert_meter_original_to_hf.py --checkpoint-path tests/fixtures/meter_clip/checkpoint.ckpt \\
        --output-dir /tmp/meter_clip --original-config tests/fixtures/meter_clip/original_config.json \\
        --reference-inputs tests/fixtures/meter_clip/inputs.safetensors \\
        --reference-outputs tests/fixtures/meter_clip/outputs.safetensors

The functions `load_original_checkpoint`, `convert_state_dict`, `load_converted_model`, `save_converted` and
`compare_with_reference` are the reusable part (the tests import this file by path).
"""

import argparse
import json
import logging
import math
import pickle
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from hf_vl.models.meter.configuration_meter import MeterConfig
from hf_vl.models.meter.modeling_meter import (
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForImageTextClassification,
    MeterForPreTraining,
    MeterForQuestionAnswering,
)


logger = logging.getLogger("convert_meter")

TASK_CLASSES = {
    "pretraining": MeterForPreTraining,
    "vqa": MeterForQuestionAnswering,
    "nlvr2": MeterForImagesAndTextClassification,
    "snli_ve": MeterForImageTextClassification,
    "retrieval": MeterForImageAndTextRetrieval,
}

# Head modules an original checkpoint may lack AS A WHOLE: left at their initialisation and reported as "new".
# `mim_score` never exists in METER checkpoints; an IRTR fine-tuned checkpoint keeps `itm_score` (its `rank_output`
# is initialised from it) but has no `mlm_score`. A module present only in part is still an error.
OPTIONAL_HEAD_PREFIXES = {"pretraining": ("mim_score.", "mim_discrete_score.", "mlm_score.", "itm_score.")}

# ----------------------------------------------------------------------------------------------------------------------
# Key tables
# ----------------------------------------------------------------------------------------------------------------------

# Original keys that no METER forward reads (or buffers current code recomputes): dropped and reported.
DROPPED_KEY_PATTERNS = (
    r"^text_transformer\.embeddings\.position_ids$",  # persistent buffer in transformers 4.6
    r"^text_transformer\.pooler\.",  # text tower pooler, never used by METER
    r"^vit_model\.positional_embedding$",  # CLIP text-tower leftover
    r"^vit_model\.ln_final\.",  # CLIP text-tower leftover
    r"^vit_model\.layers\.\d+\.blocks\.\d+\.attn_mask$",  # Swin shifted-window mask (recomputed)
    r"^vit_model\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$",  # Swin buffer (recomputed)
)

# Fused q/k/v projections (rows: q, then k, then v); `{}` receives q / k / v.
FUSED_QKV_RENAMES = (
    (r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.self_attn.{}_proj.\2"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.attention.{}_proj.\3"),
)  # fmt: skip

# One original tensor -> one HF tensor of the base model (`meter.` prefix).
BASE_RENAMES = (
    # text tower (transformers RobertaModel / BertModel, same names)
    (r"^text_transformer\.(embeddings\.(?:word|position|token_type)_embeddings\.weight)$", r"meter.text_model.\1"),
    (r"^text_transformer\.(embeddings\.LayerNorm\.(?:weight|bias)|encoder\.layer\..+)$", r"meter.text_model.\1"),
    # fusion module (names kept from the original)
    (r"^((?:cross_modal_(?:text|image)_(?:transform|pooler|layers)|token_type_embeddings)\..+)$", r"meter.\1"),
    # OpenAI CLIP visual tower -> transformers CLIPVisionModel
    (r"^vit_model\.visual\.class_embedding$", r"meter.vision_model.embeddings.class_embedding"),
    (r"^vit_model\.visual\.positional_embedding$", r"meter.vision_model.embeddings.position_embedding.weight"),
    (r"^vit_model\.visual\.conv1\.weight$", r"meter.vision_model.embeddings.patch_embedding.weight"),
    (r"^vit_model\.visual\.ln_pre\.(weight|bias)$", r"meter.vision_model.pre_layrnorm.\1"),
    (r"^vit_model\.visual\.ln_post\.(weight|bias)$", r"meter.vision_model.post_layernorm.\1"),
    (r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.mlp.fc2.\2"),
    # timm 0.4.12 Swin -> transformers SwinModel
    (r"^vit_model\.patch_embed\.proj\.(weight|bias)$", r"meter.vision_model.embeddings.patch_embeddings.projection.\1"),
    (r"^vit_model\.patch_embed\.norm\.(weight|bias)$", r"meter.vision_model.embeddings.norm.\1"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.attention.o_proj.\3"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"^vit_model\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$",
     r"meter.vision_model.encoder.layers.\1.blocks.\2.mlp.\3.\4"),
    # PatchMerging: timm and transformers concatenate the 2x2 neighbours in the same order (x00, x10, x01, x11)
    (r"^vit_model\.layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$",
     r"meter.vision_model.encoder.layers.\1.downsample.\2"),
    (r"^vit_model\.norm\.(weight|bias)$", r"meter.vision_model.layernorm.\1"),
)  # fmt: skip

# Task heads: original key -> (task, HF key). The classifiers are nn.Sequential(Linear, LayerNorm, GELU, Linear).
HEAD_RENAMES = (
    (r"^(mlm_score\.(?:bias|decoder\.weight|transform\.(?:dense|LayerNorm)\.(?:weight|bias)))$", "pretraining", r"\1"),
    (r"^(itm_score\.fc\.(?:weight|bias))$", "pretraining", r"\1"),
    (r"^vqa_classifier\.([013])\.(weight|bias)$", "vqa", r"classifier.\1.\2"),
    (r"^nlvr2_classifier\.([013])\.(weight|bias)$", "nlvr2", r"classifier.\1.\2"),
    (r"^snli_classifier\.([013])\.(weight|bias)$", "snli_ve", r"classifier.\1.\2"),
    (r"^rank_output\.(weight|bias)$", "retrieval", r"rank_output.\1"),
)

NLVR2_ID2LABEL = {0: "False", 1: "True"}  # METER: nlvr2 labels = the statement is true


class ConvertedTask(NamedTuple):
    """One HF checkpoint: its config and its state dict (original tensors only, renamed and split)."""

    config: MeterConfig
    state_dict: dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------------
# Reading original files
# ----------------------------------------------------------------------------------------------------------------------


# Key prefixes every METER checkpoint has (text tower, vision tower, fusion layers).
METER_KEY_PREFIXES = ("text_transformer.", "vit_model.", "cross_modal_")


class _OriginalStateDict(dict):
    """The state dict as `convert_state_dict` reads it: indexing a tensor the conversion needs that is missing raises
    a `ValueError` naming the key and the file (not a bare `KeyError`). Internal: never saved."""

    def __init__(self, tensors: dict, source: str = "the original checkpoint"):
        super().__init__(tensors)
        self.source = source

    def __missing__(self, key):
        raise ValueError(
            f"{self.source} has no tensor {key!r}, which the conversion needs: it is not a complete METER checkpoint "
            f"(it holds {len(self)} tensors)."
        )


def load_original_checkpoint(path: str | Path, unsafe_load: bool = False) -> dict[str, torch.Tensor]:
    """Reads an original METER checkpoint and returns its state dict (`ckpt["state_dict"]`, or the top-level dict).

    Only tensors and plain containers are unpickled (`weights_only=True`); `unsafe_load=True` unpickles arbitrary
    objects (e.g. a Lightning checkpoint whose hyper-parameters hold custom classes) and runs code from the file:
    use it only for files you trust.

    A missing, empty, truncated or corrupt file, a file that is no checkpoint, and a checkpoint without METER's
    tensors raise an error naming `path` (`FileNotFoundError` / `ValueError`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such original checkpoint file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a PyTorch checkpoint; was the download or copy interrupted?")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # not the `weights_only` refusal of a class: a damaged file
            raise ValueError(
                f"{path} is not a readable PyTorch checkpoint: it is corrupt or of another format "
                f"({type(error).__name__}: {' '.join(str(error).split())[-200:]})."
            ) from error
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, which `weights_only=True` refuses "
            f"({str(error).splitlines()[0]}). If you trust this file, re-run with --unsafe-load (unsafe_load=True), "
            "which unpickles arbitrary objects and can execute code from the file."
        ) from error
    except (EOFError, RuntimeError, KeyError, ValueError, OSError) as error:  # torch's errors for damaged files
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint: it is truncated, corrupt or of another format "
            f"({type(error).__name__}: {detail})."
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a dict (a Lightning checkpoint or a state dict), got {type(checkpoint)}.")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: `state_dict` must be a dict of tensors, got {type(state_dict).__name__}.")
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors found under 'state_dict' or at the top level (keys: {list(checkpoint)}).")
    missing = [prefix for prefix in METER_KEY_PREFIXES if not any(key.startswith(prefix) for key in tensors)]
    if missing:
        raise ValueError(
            f"{path} is not a METER checkpoint: none of its {len(tensors)} tensors is under {missing} (METER keeps "
            f"its text tower, vision tower and fusion layers there); first keys: {sorted(tensors)[:5]}."
        )
    skipped = sorted(set(state_dict) - set(tensors))
    if skipped:
        logger.info("ignored %d non-tensor entries: %s", len(skipped), skipped)
    return tensors


def _read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from error


def read_original_config(path: str | Path | None) -> dict:
    """Reads a METER config json: either METER's flat `config` dict (`_config` of sacred) or a dict holding it as
    `meter_config` next to the text tower's transformers config (`text_tower_roberta_config`/`text_tower_bert_config`/
    `text_tower_config`), as in the test fixtures' `original_config.json`.

    Returns `{"meter": {...}, "text": {...} or None, "text_type": "roberta"/"bert"/None, "swin": {...} or None}`.
    """
    if path is None:
        return {"meter": {}, "text": None, "text_type": None, "swin": None}
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object (METER's config), got {type(raw).__name__}.")
    text_keys = {"text_tower_roberta_config": "roberta", "text_tower_bert_config": "bert", "text_tower_config": None}
    text_key = next((key for key in text_keys if key in raw), None)
    text = raw[text_key] if text_key else None
    text_type = text_keys.get(text_key) or (text or {}).get("model_type")
    meter = raw.get("meter_config", raw)
    return {"meter": meter, "text": text, "text_type": text_type, "swin": raw.get("swin_constructor_args")}


def read_answer_vocab(path: str | Path) -> dict[int, str]:
    """Answer list json -> id2label. Accepts a list (index = label id), `{answer: id}` or `{id: answer}`."""
    raw = _read_json(path)
    if isinstance(raw, list):
        return {index: str(answer) for index, answer in enumerate(raw)}
    if isinstance(raw, dict) and all(str(key).isdigit() for key in raw):
        return {int(key): str(answer) for key, answer in raw.items()}
    if isinstance(raw, dict) and all(isinstance(value, int) for value in raw.values()):
        return {value: str(answer) for answer, value in raw.items()}
    raise ValueError(f"{path}: expected a list of answers, {{answer: id}} or {{id: answer}}; got {type(raw).__name__}.")


# ----------------------------------------------------------------------------------------------------------------------
# Architecture from the tensors
# ----------------------------------------------------------------------------------------------------------------------


def _layer_indices(state_dict: dict, pattern: str) -> list[int]:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    if indices and indices != set(range(len(indices))):
        raise ValueError(f"Layer indices of {pattern!r} are not contiguous from 0: {sorted(indices)}.")
    return sorted(indices)


def detect_vision_tower(state_dict: dict) -> str:
    """`"clip"` (keys `vit_model.visual.*`) or `"swin"` (keys `vit_model.layers.*`)."""
    has_clip = any(key.startswith("vit_model.visual.") for key in state_dict)
    has_swin = any(key.startswith("vit_model.layers.") for key in state_dict)
    if has_clip == has_swin:
        raise ValueError(
            "Cannot tell the vision tower: expected keys under `vit_model.visual.` (CLIP) or `vit_model.layers.` "
            f"(Swin), found {'both' if has_clip else 'neither'}."
        )
    return "clip" if has_clip else "swin"


def infer_clip_vision_config(state_dict: dict) -> dict:
    """CLIPVisionConfig kwargs of METER's trimmed CLIP (it keeps `vision_layers - 1` blocks: count them)."""
    width, channels, patch_size, _ = state_dict["vit_model.visual.conv1.weight"].shape
    num_positions = state_dict["vit_model.visual.positional_embedding"].shape[0]
    grid = math.isqrt(num_positions - 1)
    if grid * grid != num_positions - 1:
        raise ValueError(f"CLIP positional_embedding has {num_positions} rows, not 1 + a square number of patches.")
    if width % 64:
        raise ValueError(f"CLIP width {width} is not a multiple of 64 (CLIP uses heads = width // 64).")
    blocks = _layer_indices(state_dict, r"^vit_model\.visual\.transformer\.resblocks\.(\d+)\.")
    return {
        "model_type": "clip_vision_model",
        "hidden_size": width,
        "intermediate_size": state_dict["vit_model.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_attention_heads": width // 64,
        "num_hidden_layers": len(blocks),
        "num_channels": channels,
        "patch_size": patch_size,
        "image_size": grid * patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
    }


def _swin_window_size(state_dict: dict) -> int:
    tables = {k: v for k, v in state_dict.items() if k.endswith("attn.relative_position_bias_table")}
    sides = {(math.isqrt(v.shape[0]) + 1) // 2 for v in tables.values()}
    if len(sides) != 1:
        raise ValueError(
            f"Swin stages use different window sizes {sorted(sides)}; transformers' SwinModel has one `window_size`."
        )
    return sides.pop()


def _swin_image_size(state_dict: dict, window: int, patch_size: int) -> int | None:
    """Image size from the first shifted block's mask: (num_windows, w*w, w*w) at stage i <=> grid (w * sqrt(nW))."""
    for key in sorted(k for k in state_dict if k.endswith(".attn_mask")):
        stage = int(re.match(r"^vit_model\.layers\.(\d+)\.", key).group(1))
        windows_per_side = math.isqrt(state_dict[key].shape[0])
        return windows_per_side * window * patch_size * 2**stage
    return None


def infer_swin_vision_config(state_dict: dict, image_size: int | None = None, drop_path_rate: float = 0.1) -> dict:
    """SwinConfig kwargs of METER's timm-0.4.12 Swin (window = image_size // 32, no absolute position embedding)."""
    embed_dim, channels, patch_size, _ = state_dict["vit_model.patch_embed.proj.weight"].shape
    stages = _layer_indices(state_dict, r"^vit_model\.layers\.(\d+)\.")
    depths = [len(_layer_indices(state_dict, rf"^vit_model\.layers\.{i}\.blocks\.(\d+)\.")) for i in stages]
    tables = [state_dict[f"vit_model.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in stages]
    num_heads = [table.shape[1] for table in tables]  # table: ((2w - 1)^2, heads)
    window = _swin_window_size(state_dict)
    recorded = _swin_image_size(state_dict, window, patch_size)
    if image_size is None:
        image_size = recorded
    elif recorded is not None and recorded != image_size:
        raise ValueError(f"--image-size {image_size} contradicts the Swin attention masks ({recorded}).")
    if image_size is None:
        raise ValueError("No Swin attention mask to read the image size from: pass --image-size.")
    if window != image_size // 32:
        logger.warning("Swin window %d != image_size // 32 = %d (METER's rule); keeping %d.", window, image_size // 32,
                       window)
    fc1 = state_dict["vit_model.layers.0.blocks.0.mlp.fc1.weight"]
    return {
        "model_type": "swin",
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": window,
        "mlp_ratio": fc1.shape[0] / fc1.shape[1],
        "qkv_bias": "vit_model.layers.0.blocks.0.attn.qkv.bias" in state_dict,
        "use_absolute_embeddings": False,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": drop_path_rate,
    }


def detect_text_model_type(state_dict: dict, text_model_type: str = "auto", original: dict | None = None) -> str:
    """`"roberta"` or `"bert"`. Auto: the original config's text tower config, or METER's own rule (the tokenizer name
    contains "roberta"), else the tensors: RoBERTa checkpoints have a single token-type row, BERT ones two (RoBERTa's
    position table also has 2 extra rows, max + 2, which tells nothing on its own)."""
    if text_model_type != "auto":
        if text_model_type not in ("roberta", "bert"):
            raise ValueError(f"--text-model-type must be auto, roberta or bert; got {text_model_type!r}.")
        return text_model_type
    original = original or {}
    if original.get("text_type") in ("roberta", "bert"):
        return original["text_type"]
    tokenizer = original.get("meter", {}).get("tokenizer")
    if tokenizer and "<" not in tokenizer:  # a real name or path (the fixtures hold a placeholder)
        return "roberta" if "roberta" in tokenizer else "bert"
    type_rows = state_dict["text_transformer.embeddings.token_type_embeddings.weight"].shape[0]
    return "roberta" if type_rows == 1 else "bert"


# Values tensors cannot show; defaults are those of roberta-base / bert-base-uncased (what METER loads).
_TEXT_DEFAULTS = {
    "roberta": {"layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
    "bert": {"layer_norm_eps": 1e-12, "pad_token_id": 0},
}
_TEXT_COPIED_FIELDS = (
    "num_attention_heads", "layer_norm_eps", "hidden_act", "pad_token_id", "bos_token_id", "eos_token_id",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "position_embedding_type",
)  # fmt: skip


def infer_text_config(state_dict: dict, model_type: str, original_text_config: dict | None = None) -> dict:
    """Text tower config: sizes from the tensors, the rest from the original text config or the defaults."""
    prefix = "text_transformer.embeddings."
    vocab_size, hidden_size = state_dict[prefix + "word_embeddings.weight"].shape
    config = {
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": len(_layer_indices(state_dict, r"^text_transformer\.encoder\.layer\.(\d+)\.")),
        "intermediate_size": state_dict["text_transformer.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": state_dict[prefix + "position_embeddings.weight"].shape[0],
        "type_vocab_size": state_dict[prefix + "token_type_embeddings.weight"].shape[0],
        "num_attention_heads": hidden_size // 64,
        **_TEXT_DEFAULTS[model_type],
    }
    for field in _TEXT_COPIED_FIELDS:
        if original_text_config and field in original_text_config:
            config[field] = original_text_config[field]
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
        if original_text_config and field in original_text_config and original_text_config[field] != config[field]:
            raise ValueError(
                f"Text tower `{field}`: original config says {original_text_config[field]}, tensors say "
                f"{config[field]}."
            )
    if config["num_attention_heads"] < 1 or hidden_size % config["num_attention_heads"]:
        raise ValueError(
            f"Cannot guess the text tower's heads for hidden size {hidden_size}: pass --original-config with "
            "`num_attention_heads` in the text tower config."
        )
    return config


def detect_tasks(state_dict: dict) -> list[str]:
    """Tasks whose heads are in the checkpoint, in `TASK_CLASSES` order."""
    present = {task for key in state_dict for pattern, task, _ in HEAD_RENAMES if re.match(pattern, key)}
    return [task for task in TASK_CLASSES if task in present]


def infer_meter_config_kwargs(state_dict: dict, num_attention_heads: int | None, meter: dict) -> dict:
    """Fusion-module fields of MeterConfig, from the tensors (+ heads / dropout from the original config)."""
    hidden_size = state_dict["cross_modal_text_transform.weight"].shape[0]
    text_layers = _layer_indices(state_dict, r"^cross_modal_text_layers\.(\d+)\.")
    image_layers = _layer_indices(state_dict, r"^cross_modal_image_layers\.(\d+)\.")
    if not text_layers or text_layers != image_layers:
        raise ValueError(
            "Expected as many co-attention text as image layers (>= 1), got "
            f"{len(text_layers)} and {len(image_layers)}."
        )
    heads = num_attention_heads or meter.get("num_heads") or hidden_size // 64
    if heads < 1 or hidden_size % heads:
        raise ValueError(
            f"Cannot use {heads} fusion attention heads with hidden size {hidden_size}: pass --num-attention-heads."
        )
    dropout = meter.get("drop_rate", 0.1)
    return {
        "hidden_size": hidden_size,
        "num_attention_heads": heads,
        "intermediate_size": state_dict["cross_modal_text_layers.0.intermediate.dense.weight"].shape[0],
        "num_fusion_layers": len(text_layers),
        "fusion_type": "co_attention",
        "modality_type_vocab_size": state_dict["token_type_embeddings.weight"].shape[0],
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Renaming
# ----------------------------------------------------------------------------------------------------------------------


def _split_fused_qkv(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(3 * D, ...) fused projection (rows q, k, v) -> three (D, ...) tensors."""
    if tensor.shape[0] % 3:
        raise ValueError(f"Fused q/k/v tensor has {tensor.shape[0]} rows, not a multiple of 3.")
    return tensor.chunk(3, dim=0)


def _matching_rules(key: str) -> list[tuple[str, str, str, str | None]]:
    """Every rule of the key tables that matches `key`, as (kind, pattern, replacement, task)."""
    rules = [("drop", p, "", None) for p in DROPPED_KEY_PATTERNS]
    rules += [("fused", p, r, None) for p, r in FUSED_QKV_RENAMES] + [("base", p, r, None) for p, r in BASE_RENAMES]
    rules += [("head", p, r, task) for p, task, r in HEAD_RENAMES]
    return [rule for rule in rules if re.match(rule[1], key)]


def rename_state_dict(state_dict: dict) -> tuple[dict, dict[str, dict], list[str]]:
    """Original keys -> (base tensors with `meter.` keys, {task: head tensors}, dropped keys).

    Every original key must match exactly one rule and every HF key may be written once; anything else raises.
    """
    base, heads, dropped, unknown, num_fused = {}, defaultdict(dict), [], [], 0

    def put(target: dict, key: str, value: torch.Tensor, source: str):
        if key in target:
            raise ValueError(f"Two original tensors map to {key!r} (second one: {source!r}).")
        target[key] = value.detach().clone().contiguous()  # also unties shared storage (rank_output / itm_score)

    for source, tensor in state_dict.items():
        rules = _matching_rules(source)
        if len(rules) != 1:
            if rules:
                raise ValueError(f"{source!r} matches several conversion rules: {[rule[1] for rule in rules]}.")
            unknown.append(source)
            continue
        kind, pattern, replacement, task = rules[0]
        if kind == "drop":
            dropped.append(source)
        elif kind == "fused":
            template, num_fused = re.sub(pattern, replacement, source), num_fused + 1
            for name, part in zip("qkv", _split_fused_qkv(tensor)):
                put(base, template.format(name), part, source)
        else:
            put(base if kind == "base" else heads[task], re.sub(pattern, replacement, source), tensor, source)
    if unknown:
        raise ValueError(f"{len(unknown)} original key(s) match no conversion rule: {unknown}.")
    num_written = len(base) + sum(len(h) for h in heads.values())
    assert num_written + len(dropped) == len(state_dict) + 2 * num_fused, "every original key is used exactly once"
    return base, dict(heads), dropped


# ----------------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------------


def _task_config_kwargs(task: str, head: dict, id2label: dict[int, str] | None) -> dict:
    if task == "vqa":
        num_labels = head["classifier.3.weight"].shape[0]
        if id2label is not None:
            if len(id2label) != num_labels:
                raise ValueError(f"The answer vocabulary has {len(id2label)} answers, the VQA head {num_labels}.")
            return {"id2label": id2label, "label2id": {label: i for i, label in id2label.items()}}
        return {"num_labels": num_labels}
    if task == "nlvr2":
        return {"id2label": NLVR2_ID2LABEL, "label2id": {v: k for k, v in NLVR2_ID2LABEL.items()}}
    if task == "snli_ve":
        return {"num_labels": head["classifier.3.weight"].shape[0]}
    return {}


def convert_state_dict(
    original_state_dict: dict[str, torch.Tensor],
    text_model_type: str = "auto",
    original_config: dict | None = None,
    num_attention_heads: int | None = None,
    image_size: int | None = None,
    tasks: list[str] | None = None,
    id2label: dict[int, str] | None = None,
    source: str | Path | None = None,
) -> dict[str, ConvertedTask]:
    """Original METER state dict -> `{task: (MeterConfig, HF state dict)}` for every head present (or `tasks`).

    Args:
        original_state_dict: the Lightning `state_dict` (see [`load_original_checkpoint`]).
        text_model_type: `"auto"`, `"roberta"` or `"bert"`.
        original_config: the output of [`read_original_config`] (text tower heads / eps, fusion heads, dropout).
        num_attention_heads: heads of the fusion layers (default: original config, else hidden // 64).
        image_size: Swin only, when the checkpoint has no attention mask to read it from.
        tasks: subset of `TASK_CLASSES` to convert.
        id2label: VQA answers.
        source: the checkpoint's file name, for error messages (a tensor the conversion needs that is missing raises
            a `ValueError` naming it and `source`).

    Example:

    ```python
    >>> converted = convert_state_dict(load_original_checkpoint("meter.ckpt"))
    >>> config, state_dict = converted["vqa"]
    ```
    """
    original_config = original_config or read_original_config(None)
    meter = original_config["meter"]
    # a tensor the conversion needs that is missing then raises a ValueError naming it and `source`
    original_state_dict = _OriginalStateDict(original_state_dict, source or "the original checkpoint")
    vision_kind = detect_vision_tower(original_state_dict)
    if vision_kind == "clip":
        vision_config = infer_clip_vision_config(original_state_dict)
        if image_size is not None and image_size != vision_config["image_size"]:
            raise ValueError(
                f"--image-size {image_size} differs from the CLIP position table ({vision_config['image_size']}); "
                "convert first, then call `model.meter.resize_vision_position_embeddings(image_size)`."
            )
    else:
        drop_path = (original_config.get("swin") or {}).get("drop_path_rate", 0.1)
        vision_config = infer_swin_vision_config(original_state_dict, image_size, drop_path)
    text_type = detect_text_model_type(original_state_dict, text_model_type, original_config)
    text_config = infer_text_config(original_state_dict, text_type, original_config["text"])
    fusion = infer_meter_config_kwargs(original_state_dict, num_attention_heads, meter)

    base, heads, dropped = rename_state_dict(original_state_dict)
    logger.info("vision tower: %s, text tower: %s", vision_kind, text_type)
    logger.info("dropped %d unused original keys: %s", len(dropped), dropped)
    available = list(heads)
    tasks = tasks or detect_tasks(original_state_dict)
    missing = [task for task in tasks if task not in available]
    if missing:
        raise ValueError(f"Task(s) {missing} requested, but the checkpoint only has heads for {available}.")
    if "nlvr2" in tasks and fusion["modality_type_vocab_size"] < 3:
        raise ValueError("The checkpoint has an NLVR2 head but only 2 token-type rows (METER's NLVR2 uses 3).")

    converted = {}
    for task in tasks:
        config = MeterConfig(
            text_config=text_config,
            vision_config=vision_config,
            **fusion,
            **_task_config_kwargs(task, heads[task], id2label),
        )
        config.architectures = [TASK_CLASSES[task].__name__]
        state_dict = {**{k: v.clone() for k, v in base.items()}, **heads[task]}
        converted[task] = ConvertedTask(config, state_dict)
    return converted


def load_converted_model(task: str, config: MeterConfig, state_dict: dict[str, torch.Tensor]):
    """Builds the HF model of `task` and loads `state_dict` strictly: every tensor must find a parameter of the same
    shape, and only head modules absent as a whole from the checkpoint (`OPTIONAL_HEAD_PREFIXES`) may stay
    initialised.

    Returns `(model in eval mode, sorted list of new parameter names)`.
    """
    model = TASK_CLASSES[task](config).eval()
    expected = model.state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    absent = [p for p in OPTIONAL_HEAD_PREFIXES.get(task, ()) if not any(k.startswith(p) for k in state_dict)]
    new = [k for k in missing if k.startswith(tuple(absent))]
    not_allowed = sorted(set(missing) - set(new))
    if unexpected or not_allowed:
        raise ValueError(
            f"[{task}] converted keys unknown to the HF model: {unexpected}; HF keys not filled: {not_allowed}."
        )
    mismatched = [
        f"{k}: converted {tuple(v.shape)} vs HF {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if v.shape != expected[k].shape
    ]
    if mismatched:
        raise ValueError(f"[{task}] shape mismatches: {mismatched}.")
    result = model.load_state_dict(state_dict, strict=False)
    assert not result.unexpected_keys and sorted(result.missing_keys) == new
    return model, new


# ----------------------------------------------------------------------------------------------------------------------
# Comparison with outputs recorded by the original code
# ----------------------------------------------------------------------------------------------------------------------


def _base_predictions(model, inputs: dict, text: dict) -> dict[str, torch.Tensor]:
    """METER's `infer` outputs and the two tower outputs, as named in the reference files."""
    base, predictions = model.meter, {}
    if "image" in inputs:
        outputs = base(**text, pixel_values=inputs["image"])
        predictions["infer.cls_feats"] = outputs.pooler_output
        predictions["infer.text_feats"] = outputs.text_features
        predictions["infer.image_feats"] = outputs.image_features
        predictions["intermediate.text_tower"] = base.get_text_encoder_hidden_states(**text)
        predictions["intermediate.image_tower"] = base.get_image_encoder_hidden_states(inputs["image"])
    if {"image_0", "image_1"} <= set(inputs) and base.config.modality_type_vocab_size >= 3:
        for image_token_type_idx, name in ((1, "image_0"), (2, "image_1")):
            outputs = base(**text, pixel_values=inputs[name], image_token_type_idx=image_token_type_idx)
            predictions[f"nlvr2.infer{image_token_type_idx}.cls_feats"] = outputs.pooler_output
            predictions[f"nlvr2.infer{image_token_type_idx}.text_feats"] = outputs.text_features
            predictions[f"nlvr2.infer{image_token_type_idx}.image_feats"] = outputs.image_features
    return predictions


def _head_predictions(task: str, model, inputs: dict, text: dict) -> dict[str, torch.Tensor]:
    if task == "nlvr2":
        if not {"image_0", "image_1"} <= set(inputs):
            return {}
        pixel_values = torch.stack([inputs["image_0"], inputs["image_1"]], dim=1)  # (B, 2, 3, H, W)
        return {"nlvr2_logits": model(**text, pixel_values=pixel_values).logits}
    if "image" not in inputs:
        return {}
    outputs = model(**text, pixel_values=inputs["image"])
    if task == "pretraining":
        return {"mlm_logits": outputs.mlm_logits, "itm_logits": outputs.itm_logits}
    if task == "retrieval":
        return {"irtr_score": outputs.logits[:, 0]}
    return {{"vqa": "vqa_logits", "snli_ve": "snli_logits"}[task]: outputs.logits}


@torch.no_grad()
def predict_reference_outputs(models: dict, reference_inputs: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Runs the converted `{task: model}` on the recorded inputs (`text_ids`, `text_masks`, `image`, `image_0`,
    `image_1`) -> `{recorded output name: [one prediction per model that computes it]}`."""
    text = {"input_ids": reference_inputs["text_ids"], "attention_mask": reference_inputs["text_masks"]}
    predictions = defaultdict(list)
    for task, model in models.items():
        model.eval()
        task_predictions = {
            **_base_predictions(model, reference_inputs, text),
            **_head_predictions(task, model, reference_inputs, text),
        }
        for name, value in task_predictions.items():
            predictions[name].append(value)
    return dict(predictions)


def compare_with_reference(
    models: dict, reference_inputs: dict[str, torch.Tensor], reference_outputs: dict[str, torch.Tensor]
) -> dict[str, float | None]:
    """Largest absolute difference per recorded output name between the converted `{task: model}` and the outputs the
    original code recorded (`None`: no converted model computes it). Outputs every model computes (`infer.*`,
    `intermediate.*`, `nlvr2.infer*` when the model has 3 token types) are checked on every model."""
    predictions = predict_reference_outputs(models, reference_inputs)
    differences = {}
    for name, expected in reference_outputs.items():
        if name not in predictions:
            differences[name] = None
            continue
        worst = 0.0
        for value in predictions[name]:
            if value.shape != expected.shape:
                raise ValueError(f"{name}: converted shape {tuple(value.shape)} vs recorded {tuple(expected.shape)}.")
            worst = max(worst, (value.float() - expected.float()).abs().max().item())
        differences[name] = worst
    return differences


def format_differences(differences: dict[str, float | None], atol: float) -> str:
    lines = []
    for name in sorted(differences):
        diff = differences[name]
        if diff is None:
            lines.append(f"  {name:<28} skipped (no converted head computes it)")
        else:
            lines.append(f"  {name:<28} max_abs_diff={diff:.3e}  {'ok' if diff <= atol else 'FAIL'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------------


def build_processor(tokenizer_name_or_path: str, config: MeterConfig, max_text_len: int = 40):
    """MeterProcessor with the resolution of the converted vision tower and METER's normalisation (CLIP statistics for
    CLIP, ImageNet statistics for Swin)."""
    from transformers import AutoTokenizer

    from hf_vl.models.meter.image_processing_meter import MeterImageProcessor
    from hf_vl.models.meter.processing_meter import MeterProcessor

    vision = config.vision_config
    normalization = "clip" if vision.model_type == "clip_vision_model" else "imagenet"
    image_processor = MeterImageProcessor(resolution=vision.image_size, normalization=normalization)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path)
    return MeterProcessor(image_processor, tokenizer, max_text_len=max_text_len)


def save_converted(
    models: dict, output_dir: str | Path, processor=None, single_folder: bool = False
) -> dict[str, Path]:
    """Saves every `{task: model}` (safetensors) to `output_dir/<task>` (or `output_dir` itself for one task with
    `single_folder=True`), with the processor when given. Returns the folders."""
    folders = {}
    for task, model in models.items():
        folder = Path(output_dir) if single_folder else Path(output_dir) / task
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        folders[task] = folder
    return folders


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint-path", required=True, help="original METER checkpoint (.ckpt)")
    parser.add_argument("--output-dir", required=True, help="folder for the converted model(s)")
    parser.add_argument(
        "--task", choices=list(TASK_CLASSES), help="convert only this head, saved in --output-dir itself"
    )
    parser.add_argument(
        "--original-config", help="METER config json (+ text tower config), see read_original_config"
    )
    parser.add_argument("--text-model-type", default="auto", choices=["auto", "roberta", "bert"])
    parser.add_argument(
        "--num-attention-heads", type=int, help="fusion heads (default: original config, else hidden // 64)"
    )
    parser.add_argument("--image-size", type=int, help="Swin: image size when the checkpoint cannot tell it")
    parser.add_argument("--answer-vocab", help="VQA answers json: list, {answer: id} or {id: answer}")
    parser.add_argument("--tokenizer", help="tokenizer name or folder; saves a MeterProcessor next to each model")
    parser.add_argument("--reference-inputs", help="inputs.safetensors recorded with the original code")
    parser.add_argument("--reference-outputs", help="outputs.safetensors recorded with the original code")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed abs difference (default 1e-4)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="UNSAFE: unpickle arbitrary objects (torch.load weights_only=False); only for checkpoints you trust",
    )
    args = parser.parse_args(argv)
    if bool(args.reference_inputs) != bool(args.reference_outputs):
        parser.error("--reference-inputs and --reference-outputs go together")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hf_logging.disable_progress_bar()
    original_config = read_original_config(args.original_config)
    converted = convert_state_dict(
        load_original_checkpoint(args.checkpoint_path, unsafe_load=args.unsafe_load),
        text_model_type=args.text_model_type,
        original_config=original_config,
        num_attention_heads=args.num_attention_heads,
        image_size=args.image_size,
        tasks=[args.task] if args.task else None,
        id2label=read_answer_vocab(args.answer_vocab) if args.answer_vocab else None,
        source=args.checkpoint_path,
    )
    models = {}
    for task, (config, state_dict) in converted.items():
        models[task], new_keys = load_converted_model(task, config, state_dict)
        print(
            f"[{task}] {len(state_dict)} tensors loaded into {type(models[task]).__name__}; "
            f"new (initialised, not in original checkpoints): {new_keys}"
        )

    processor = None
    if args.tokenizer:
        first_config = next(iter(converted.values())).config
        processor = build_processor(args.tokenizer, first_config, original_config["meter"].get("max_text_len", 40))
    folders = save_converted(models, args.output_dir, processor, single_folder=bool(args.task))
    for task, folder in folders.items():
        print(f"[{task}] saved to {folder}" + ("" if processor else " (no processor: pass --tokenizer)"))

    if not args.reference_inputs:
        return 0
    differences = compare_with_reference(models, load_file(args.reference_inputs), load_file(args.reference_outputs))
    print(f"max abs difference per recorded output (atol {args.atol:g}):")
    print(format_differences(differences, args.atol))
    checked = [d for d in differences.values() if d is not None]
    if not checked:
        print("no recorded output could be compared")
        return 1
    return 0 if max(checked) <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
