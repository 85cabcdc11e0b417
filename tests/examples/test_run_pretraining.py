"""examples/run_pretraining.py: InterBERT (MSM + MRM + ITM) and Switch-BERT (MLM + MRC-KL + ITM) pre-trained with the
Trainer on the offline easy-VQA caption set; every objective is logged; zero-shot retrieval with the pre-trained ITM
head is evaluated and the saved folder (model, region processor, codebook) evaluates again to the same figures.

Cross-modal learning needs a few hundred steps at this size (measured: 100 steps of a 2-layer model do not yet use
the regions: its masked-word loss equals a region-blind model's), too slow for the suite:
`benchmarks/pretraining_zero_shot.py` measures the zero-shot recalls against chance on the full recipe
(`benchmarks/results/pretraining_<model>.json`), and tests/models/interbert/test_interbert_training.py holds the fast
ITM -> zero-shot learning test on synthetic regions."""

import json
import sys

import pytest
import torch

from test_run_vqa import ROOT, _run

SCRIPT = ROOT / "examples" / "run_pretraining.py"
ARGS = ["--text_num_layers", "2", "--pooler_size", "64", "--num_region_classes", "16", "--max_train_samples", "1024",
        "--max_eval_samples", "192", "--per_device_train_batch_size", "64", "--learning_rate", "1e-3",
        "--warmup_steps", "5", "--logging_steps", "10", "--report_to", "none", "--save_strategy", "no",
        "--dataloader_num_workers", "0", "--use_cpu", "true", "--seed", "0", "--disable_tqdm", "true"]  # fmt: skip


def _examples_module():
    sys.path.insert(0, str(ROOT / "examples"))
    import run_pretraining

    return run_pretraining


@pytest.mark.parametrize("model_type, objectives", [("interbert", ("msm", "mrm", "itm")),
                                                    ("switch_bert", ("mlm", "mrm", "itm"))])  # fmt: skip
def test_pretraining_logs_every_objective_and_evaluates_zero_shot_retrieval(model_type, objectives, pretraining_run,
                                                                          tmp_path):
    output_dir = pretraining_run(model_type)  # 30 steps of ARGS (tests/examples/conftest.py)
    results = json.loads((output_dir / "all_results.json").read_text())
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    for objective in objectives:
        assert f"train_{objective}_loss" in results, results
        logged = [entry[f"{objective}_loss"] for entry in history if f"{objective}_loss" in entry]
        assert len(logged) == 3 and all(value == value for value in logged), history  # a mean per interval, no NaN
    text_losses = [entry[f"{objectives[0]}_loss"] for entry in history if f"{objectives[0]}_loss" in entry]
    assert text_losses[-1] < 0.5 * text_losses[0], text_losses
    assert results["zero_shot_num_captions"] == 24 and results["zero_shot_num_images"] == 192
    assert results["zero_shot_i2t_chance_r5"] == pytest.approx(5 / 24)
    assert 0 <= results["zero_shot_i2t_r1"] <= results["zero_shot_i2t_r5"] <= results["zero_shot_i2t_r10"] <= 1
    files = {path.name for path in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "region_codebook.json", "region_codebook.safetensors"} <= files
    assert f"modeling_{model_type}.py" in files
    again = tmp_path / "eval"
    _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(output_dir), "--output_dir", str(again),
          "--do_eval", *ARGS], cwd=ROOT)  # fmt: skip
    reloaded = json.loads((again / "all_results.json").read_text())
    for key, value in results.items():
        if key.startswith("zero_shot_"):
            assert reloaded[key] == pytest.approx(value, abs=1e-6), key


def test_the_collator_moves_region_targets_with_the_swapped_regions():
    """ITM negatives swap regions between examples: the masked-region targets must follow the regions, masked regions
    are zeroed, and two images with one caption are never each other's negatives."""
    run_pretraining = _examples_module()
    from transformers import AutoTokenizer

    from hf_vl.training import local_pretrained_path

    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))
    args = run_pretraining.PretrainingModelArguments(model_type="interbert", itm_negative_probability=1.0)
    collator = run_pretraining.build_collator("interbert", tokenizer, args, seed=0)
    examples = []
    for index in range(8):
        feats = torch.full((4, 3), float(index + 1))
        boxes = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]])
        targets = torch.full((4, 5), float(index))
        examples.append({**dict(tokenizer(f"a caption {index % 4}")), "visual_feats": feats, "visual_pos": boxes,
                         "visual_attention_mask": torch.ones(4, dtype=torch.long), "region_labels": targets,
                         "caption_id": index % 4})  # fmt: skip
    batch = collator(examples)
    assert "caption_id" not in batch and batch["itm_labels"].tolist() == [0] * 8  # every pair a negative
    for row in range(8):
        source = int(batch["mrm_labels"][row, 0, 0])  # whose regions this row got
        assert source % 4 != row % 4  # never an image with the same caption
        unmasked = ~batch["mrm_mask"][row]
        assert torch.all(batch["visual_feats"][row][unmasked] == source + 1)  # regions and targets moved together
        assert torch.all(batch["visual_feats"][row][batch["mrm_mask"][row]] == 0)  # masked regions are zeroed
    assert batch["mlm_labels"].shape == batch["input_ids"].shape
