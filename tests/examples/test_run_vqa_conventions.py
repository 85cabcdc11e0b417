"""examples/run_vqa.py follows transformers' example-script conventions: --do_train / --do_eval, resuming from the last
checkpoint in --output_dir (bitwise the same weights as an uninterrupted run on CPU), log/save_metrics, save_state,
refusing a non-empty --output_dir without checkpoints, and --push_to_hub of the Hub-ready folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_vl.testing import hub_env

from test_run_vqa import ROOT, SCRIPT, TINY_ARGS, _env, _run

ARGS = [arg for arg in TINY_ARGS if arg not in ("--save_strategy", "no")]
ARGS[ARGS.index("--max_steps") + 1] = "4"
CHECKPOINTING = ["--save_strategy", "steps", "--save_steps", "2", "--do_train", "--do_eval"]


def test_interrupted_and_resumed_run_reaches_the_same_weights(tmp_path):
    straight = tmp_path / "straight"
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(straight), *ARGS, *CHECKPOINTING], cwd=ROOT)
    assert (straight / "checkpoint-2").is_dir() and (straight / "checkpoint-4").is_dir()
    for name in ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json"):
        assert (straight / name).is_file(), name
    assert json.loads((straight / "trainer_state.json").read_text())["global_step"] == 4
    assert "***** train metrics *****" in log and "***** eval metrics *****" in log

    # an interrupted run leaves its output folder with checkpoint-2 only; the same command resumes from it
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(resumed), *ARGS, *CHECKPOINTING], cwd=ROOT)
    assert "Resuming training from the last checkpoint" in log
    first, second = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].equal(second[key]), key  # bitwise on CPU


def test_non_empty_output_dir_without_checkpoint_needs_overwrite(tmp_path):
    output_dir = tmp_path / "used"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("something else")
    command = [sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *ARGS]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "--overwrite_output_dir" in result.stderr
    _run([*command, "--overwrite_output_dir", "--do_train", "--max_steps", "1"], cwd=ROOT)
    assert (output_dir / "model.safetensors").is_file() and not (output_dir / "eval_results.json").exists()


def test_push_to_hub_uploads_the_hub_ready_folder(tmp_path, local_hub):
    output_dir = tmp_path / "pushed"
    repo = local_hub.new_repo_id("meter-easy-vqa")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home", base=dict(_env(), HF_DATASETS_OFFLINE="1"))
    command = [sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *ARGS, "--max_steps", "1",
               "--push_to_hub", "--hub_model_id", repo]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Pushed to the Hub: {repo}" in result.stdout
    files = set(local_hub.list_files(repo))
    assert {"config.json", "model.safetensors", "modeling_meter.py", "README.md", "processor_config.json"} <= files
