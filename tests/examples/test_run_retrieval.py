"""examples/run_retrieval.py: a VLMo dual encoder trained with the Trainer on the easy-VQA caption set retrieves the
right caption for held-out images far above chance (a broken contrastive loss or encoder stays at chance: R@5 =
5/24), saves a Hub-ready folder and evaluates again from it to the same figures; the caption-level metrics on a
hand-built similarity."""

import json
import sys
from pathlib import Path

import pytest

from test_run_vqa import ROOT, _run

SCRIPT = ROOT / "examples" / "run_retrieval.py"
ARGS = ["--hidden_size", "64", "--num_hidden_layers", "2", "--image_size", "32", "--max_eval_samples", "240",
        "--per_device_train_batch_size", "64", "--learning_rate", "2e-3", "--warmup_steps", "10", "--report_to",
        "none", "--save_strategy", "no", "--dataloader_num_workers", "0", "--use_cpu", "true", "--seed", "0"]  # fmt: skip


def test_dual_encoder_learns_caption_retrieval_and_reloads(tmp_path):
    output_dir = tmp_path / "vlmo-retrieval"
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), "--max_steps", "100", *ARGS], cwd=ROOT)
    results = json.loads((output_dir / "retrieval_results.json").read_text())
    assert results["eval_num_captions"] == 24 and results["eval_num_images"] == 240
    assert results["eval_i2t_r5"] >= 0.6, (results, log[-2000:])  # chance: 5 / 24 = 0.21
    assert results["eval_i2t_r1"] >= 0.15, results  # chance: 1 / 24 = 0.04
    assert {"modeling_vlmo.py", "processor_config.json", "model.safetensors"} <= {p.name for p in output_dir.iterdir()}
    again = tmp_path / "eval"
    _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(output_dir), "--output_dir", str(again), "--do_eval",
          *ARGS], cwd=ROOT)  # fmt: skip
    reloaded = json.loads((again / "retrieval_results.json").read_text())
    assert reloaded == pytest.approx(results, abs=1e-6)


def test_caption_level_metrics_on_a_hand_built_similarity():
    sys.path.insert(0, str(ROOT / "examples"))
    import torch
    from run_retrieval import caption_retrieval_metrics

    class Encoder:  # texts -> one-hot rows; images -> the vectors they carry
        def __init__(self):
            self.vlmo = self

        def eval(self):
            return self

        def get_text_features(self, input_ids, attention_mask):
            return type("O", (), {"pooler_output": torch.eye(3)[: input_ids.shape[0]]})()

        def get_image_features(self, pixel_values):
            return type("O", (), {"pooler_output": pixel_values[:, 0, 0, :3]})()

    class Processor:
        def tokenizer(self, texts, **kwargs):
            return {"input_ids": torch.zeros(len(texts), 2, dtype=torch.long), "attention_mask": torch.ones(len(texts), 2)}

        def image_processor(self, images, **kwargs):
            return {"pixel_values": torch.stack([torch.tensor(image.vector).view(1, 1, 3) for image in images])}

    class Image:
        def __init__(self, vector):
            self.vector = vector

        def convert(self, mode):
            return self

    rows = {"caption": ["a", "b", "c", "a"],
            "image": [Image([1.0, 0, 0]), Image([0, 1.0, 0]), Image([1.0, 0, 0]), Image([0.9, 0, 0.1])]}

    class Dataset(dict):
        def __len__(self):
            return 4

        def __getitem__(self, key):
            return dict.__getitem__(self, key) if isinstance(key, str) else {"image": rows["image"][key]}

    metrics = caption_retrieval_metrics(Encoder(), Processor(), Dataset(rows), ks=(1, 2, 3))
    # image 2 ("c") looks like "a" and scores "b" and "c" equally: the tie counts against it, its caption ranks 3rd
    assert metrics["i2t_r1"] == 0.75 and metrics["i2t_r2"] == 0.75 and metrics["i2t_r3"] == 1.0
    assert metrics["t2i_p1"] == pytest.approx(2 / 3)  # "a" -> image 0, "b" -> image 1, "c" -> image 3 (wrong)
    assert Path(SCRIPT).is_file()


def test_region_cross_encoder_zero_shot_and_multiple_choice_fine_tuning(pretraining_run, tmp_path):
    """InterBERT through run_retrieval.py: a run_pretraining.py folder evaluated as is is zero-shot retrieval (the same
    figures run_pretraining reports for it); 4-way multiple-choice fine-tuning runs from it with the Trainer, and the
    fine-tuned folder (saved with its code) evaluates again to the same figures. (Retrieval quality is measured by
    benchmarks/pretraining_zero_shot.py: at this size cross-modal matching needs more steps than a test can run.)"""
    pretrained = pretraining_run("interbert")  # the pre-training test's run (tests/examples/conftest.py)
    pretraining = json.loads((pretrained / "all_results.json").read_text())
    common = ["--max_eval_samples", "192", "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true",
              "--dataloader_num_workers", "0", "--seed", "0"]  # fmt: skip
    zero_shot_dir = tmp_path / "zero-shot"
    _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(pretrained), "--output_dir", str(zero_shot_dir),
          "--do_eval", *common], cwd=ROOT)  # fmt: skip
    zero_shot = json.loads((zero_shot_dir / "retrieval_results.json").read_text())
    assert zero_shot["zero_shot"] is True and zero_shot["eval_num_images"] == 192
    for key in ("i2t_r1", "i2t_r5", "t2i_p1", "t2i_p5"):
        assert zero_shot[f"eval_{key}"] == pytest.approx(pretraining[f"zero_shot_{key}"], abs=1e-6), key

    tuned_dir = tmp_path / "tuned"
    log = _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(pretrained), "--output_dir", str(tuned_dir),
                "--max_train_samples", "768", "--max_steps", "20", "--per_device_train_batch_size", "16",
                "--learning_rate", "1e-3", "--warmup_steps", "4", *common, "--max_eval_samples", "96"],
               cwd=ROOT)  # fmt: skip
    tuned = json.loads((tuned_dir / "retrieval_results.json").read_text())
    assert tuned["zero_shot"] is False and tuned["train_loss"] > 0 and tuned["eval_num_images"] == 96, log[-2000:]
    assert 0 <= tuned["eval_i2t_r1"] <= tuned["eval_i2t_r5"] <= tuned["eval_i2t_r10"] <= 1
    assert {"modeling_interbert.py", "model.safetensors", "region_processor_config.json"} <= {
        path.name for path in tuned_dir.iterdir()}
    config = json.loads((tuned_dir / "config.json").read_text())
    assert config["architectures"] == ["InterBertForImageAndTextRetrieval"]
    again = tmp_path / "again"
    _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(tuned_dir), "--output_dir", str(again), "--do_eval",
          *common, "--max_eval_samples", "96"], cwd=ROOT)  # fmt: skip
    reloaded = json.loads((again / "retrieval_results.json").read_text())
    evaluated = {key: value for key, value in tuned.items() if key.startswith("eval_")}
    assert {key: reloaded[key] for key in evaluated} == pytest.approx(evaluated, abs=1e-6)
