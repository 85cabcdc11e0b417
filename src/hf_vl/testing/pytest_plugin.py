"""pytest fixtures around :class:`~hf_vl.testing.hub_server.LocalHubServer`.

Enable them in a top-level ``conftest.py`` (or a test module)::

    pytest_plugins = ["hf_vl.testing.pytest_plugin"]

Fixtures:

* ``local_hub`` (session): the running server. Tests share it, so use ``local_hub.new_repo_id("name")``
  for repository ids that cannot collide.
* ``local_hub_env`` (function): ``hub_env(local_hub)``, a complete environment for a subprocess (fresh,
  empty ``HF_HOME``); use it with ``run_python(code, local_hub_env, cwd=tmp_path)``.
* ``patched_local_hub`` (function): the server, with this process's ``huggingface_hub``/``transformers``
  pointed at it for the duration of the test (``patched_hub_endpoint``, fresh cache under ``tmp_path``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .hub_server import LocalHubServer, hub_env, patched_hub_endpoint


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHubServer]:
    """A :class:`LocalHubServer` running for the whole test session (repos under pytest's tmp dir)."""
    with LocalHubServer(root_dir=tmp_path_factory.mktemp("local_hub")) as server:
        yield server


@pytest.fixture
def local_hub_env(local_hub: LocalHubServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a subprocess talking to ``local_hub``, with its own empty ``HF_HOME``."""
    return hub_env(local_hub, hf_home=tmp_path_factory.mktemp("hf_home"))


@pytest.fixture
def patched_local_hub(local_hub: LocalHubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHubServer]:
    """``local_hub`` with the in-process Hub clients pointed at it (see ``patched_hub_endpoint``)."""
    with patched_hub_endpoint(local_hub, cache_dir=tmp_path_factory.mktemp("hf_cache")) as server:
        yield server
