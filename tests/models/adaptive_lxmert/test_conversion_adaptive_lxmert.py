"""Conversion of adaptive_transformer (plain, span + entmax, LayerDrop), airsplay/lxmert `model_LXRT.pth` and
transformers LXMERT checkpoints, checked against outputs recorded with the original code
(`tests/fixtures/lxmert_adaptive/`, `tests/fixtures/lxmert_original/`, see their README.md).

`conversion/` is a folder of scripts, not a package: the converter is imported from its file path.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vl import AdaptiveLxmertForPreTraining, AdaptiveLxmertForQuestionAnswering

ROOT = Path(__file__).resolve().parents[3]
ADAPTIVE = ROOT / "tests" / "fixtures" / "lxmert_adaptive"
ORIGINAL = ROOT / "tests" / "fixtures" / "lxmert_original"
SCRIPT = ROOT / "conversion" / "convert_adaptive_lxmert_original_to_hf.py"


def _load_converter():
    spec = importlib.util.spec_from_file_location("convert_adaptive_lxmert", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _load_converter()


@pytest.fixture(scope="module")
def adaptive():
    return load_file(ADAPTIVE / "inputs.safetensors"), load_file(ADAPTIVE / "outputs.safetensors"), \
        json.loads((ADAPTIVE / "original_config.json").read_text())


def _original_config(config, name):
    return {**config, "params": config["params"][name]}


def _run(model, inputs, rows=slice(None), masked=False):
    kwargs = dict(input_ids=inputs["input_ids"][rows], attention_mask=inputs["input_mask"][rows],
                  token_type_ids=inputs["segment_ids"][rows], visual_feats=inputs["feat"][rows],
                  visual_pos=inputs["pos"][rows])
    if masked:
        kwargs["visual_attention_mask"] = inputs["visual_attention_mask"][rows]
    with torch.no_grad():
        base = model.lxmert(**kwargs)
        logits = model(**kwargs).question_answering_score
    return {"vqa_logits": logits, "lang_output": base.language_output, "vision_output": base.vision_output,
            "pooled_output": base.pooled_output}


def _assert_matches(actual, reference, prefix, rows=slice(None), atol=1e-4):
    for field, value in actual.items():
        expected = reference[f"{prefix}.{field}"][rows]
        diff = (value - expected).abs().max().item()
        assert diff <= atol, f"{prefix}.{field}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("masked", [False, True])
def test_plain_checkpoint_reproduces_the_original(adaptive, masked):
    inputs, outputs, config = adaptive
    model = convert.convert(ADAPTIVE / "plain.pth", original_config=_original_config(config, "plain"))
    assert type(model) is AdaptiveLxmertForQuestionAnswering and not model.config.modifies_attention
    prefix = "plain.masked_regions" if masked else "plain"
    _assert_matches(_run(model, inputs, masked=masked), outputs, prefix, atol=1e-5)


@pytest.mark.parametrize("row", [0, 1])
def test_span_entmax_reproduces_each_batch_row(adaptive, row):
    """The original uses span row b for sample b of a batch of exactly `bs`: converting with `span_batch_row=b`
    reproduces that sample (our span is per head, so the result no longer depends on the batch)."""
    inputs, outputs, config = adaptive
    model = convert.convert(ADAPTIVE / "span_entmax.pth", original_config=_original_config(config, "span_entmax"),
                            span_batch_row=row)
    assert model.config.adaptive_span and model.config.attention_entmax and model.config.adaptive_span_ramp == 4
    rows = slice(row, row + 1)
    for masked in (False, True):
        prefix = "span_entmax.masked_regions" if masked else "span_entmax"
        # sample `row` alone (a batch of one) gives row `row` of the original's full-batch outputs
        _assert_matches(_run(model, inputs, rows, masked), outputs, prefix, rows)


def test_span_entmax_batch_of_one_is_entmax_only(adaptive):
    """A batch whose size differs from `bs` skips the original's span mask: our model with the span switched off."""
    inputs, outputs, config = adaptive
    model = convert.convert(ADAPTIVE / "span_entmax.pth", original_config=_original_config(config, "span_entmax"))
    model.config.adaptive_span = False
    actual = _run(model, inputs, slice(0, 1))
    for field in ("vqa_logits", "pooled_output"):
        diff = (actual[field] - outputs[f"span_entmax.batch1_row0.{field}"]).abs().max().item()
        assert diff <= 1e-4, field


