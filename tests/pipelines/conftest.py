"""Fixtures of the pipeline tests: tiny METER checkpoints (VQA, retrieval, pre-training/ITM) saved once per session
with a real WordPiece tokenizer, and easy-VQA images as inputs."""

import pytest
import torch

from hf_vl.pipelines import register_pipelines
from vl_pipeline_test_utils import build_tiny_meter, easy_vqa_image_paths, tiny_meter_processor

# `import hf_vl` registers the pipelines; registering again is a no-op (kept so these tests do not depend on it)
register_pipelines()


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """The tiny models run many small matmuls: one intra-op thread is several times faster than a busy thread pool
    (and keeps the suite well under a minute on shared CPUs). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def image_paths():
    return easy_vqa_image_paths(4)


@pytest.fixture(scope="session")
def processor():
    return tiny_meter_processor()


def _saved(tmp_path_factory, head):
    folder = tmp_path_factory.mktemp(f"tiny-meter-{head}")
    model = build_tiny_meter(head, str(folder))
    return str(folder), model


@pytest.fixture(scope="session")
def vqa_checkpoint(tmp_path_factory):
    return _saved(tmp_path_factory, "vqa")


@pytest.fixture(scope="session")
def retrieval_checkpoint(tmp_path_factory):
    return _saved(tmp_path_factory, "retrieval")


@pytest.fixture(scope="session")
def pretraining_checkpoint(tmp_path_factory):
    return _saved(tmp_path_factory, "pretraining")
