"""examples/run_referring_expression.py: Switch-BERT from MiniLM, trained with the Trainer on easy-VQA mosaics, picks
the referred object's box (IoU >= 0.5) far above chance (a model that ignores the text or the regions cannot beat
~1/4: one distractor shares the colour, one the shape); the saved folder loads into the "vl-referring-expression"
pipeline, which picks the same box as the model. The mosaic builder's ground truth and proposals are checked
directly."""

import json
import sys

import numpy as np
import pytest
import torch
from transformers import pipeline

from test_run_vqa import ROOT, _run

SCRIPT = ROOT / "examples" / "run_referring_expression.py"
ARGS = ["--num_train_mosaics", "400", "--num_eval_mosaics", "100", "--text_num_layers", "1", "--max_steps", "100",
        "--per_device_train_batch_size", "32", "--learning_rate", "5e-4", "--warmup_steps", "10", "--report_to",
        "none", "--save_strategy", "no", "--eval_strategy", "no", "--dataloader_num_workers", "0", "--use_cpu",
        "true", "--seed", "0"]  # fmt: skip


def _script_module():
    sys.path.insert(0, str(ROOT / "examples"))
    import run_referring_expression

    return run_referring_expression


def test_mosaics_have_a_unique_referent_known_boxes_and_mixed_proposals():
    from hf_vl.data import load_easy_vqa_captions

    script = _script_module()
    split = load_easy_vqa_captions("test").select(range(200))
    canvases, expressions, boxes, ious, _ = script.build_mosaics(split, 20, 2, np.random.default_rng(0))
    assert len(canvases) == 20 and canvases[0].shape == (128, 128, 3) and boxes.shape == ious.shape + (4,)
    assert ious.shape[1] == 4 * (1 + 2 + 1)  # per object: its box, 2 jitters, its tile
    assert np.allclose(ious.max(1), 1.0)  # the referred object's own foreground box is a candidate
    assert ((ious >= 0.5) & (ious < 0.99)).any() and ((ious > 0.05) & (ious < 0.5)).any()  # overlaps on both sides
    assert all(text.startswith("the ") and len(text.split()) == 3 for text in expressions)
    # the ground-truth box is tight around the referred shape: inside it there is foreground on every border row/col
    truth = boxes[0][ious[0].argmax()].astype(int)
    crop = canvases[0][truth[1] : truth[3], truth[0] : truth[2]].astype(float)
    background = np.median(canvases[0][truth[1] - 1 : truth[3] + 1, max(truth[0] - 1, 0)], axis=0)
    assert np.abs(crop[[0, -1]] - background).sum(-1).max(1).min() > 30


def test_trains_reaches_high_accuracy_and_reloads_into_the_pipeline(tmp_path):
    output_dir = tmp_path / "refexp"
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *ARGS], cwd=ROOT)
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_samples"] == 100 and results["eval_num_candidates"] == 16
    assert results["eval_oracle_accuracy"] == 1.0 and results["eval_chance_accuracy"] < 0.15
    assert results["eval_accuracy_at_0.5"] >= 0.7, (results, log[-2000:])
    assert results["eval_mean_iou"] > 0.6 and "train_loss" in results and results["wall_time_s"] > 0
    # saved with its code (save_for_hub): the config names the head, the modelling file travels with the weights
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["SwitchBertForReferringExpression"] and "AutoConfig" in config["auto_map"]
    assert (output_dir / "modeling_switch_bert.py").is_file()

    import hf_vl  # noqa: F401  (registers the task)

    script = _script_module()
    refer = pipeline("vl-referring-expression", model=str(output_dir), device="cpu")
    model, processor, extractor = refer.model, refer.processor, refer.box_feature_extractor
    from hf_vl.data import load_easy_vqa_captions

    split = load_easy_vqa_captions("test").select(range(300))
    canvases, expressions, boxes, ious, _ = script.build_mosaics(split, 8, 2, np.random.default_rng(1))
    hits = 0
    for canvas, expression, candidates, candidate_ious in zip(canvases, expressions, boxes, ious):
        result = refer(canvas, expression=expression, boxes=candidates.tolist())
        inputs = processor(text=expression, **extractor(canvas, candidates))
        with torch.no_grad():
            best = int(model(**inputs).logits[0].argmax())
        assert result["region_index"] == best
        assert result["box"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), np.rint(candidates[best]).astype(int).tolist()))
        hits += candidate_ious[best] >= 0.5
    assert hits >= 5, hits