def test_span_and_alpha_parameters_are_mapped(adaptive):
    _, _, config = adaptive
    original = convert.load_original_checkpoint(ADAPTIVE / "span_entmax.pth")
    state, info = convert.convert_state_dict(original)
    key = "lxmert.encoder.x_layers.0.visual_attention.att"
    raw = original[f"lxrt_encoder.model.bert.encoder.x_layers.0.visual_attention.att.adaptive_span.current_val"]
    torch.testing.assert_close(state[f"{key}.span_fraction"], raw.reshape(2, 4).mean(0))  # default: mean over rows
    alpha = original["lxrt_encoder.model.bert.encoder.x_layers.0.visual_attention.att.entmax_alpha.alpha"]
    torch.testing.assert_close(state[f"{key}.entmax_alpha"], alpha)
    assert info["num_attention_heads"] == 4 and not any("mask_template" in k for k in state)
    model = convert.convert(ADAPTIVE / "span_entmax.pth", original_config=_original_config(config, "span_entmax"))
    assert len(model.learned_spans()) == len(model.learned_alphas()) == 3 + 2 + 2 * 3
    with pytest.raises(ValueError, match="span_batch_row"):
        convert.convert_state_dict(original, span_batch_row=2)


@pytest.mark.parametrize("masked", [False, True])
def test_layerdrop_checkpoint_with_the_recorded_layers_pruned(adaptive, masked):
    """The original drew lang [2], vision [0], cross [1] (seed 5) even in eval(); pruning those layers reproduces
    it, while the converted model itself is deterministic at eval (the rates only act in training)."""
    inputs, outputs, config = adaptive
    model = convert.convert(ADAPTIVE / "layerdrop.pth", original_config=_original_config(config, "layerdrop"))
    assert (model.config.language_layerdrop, model.config.cross_layerdrop) == (1 / 3, 0.5)
    assert not model.config.layerdrop_in_eval
    first, second = _run(model, inputs), _run(model, inputs)
    torch.testing.assert_close(first["vqa_logits"], second["vqa_logits"], rtol=0, atol=0)
    drawn = config["layerdrop"]["dropped_layer_indices"]
    model.prune_layers(language=drawn["lang (encoder.layer)"], vision=drawn["vision (encoder.r_layers)"],
                       cross=drawn["cross (encoder.x_layers)"])
    prefix = "layerdrop.masked_regions" if masked else "layerdrop"
    _assert_matches(_run(model, inputs, masked=masked), outputs, prefix, atol=1e-5)


def test_airsplay_model_lxrt_reproduces_every_pretraining_head():
    inputs, outputs = load_file(ORIGINAL / "inputs.safetensors"), load_file(ORIGINAL / "outputs.safetensors")
    model = convert.convert(ORIGINAL / "model_LXRT.pth", num_attention_heads=4)
    assert type(model) is AdaptiveLxmertForPreTraining
    assert (model.config.num_object_labels, model.config.num_attr_labels, model.config.num_qa_labels) == (11, 7, 9)
    assert model.cls.predictions.decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    kwargs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                  token_type_ids=inputs["token_type_ids"], visual_feats=inputs["visual_feats"], visual_pos=inputs["pos"])
    with torch.no_grad():
        out = model(**kwargs)
        base = model.lxmert(**kwargs)
        objects = model.obj_predict_head(base.vision_output)
        masked = model.lxmert(**kwargs, visual_attention_mask=inputs["visual_attention_mask"])
    pairs = {
        "lang_prediction_scores": out.prediction_logits, "cross_relationship_score": out.cross_relationship_score,
        "answer_score": out.question_answering_score, "lang_output": base.language_output,
        "visn_output": base.vision_output, "pooled_output": base.pooled_output,
        "masked_regions.lang_output": masked.language_output, "masked_regions.visn_output": masked.vision_output,
        "masked_regions.pooled_output": masked.pooled_output,
        **{f"obj_predict_head.{key}": value for key, value in objects.items()},
    }
    for name, value in pairs.items():
        assert (value - outputs[name]).abs().max().item() <= 1e-5, name


def test_transformers_checkpoint_folder_and_cli(adaptive, tmp_path):
    """`plain_hf/` is `plain.pth` saved by transformers' LxmertForQuestionAnswering; the CLI converts it."""
    inputs, outputs, _ = adaptive
    assert convert.main(["--checkpoint-path", str(ADAPTIVE / "plain_hf"), "--output-dir", str(tmp_path / "out")]) == 0
    model = AdaptiveLxmertForQuestionAnswering.from_pretrained(tmp_path / "out").eval()
    assert (tmp_path / "out" / "model.safetensors").exists()
    _assert_matches(_run(model, inputs), outputs, "plain", atol=1e-5)


def test_heads_are_required_for_plain_weights():
    state, info = convert.convert_state_dict(convert.load_original_checkpoint(ADAPTIVE / "plain.pth"))
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert.config_from_state_dict(state, info)
