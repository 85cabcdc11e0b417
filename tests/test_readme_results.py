"""The README quotes the benchmark result files, never a hand-typed number: every file in benchmarks/results/ is named
in the README, and the main job's figures in the README are the ones in benchmarks/results/main_job.json."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[path.name for path in RESULTS])
def test_every_result_file_is_quoted_in_the_readme(path):
    assert f"benchmarks/results/{path.name}" in README


def _paragraph_quoting(name: str) -> str:
    paragraphs = [p for p in README.split("\n\n") if f"benchmarks/results/{name}" in p and re.search(r"\d\.\d{3}", p)]
    assert paragraphs, f"no README paragraph quotes figures from benchmarks/results/{name}"
    return "\n".join(paragraphs)


def test_the_main_job_figures_in_the_readme_are_the_result_file():
    result = json.loads((ROOT / "benchmarks" / "results" / "main_job.json").read_text())
    text = _paragraph_quoting("main_job.json")
    assert f"test VQA score {result['vqa_score']:.4f}" in text
    for kind, score in result["per_question_type"].items():
        assert f"{kind} {score:.4f}" in text, kind
    assert f"wall time {result['wall_time_s'] / 60:.1f} min" in text
    assert result["questions"] == 9673 and "9,673" in text


def test_the_retrieval_benchmark_figures_in_the_readme_are_the_result_files():
    pipeline = json.loads((ROOT / "benchmarks" / "results" / "retrieval_pipeline.json").read_text())
    text = README[README.index("benchmarks/results/retrieval_pipeline.json") :][:200]
    for figure in (f"{pipeline['seconds_encode_query_once']:.2f} s", f"{pipeline['seconds_encode_per_pair']:.2f} s",
                   f"{pipeline['speedup']:.2f}x"):
        assert figure in text, figure
    scaling = json.loads((ROOT / "benchmarks" / "results" / "vlmo_retrieval_scaling.json").read_text())
    largest = max(scaling["rows"], key=lambda row: row["pairs"])
    ratio = largest["fusion_over_dual"]
    assert re.search(rf"\b{round(ratio)}x|\b{ratio}x", README), ratio


EASY_VQA = [path for path in RESULTS if path.name.startswith("easy_vqa_")]


@pytest.mark.parametrize("path", EASY_VQA, ids=[path.name for path in EASY_VQA])
def test_every_easy_vqa_score_in_the_readme_is_its_result_file(path):
    result = json.loads(path.read_text())
    text = _paragraph_quoting(path.name)
    assert f"{result['vqa_score']:.4f}" in text, f"README quotes a stale score for {path.name}"
