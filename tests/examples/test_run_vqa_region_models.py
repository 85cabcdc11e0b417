"""examples/run_vqa.py with the hf_vl region models (--model_type interbert / switch_bert, initialised from the
shipped MiniLM; adaptive_lxmert with all three mechanisms on, from scratch): trained on the grid regions of the raw
easy-VQA images, saved (model code + auto_map + filled card, the RegionProcessor beside it) and evaluated again from
the saved folder to the same score."""

import json
import sys

import pytest

from test_run_vqa import ROOT, SCRIPT, _run

COMMON = [
    "--text_num_layers", "2", "--hidden_size", "32", "--fusion_dropout", "0", "--max_train_samples", "64",
    "--max_eval_samples", "32", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
    "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true",
    "--dataloader_num_workers", "0", "--seed", "0",
]  # fmt: skip
MODELS = {"interbert": "InterBertForQuestionAnswering", "switch_bert": "SwitchBertForQuestionAnswering",
          "adaptive_lxmert": "AdaptiveLxmertForQuestionAnswering"}
EXTRA = {"adaptive_lxmert": ["--adaptive_span", "--attention_entmax", "--layerdrop", "0.5", "--vision_num_layers", "1",
                             "--num_fusion_layers", "2"]}  # fmt: skip


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_region_model_trains_saves_and_re_evaluates(model_type, tmp_path):
    output_dir = tmp_path / model_type
    log = _run([sys.executable, str(SCRIPT), "--model_type", model_type, "--output_dir", str(output_dir),
                "--max_steps", "3", *EXTRA.get(model_type, []), *COMMON], cwd=ROOT)  # fmt: skip
    assert f"Training {MODELS[model_type]}" in log and "Region inputs: extracted from the raw images" in log
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == model_type and config["visual_pos_dim"] == 4
    assert config["auto_map"]["AutoModelForVisualQuestionAnswering"].endswith(f".{MODELS[model_type]}")
    assert (output_dir / f"modeling_{model_type}.py").is_file() and (output_dir / "region_processor_config.json").is_file()
    card = (output_dir / "README.md").read_text()
    assert "$" not in card.split("```bibtex")[0]
    if model_type == "adaptive_lxmert":
        assert config["adaptive_span"] and config["attention_entmax"] and config["cross_layerdrop"] == 0.5
        assert "adaptive span, alpha-entmax attention, LayerDrop" in card
    else:
        assert "from_bert_pretrained" in card
    import hf_vl  # noqa: F401  (registers the models and the pipeline task)
    from PIL import Image
    from transformers import AutoModelForVisualQuestionAnswering, pipeline

    from hf_vl.regions import RegionProcessor

    vqa = pipeline("vl-question-answering", model=AutoModelForVisualQuestionAnswering.from_pretrained(output_dir),
                   processor=RegionProcessor.from_pretrained(output_dir))  # fmt: skip
    answers = vqa(image=Image.new("RGB", (64, 64), "red"), question="what color is the shape?", top_k=3)
    assert len(answers) == 3 and all(answer["answer"] in config["label2id"] for answer in answers)
    again = tmp_path / "eval"
    _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(output_dir), "--output_dir", str(again),
          "--do_eval", *COMMON[COMMON.index("--max_eval_samples"):]], cwd=ROOT)  # fmt: skip
    first = json.loads((output_dir / "eval_results.json").read_text())["eval_vqa_score"]
    second = json.loads((again / "eval_results.json").read_text())["eval_vqa_score"]
    assert first == pytest.approx(second, abs=1e-6)
