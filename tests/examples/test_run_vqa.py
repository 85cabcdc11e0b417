"""examples/run_vqa.py end to end: a short Trainer run on easy-VQA (one process and torchrun with two gloo processes),
the saved Hub-ready folder, and loading it back with trust_remote_code in a process that cannot import hf_vl."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_vl.testing import run_python

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "run_vqa.py"
TINY_ARGS = [
    "--max_train_samples", "96", "--max_eval_samples", "48", "--max_steps", "3",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
    "--text_num_layers", "1", "--vision_hidden_size", "32", "--vision_num_layers", "1", "--hidden_size", "32",
    "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true",
    "--dataloader_num_workers", "0", "--seed", "0",
]


# one example process at a time: it may use two cores (1.6x faster than one); torchrun's processes get one each
THREADS = min(2, os.cpu_count() or 1)


def _env(threads=THREADS):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false")  # fmt: skip
    env.pop("PYTHONPATH", None)
    return env


def _run(command, cwd, threads=THREADS):
    result = subprocess.run(command, cwd=cwd, env=_env(threads), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run_vqa") / "meter-easy-vqa"
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *TINY_ARGS], cwd=ROOT)
    return output_dir, log


def test_saves_a_hub_ready_folder(trained):
    output_dir, log = trained
    files = set(os.listdir(output_dir))
    assert {"model.safetensors", "config.json", "processor_config.json", "README.md", "eval_results.json",
            "modeling_meter.py", "configuration_meter.py", "processing_meter.py", "image_processing_meter.py"} <= files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "meter" and len(config["id2label"]) == 13
    assert config["auto_map"]["AutoModelForVisualQuestionAnswering"] == "modeling_meter.MeterForQuestionAnswering"
    card = (output_dir / "README.md").read_text()
    assert "$" not in card.split("```bibtex")[0], "unfilled model card placeholder"
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= results["eval_vqa_score"] <= 1.0
    assert f"{results['eval_vqa_score']:.4f}" in card
    printed = re.search(r"Test VQA accuracy \(test, 48 questions\): ([0-9.]+)", log)
    assert printed and abs(float(printed.group(1)) - results["eval_vqa_score"]) < 1e-4
    assert f"Hub-ready model folder: {output_dir}" in log


def test_saved_folder_loads_with_trust_remote_code_without_hf_vl(trained, tmp_path):
    output_dir, _ = trained
    env = _env()
    run_python(
        f"""
        import sys; sys.modules["hf_vl"] = None  # only the folder's own code may build the model
        import torch
        from PIL import Image
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        processor = AutoProcessor.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        inputs = processor(images=Image.new("RGB", (64, 64), "red"), text="what color is the shape?", return_tensors="pt")
        with torch.no_grad():
            answer = model.config.id2label[model(**inputs).logits.argmax(-1).item()]
        assert answer in {{"circle", "rectangle", "triangle", "yes", "no", "red", "green", "blue", "black", "gray",
                           "teal", "brown", "yellow"}}, answer
        """,
        env=env,
        cwd=tmp_path,
    )


def test_evaluates_a_saved_checkpoint(trained, tmp_path):
    output_dir, _ = trained
    log = _run(
        [sys.executable, str(SCRIPT), "--model_name_or_path", str(output_dir), "--output_dir", str(tmp_path / "eval"),
         "--num_train_epochs", "0", *TINY_ARGS[:4], *TINY_ARGS[-10:]],
        cwd=ROOT,
    )
    first = json.loads((output_dir / "eval_results.json").read_text())["eval_vqa_score"]
    again = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["eval_vqa_score"]
    assert abs(first - again) < 1e-6, log[-2000:]


def test_torchrun_two_cpu_processes(tmp_path):
    output_dir = tmp_path / "ddp"
    log = _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(SCRIPT), "--output_dir", str(output_dir), "--ddp_backend", "gloo", *TINY_ARGS],
        cwd=ROOT, threads=1,
    )
    # 2 processes x 8 per device
    assert "with 2 process(es), global batch size 16" in log, log[-3000:]
    assert (output_dir / "model.safetensors").is_file()
    assert log.count("Test VQA accuracy") == 1  # only the main process reports and saves
