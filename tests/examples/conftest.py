import sys

import pytest

from test_run_vqa import ROOT, _run


@pytest.fixture(scope="session")
def pretraining_run(tmp_path_factory):
    """`pretraining_run(model_type)`: the folder of one short examples/run_pretraining.py run (test_run_pretraining's
    ARGS, 30 steps), made once per session: the pre-training test checks it, the retrieval test fine-tunes from it."""
    from test_run_pretraining import ARGS

    folders = {}

    def run(model_type: str):
        if model_type not in folders:
            output_dir = tmp_path_factory.mktemp("run_pretraining") / model_type
            _run([sys.executable, str(ROOT / "examples" / "run_pretraining.py"), "--model_type", model_type,
                  "--output_dir", str(output_dir), "--max_steps", "30", *ARGS], cwd=ROOT)  # fmt: skip
            folders[model_type] = output_dir
        return folders[model_type]

    return run
