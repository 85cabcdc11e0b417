"""examples/run_pretraining.py: InterBERT (MSM + MRM + ITM) and Switch-BERT (MLM + MRC-KL + ITM) pre-trained with the
Trainer on the offline easy-VQA caption set; every objective is logged; the pre-trained ITM head, untouched, ranks
held-out images' captions above chance (zero-shot retrieval) while a model that cannot see the regions stays at
chance; the saved folder (model, region processor, codebook) evaluates again to the same figures."""

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
def test_pretraining_logs_every_objective_and_gives_zero_shot_retrieval(model_type, objectives, tmp_path):
    output_dir = tmp_path / model_type
    log = _run([sys.executable, str(SCRIPT), "--model_type", model_type, "--output_dir", str(output_dir),
                "--max_steps", "60", *ARGS], cwd=ROOT)  # fmt: skip
    results = json.loads((output_dir / "all_results.json").read_text())
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    for objective in objectives:
        assert f"train_{objective}_loss" in results, results
        logged = [entry[f"{objective}_loss"] for entry in history if f"{objective}_loss" in entry]
        assert len(logged) == 6, history  # one mean per logging interval
    # the text objective and ITM learn (ITM from log 2 = 0.69)
    text_losses = [entry[f"{objectives[0]}_loss"] for entry in history if f"{objectives[0]}_loss" in entry]
    assert text_losses[-1] < 0.5 * text_losses[0], text_losses
    assert results["zero_shot_num_captions"] == 24 and results["zero_shot_num_images"] == 192
    assert results["zero_shot_i2t_r5"] >= 2 * results["zero_shot_i2t_chance_r5"], (results, log[-3000:])
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


def test_a_model_blind_to_the_regions_stays_at_chance(monkeypatch, tmp_path):
    """The learning test's control: the same pre-training with the region features and boxes zeroed before the model
    sees them cannot learn which caption fits an image, so zero-shot retrieval stays near chance."""
    run_pretraining = _examples_module()
    original = run_pretraining.encode_regions

    def blind(dataset, extractor, batch_size=256):
        regions = original(dataset, extractor, batch_size)
        return {**regions, "visual_feats": torch.zeros_like(regions["visual_feats"]),
                "visual_pos": torch.zeros_like(regions["visual_pos"]) + 0.5}  # fmt: skip

    monkeypatch.setattr(run_pretraining, "encode_regions", blind)
    monkeypatch.setattr(run_pretraining.RegionCodebook, "fit",
                        classmethod(lambda cls, feats, k, **kw: cls(torch.randn(k, feats.shape[-1]),
                                                                   torch.zeros(feats.shape[-1]),
                                                                   torch.ones(feats.shape[-1]))))  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["run_pretraining.py", "--model_type", "interbert", "--output_dir",
                                      str(tmp_path / "blind"), "--max_steps", "30", *ARGS])  # fmt: skip
    results = run_pretraining.main()
    assert results["zero_shot_i2t_r5"] <= 1.5 * results["zero_shot_i2t_chance_r5"], results
