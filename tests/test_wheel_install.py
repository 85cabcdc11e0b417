"""Packaging: hf_vl works installed from its wheel, and the declared dependency ranges cover the tested versions.

The wheel test builds ``hf_vl`` from a copy of the source tree (``pip wheel --no-deps --no-build-isolation``),
installs it into a fresh virtual environment and publishes a tiny METER model with its model card from there.
The fresh environment reuses the heavy dependencies of the test interpreter (torch, transformers, ...) through a
``.pth`` file naming that interpreter's site-packages; a ``.pth`` line only adds a path, so the ``.pth`` files
inside it (among them the editable install of hf_vl) are not run and only the wheel's hf_vl can be imported.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli on Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "src" / "hf_vl"


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONNOUSERSITE="1")
    return env


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The hf_vl wheel, built from a copy of the source tree (the working tree gets no build/ or egg-info)."""
    root = tmp_path_factory.mktemp("wheel_build")
    source = root / "source"
    source.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", source)
    shutil.copy2(REPO_ROOT / "README.md", source)
    shutil.copytree(
        PACKAGE_DIR, source / "src" / "hf_vl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    dist = root / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dist), str(source)],
        cwd=root,
        timeout=180,
    )  # fmt: skip
    wheels = list(dist.glob("hf_vl-*.whl"))
    assert len(wheels) == 1, f"expected one hf_vl wheel in {dist}, got {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed; heavy dependencies come from this interpreter's."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=venv.parent, timeout=60).stdout.strip())  # fmt: skip
    dependency_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "_hf_vl_test_dependencies.pth").write_text("".join(f"{path}\n" for path in dependency_dirs))
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=venv.parent,
        timeout=180,
    )
    return venv


def test_wheel_ships_every_model_card_template(wheel):
    templates = sorted(path.name for path in (PACKAGE_DIR / "model_cards").glob("*.md"))
    assert "meter.md" in templates
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for template in templates:
            assert f"hf_vl/model_cards/{template}" in names, f"{template} is missing from {wheel.name}"
            shipped = archive.read(f"hf_vl/model_cards/{template}").decode("utf-8")
            assert shipped == (PACKAGE_DIR / "model_cards" / template).read_text(encoding="utf-8")
    # One source of truth: the top-level folder of the layout points to the package and holds no copy.
    top_level = {path.name for path in (REPO_ROOT / "model_cards").iterdir()}
    assert not top_level & set(templates), f"model_cards/ duplicates package templates: {top_level & set(templates)}"


def test_save_for_hub_with_model_card_from_the_installed_wheel(fresh_venv):
    script = textwrap.dedent(
        """
        import json, os, sys
        venv = sys.argv[1]
        import hf_vl
        assert os.path.realpath(hf_vl.__file__).startswith(os.path.realpath(venv) + os.sep), hf_vl.__file__
        import torch
        from transformers import AutoTokenizer
        from hf_vl import MeterConfig, MeterForQuestionAnswering, MeterImageProcessor, MeterProcessor
        from hf_vl.hub import render_model_card, save_for_hub
        from hf_vl.training import local_pretrained_path

        torch.manual_seed(0)
        config = MeterConfig(
            text_config=dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=4, intermediate_size=37, max_position_embeddings=64),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8),
            hidden_size=32, num_attention_heads=4, intermediate_size=37, num_fusion_layers=1,
            id2label={0: "yes", 1: "no"}, label2id={"yes": 0, "no": 1},
        )
        model = MeterForQuestionAnswering(config).eval()
        processor = MeterProcessor(MeterImageProcessor(resolution=32),
                                   AutoTokenizer.from_pretrained(local_pretrained_path("minilm")))
        card = render_model_card(
            model, model_name="wheel-meter-vqa", repo_id="user/wheel-meter-vqa", intended_uses="Testing the wheel.",
            image_size=32, normalization="CLIP", max_text_len=40, training_data="none", evaluation_results="none",
            provenance="random initialisation",
        )
        folder = os.path.join(os.getcwd(), "saved")
        save_for_hub(model, folder, processor=processor, model_card=card)
        print(json.dumps({"hf_vl": hf_vl.__file__, "files": sorted(os.listdir(folder))}))
        """
    )
    work = fresh_venv.parent / "work"
    work.mkdir()
    result = _run([str(fresh_venv / "bin" / "python"), "-c", script, str(fresh_venv)], cwd=work, timeout=240)
    saved = work / "saved"
    files = {path.name for path in saved.iterdir()}
    for name in ("README.md", "config.json", "model.safetensors", "configuration_meter.py", "modeling_meter.py",
                 "processing_meter.py", "image_processing_meter.py"):  # fmt: skip
        assert name in files, f"{name} missing from the saved folder ({sorted(files)}); output:\n{result.stdout}"
    card = (saved / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "# wheel-meter-vqa" in card and "user/wheel-meter-vqa" in card
    assert "MeterForQuestionAnswering" in card and not re.search(r"\$\{?[A-Za-z_]", card)  # every placeholder filled


# ----------------------------------------------------------------------------------------------
# Declared dependency ranges
# ----------------------------------------------------------------------------------------------


def _declared_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += [Requirement(line) for line in extra]
    return [requirement for requirement in requirements if requirement.marker is None or requirement.marker.evaluate()]


def test_installed_versions_satisfy_the_declared_ranges():
    """The ranges in pyproject.toml include the versions this test suite runs with."""
    requirements = _declared_requirements()
    names = {requirement.name for requirement in requirements}
    assert {"torch", "transformers", "accelerate", "datasets", "huggingface-hub", "peft"} <= names
    outside = []
    for requirement in requirements:
        installed = importlib.metadata.version(requirement.name)
        if not requirement.specifier.contains(installed, prereleases=True):
            outside.append(f"{requirement.name} {installed} not in {requirement.specifier}")
    assert not outside, "installed versions outside the declared ranges: " + "; ".join(outside)


def _has_processor_level_kwargs_defaults() -> bool:
    from transformers import ProcessorMixin

    return "images_kwargs" in getattr(ProcessorMixin, "__annotations__", {})


def _has_attribute(module: str, name: str):
    return lambda: hasattr(importlib.import_module(module), name)


#: Newest transformers APIs hf_vl uses, with the first release that has them (read from the released wheels:
#: `pip download transformers==X --no-deps`, then the unpacked wheel on PYTHONPATH).
TRANSFORMERS_API_SINCE = {
    # MeterProcessor: `_merge_kwargs` without `ProcessingKwargs._defaults`, defaults on the processor class.
    "ProcessorMixin processor-level *_kwargs defaults": (_has_processor_level_kwargs_defaults, "5.23.0"),
    "SubConfigSpec": (_has_attribute("transformers.configuration_utils", "SubConfigSpec"), "5.20.0"),
    "PilBackend": (_has_attribute("transformers.image_processing_backends", "PilBackend"), "5.4.0"),
}


def test_transformers_lower_bound_has_every_api_hf_vl_uses():
    (transformers,) = [requirement for requirement in _declared_requirements() if requirement.name == "transformers"]
    lower_bounds = [Version(spec.version) for spec in transformers.specifier if spec.operator in (">=", "==", "~=")]
    assert len(lower_bounds) == 1, f"transformers needs one lower bound, got {transformers.specifier}"
    for api, (is_available, since) in TRANSFORMERS_API_SINCE.items():
        assert is_available(), f"{api} is missing from the installed transformers"
        assert lower_bounds[0] >= Version(since), f"{api} needs transformers>={since}, got {transformers}"
