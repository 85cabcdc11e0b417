"""Tests of hf_vl.testing.LocalHubServer: push_to_hub / from_pretrained end to end, remote code, errors, history."""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from hf_vl.testing import LocalHubServer, git_blob_sha1, hub_env, patched_hub_endpoint, run_python

pytest_plugins = ["hf_vl.testing.pytest_plugin"]


# ------------------------------------------------------------------------------------------------------------
# (1) + (2): push in one fresh process, load in another. Importing torch + transformers dominates the run time,
# so ONE process pushes both models and ONE process loads both; each test then checks its own model.
# ------------------------------------------------------------------------------------------------------------

_CONFIGURATION = """
from transformers import PreTrainedConfig


class TinyXConfig(PreTrainedConfig):
    model_type = "tinyx"

    hidden_size: int = 8
    scale: float = 2.0
"""

_UTILS = """
import torch


def scaled_tanh(x, scale):
    return torch.tanh(x) * scale
"""

_MODELING = """
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tinyx import TinyXConfig
from .utils_tinyx import scaled_tanh


class TinyXPreTrainedModel(PreTrainedModel):
    config_class = TinyXConfig
    base_model_prefix = "tinyx"


class TinyXModel(TinyXPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, inputs_embeds):
        return BaseModelOutput(last_hidden_state=scaled_tanh(self.proj(inputs_embeds), self.config.scale))
"""

BERT_REPO = "user/tiny-bert"


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory):
    """Push a tiny BERT and a tiny remote-code model from one fresh process; outputs saved to disk."""
    tmp = tmp_path_factory.mktemp("push")
    tinyx_repo = local_hub.new_repo_id("tinyx")
    src = tmp / "src"
    pkg = src / "tinyx_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configuration_tinyx.py").write_text(_CONFIGURATION)
    (pkg / "utils_tinyx.py").write_text(_UTILS)
    (pkg / "modeling_tinyx.py").write_text(_MODELING)
    env = hub_env(local_hub)
    run_python(
        f"""
        import torch
        from huggingface_hub import constants
        from transformers import BertConfig, BertModel
        from tinyx_pkg.configuration_tinyx import TinyXConfig
        from tinyx_pkg.modeling_tinyx import TinyXModel

        assert constants.ENDPOINT == {local_hub.endpoint!r}, constants.ENDPOINT

        # (1) a plain transformers model
        torch.manual_seed(0)
        config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37, max_position_embeddings=64)
        bert = BertModel(config).eval()
        input_ids = torch.randint(0, 99, (2, 7))
        with torch.no_grad():
            out = bert(input_ids=input_ids).last_hidden_state
        torch.save({{"input_ids": input_ids, "out": out}}, {str(tmp / "bert_pushed.pt")!r})
        bert.push_to_hub({BERT_REPO!r})

        # (2) a custom model whose code travels with the checkpoint
        TinyXConfig.register_for_auto_class()
        TinyXModel.register_for_auto_class("AutoModel")
        torch.manual_seed(0)
        tinyx = TinyXModel(TinyXConfig(hidden_size=8, scale=3.0)).eval()
        x = torch.randn(2, 5, 8)
        with torch.no_grad():
            out = tinyx(inputs_embeds=x).last_hidden_state
        torch.save({{"x": x, "out": out}}, {str(tmp / "tinyx_pushed.pt")!r})
        tinyx.push_to_hub({tinyx_repo!r})
        """,
        env=env,
        cwd=src,  # sys.path[0]: tinyx_pkg is importable here, and only here
    )
    return {"dir": tmp, "tinyx_repo": tinyx_repo, "push_env": env}


@pytest.fixture(scope="module")
def loaded(local_hub, pushed, tmp_path_factory):
    """Load both models with AutoModel.from_pretrained in another fresh process, elsewhere, empty cache."""
    tmp = pushed["dir"]
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = hub_env(local_hub)  # a new, empty HF_HOME: nothing cached
    env.pop("PYTHONPATH", None)
    run_python(
        f"""
        import importlib.util
        import torch
        from transformers import AutoModel

        assert importlib.util.find_spec("tinyx_pkg") is None, "the local package must not be importable here"

        saved = torch.load({str(tmp / "bert_pushed.pt")!r}, weights_only=True)
        bert = AutoModel.from_pretrained({BERT_REPO!r}).eval()
        assert type(bert).__name__ == "BertModel", type(bert)
        with torch.no_grad():
            out = bert(input_ids=saved["input_ids"]).last_hidden_state
        torch.save({{"out": out}}, {str(tmp / "bert_loaded.pt")!r})

        saved = torch.load({str(tmp / "tinyx_pushed.pt")!r}, weights_only=True)
        tinyx = AutoModel.from_pretrained({pushed["tinyx_repo"]!r}, trust_remote_code=True).eval()
        assert type(tinyx).__name__ == "TinyXModel", type(tinyx)
        assert type(tinyx).__module__.startswith("transformers_modules."), type(tinyx).__module__
        assert tinyx.config.scale == 3.0
        with torch.no_grad():
            out = tinyx(inputs_embeds=saved["x"]).last_hidden_state
        torch.save({{"out": out}}, {str(tmp / "tinyx_loaded.pt")!r})
        """,
        env=env,
        cwd=elsewhere,
    )
    return {"load_env": env}


def _outputs(tmp: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    pushed = torch.load(tmp / f"{name}_pushed.pt", weights_only=True)["out"]
    loaded = torch.load(tmp / f"{name}_loaded.pt", weights_only=True)["out"]
    return pushed, loaded


def test_push_to_hub_then_from_pretrained_in_fresh_processes(local_hub, pushed, loaded):
    files = local_hub.list_files(BERT_REPO)
    assert {"config.json", "model.safetensors", "README.md", ".gitattributes"} <= set(files)
    assert local_hub.commits(BERT_REPO)[0]["title"] == "Upload model"
    pushed_out, loaded_out = _outputs(pushed["dir"], "bert")
    torch.testing.assert_close(loaded_out, pushed_out, rtol=0, atol=0)
    # the loading process really downloaded from the server (its own cache), at the pushed commit
    assert loaded["load_env"]["HF_HOME"] != pushed["push_env"]["HF_HOME"]
    snapshot = Path(loaded["load_env"]["HF_HOME"]) / "hub" / "models--user--tiny-bert" / "snapshots"
    assert (snapshot / local_hub.head(BERT_REPO) / "model.safetensors").is_file()
    assert not any("xet" in path.lower() or "lfs" in path.lower() for _, path, _ in local_hub.requests)


def test_trust_remote_code_round_trip(local_hub, pushed, loaded):
    repo_id = pushed["tinyx_repo"]
    files = set(local_hub.list_files(repo_id))
    assert {"configuration_tinyx.py", "modeling_tinyx.py", "utils_tinyx.py", "config.json"} <= files
    config = json.loads(local_hub.read_file(repo_id, "config.json"))
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tinyx.TinyXConfig",
        "AutoModel": "modeling_tinyx.TinyXModel",
    }
    pushed_out, loaded_out = _outputs(pushed["dir"], "tinyx")
    torch.testing.assert_close(loaded_out, pushed_out, rtol=0, atol=0)
    modules = Path(loaded["load_env"]["HF_HOME"]) / "modules" / "transformers_modules"
    assert list(modules.rglob("modeling_tinyx.py")) and list(modules.rglob("utils_tinyx.py"))


# ------------------------------------------------------------------------------------------------------------
# (3) errors, in-process through patched_hub_endpoint
# ------------------------------------------------------------------------------------------------------------


def test_not_found_errors_in_process(local_hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id = local_hub.create_repo(local_hub.new_repo_id("errors"))
    with patched_hub_endpoint(local_hub, cache_dir=tmp_path / "cache"):
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("user/does-not-exist", "config.json")
        with pytest.raises(RepositoryNotFoundError):
            HfApi().model_info("user/does-not-exist")
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(repo_id, "missing.json")
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch")
        assert not HfApi().file_exists(repo_id, "missing.json")
        assert HfApi().file_exists(repo_id, ".gitattributes")
        assert not HfApi().repo_exists("user/does-not-exist")

        from transformers import AutoConfig

        with pytest.raises(OSError, match="user/does-not-exist"):
            AutoConfig.from_pretrained("user/does-not-exist")
    # the missing-file answer carried the commit, so the client cached the non-existence
    assert list((tmp_path / "cache").glob("models--*errors*/.no_exist/*/missing.json"))


def test_patched_endpoint_is_restored(local_hub):
    import transformers.utils.hub as t_hub
    from huggingface_hub import constants

    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE)
    with patched_hub_endpoint(local_hub):
        assert constants.ENDPOINT == local_hub.endpoint
        assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(local_hub.endpoint + "/")
        assert t_hub.hf_api().endpoint == local_hub.endpoint
    assert (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE) == before


# ------------------------------------------------------------------------------------------------------------
# history, branches, tags, PRs, auth, raw HTTP
# ------------------------------------------------------------------------------------------------------------


def test_commit_history_branches_and_revisions(patched_local_hub):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    hub = patched_local_hub
    api = HfApi()
    repo_id = api.create_repo(hub.new_repo_id("history")).repo_id
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="data/file.txt", repo_id=repo_id).oid
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="data/file.txt", repo_id=repo_id).oid
    assert first != second and len(second) == 40
    assert api.model_info(repo_id).sha == second == hub.head(repo_id)
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [second, first]
    assert len(hub.commits(repo_id)) == 3  # initial commit + 2 uploads

    assert Path(hf_hub_download(repo_id, "data/file.txt")).read_bytes() == b"v2"
    assert Path(hf_hub_download(repo_id, "data/file.txt", revision=first)).read_bytes() == b"v1"
    assert Path(hf_hub_download(repo_id, "data/file.txt", revision=first[:10])).read_bytes() == b"v1"

    # unchanged files are skipped by the client thanks to the preupload `oid`
    same = api.upload_file(path_or_fileobj=b"v2", path_in_repo="data/file.txt", repo_id=repo_id).oid
    assert same == second

    api.create_branch(repo_id, branch="dev", revision=first)
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id=repo_id, revision="dev")
    assert "dev.txt" in hub.list_files(repo_id, "dev") and "dev.txt" not in hub.list_files(repo_id)
    api.create_tag(repo_id, tag="v1.0", revision=first)
    assert Path(hf_hub_download(repo_id, "data/file.txt", revision="v1.0")).read_bytes() == b"v1"
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]

    pr = api.upload_file(path_or_fileobj=b"pr", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    assert Path(hf_hub_download(repo_id, "pr.txt", revision="refs/pr/1")).read_bytes() == b"pr"

    api.create_commit(
        repo_id,
        operations=[CommitOperationDelete("data/"), CommitOperationAdd("new/a.bin", b"\x00\x01\xff" * 1000)],
        commit_message="restructure",
    )
    assert hub.list_files(repo_id) == [".gitattributes", "new/a.bin"]
    tree = {(e.path, type(e).__name__) for e in api.list_repo_tree(repo_id)}
    assert tree == {(".gitattributes", "RepoFile"), ("new", "RepoFolder")}
    assert [f.rfilename for f in api.model_info(repo_id).siblings] == [".gitattributes", "new/a.bin"]

    with pytest.raises(HfHubHTTPError) as err:  # stale parent commit
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, parent_commit=first)
    assert err.value.response.status_code == 412


def test_auth_private_repos_and_raw_http(local_hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    with patched_hub_endpoint(local_hub, cache_dir=tmp_path / "cache"):
        repo_id = local_hub.new_repo_id("private")
        HfApi().create_repo(repo_id, private=True)
        HfApi().upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id=repo_id)
        assert HfApi().model_info(repo_id).private is True
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=False).model_info(repo_id)
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(token="hf_wrong").whoami()
        assert err.value.response.status_code == 401
        assert HfApi().whoami()["name"] == local_hub.username

    url = local_hub.url(repo_id, "digits.txt")
    auth = {"Authorization": f"Bearer {local_hub.token}"}
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=auth)) as r:
        assert r.status == 200
        assert r.headers["X-Repo-Commit"] == local_hub.head(repo_id)
        assert r.headers["ETag"] == f'"{git_blob_sha1(b"0123456789")}"'
        assert r.headers["Content-Length"] == "10"
        assert not [h for h in r.headers if h.lower().startswith("x-xet")]
    with urllib.request.urlopen(urllib.request.Request(url, headers={**auth, "Range": "bytes=3-5"})) as r:
        assert r.status == 206 and r.read() == b"345"
        assert r.headers["Content-Range"] == "bytes 3-5/10"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(local_hub.url(repo_id, "nope.txt"))  # anonymous: private repo is invisible
    err.value.close()
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(local_hub.url(repo_id, "nope.txt"), headers=auth))
    err.value.close()
    assert err.value.headers["X-Error-Code"] == "EntryNotFound"
    assert err.value.headers["X-Repo-Commit"] == local_hub.head(repo_id)


def test_repos_persist_across_server_restarts(tmp_path):
    with LocalHubServer(root_dir=tmp_path / "hub") as first:
        repo_id = first.create_repo("user/persist")
        sha = first.head(repo_id)
    assert not first.running and (tmp_path / "hub").is_dir()  # explicit root_dir is kept
    with LocalHubServer(root_dir=tmp_path / "hub") as second:
        assert second.head(repo_id) == sha
        with patched_hub_endpoint(second, cache_dir=tmp_path / "cache"):
            from huggingface_hub import HfApi

            assert HfApi().model_info(repo_id).sha == sha


def test_run_python_reports_failures(tmp_path):
    from hf_vl.testing import PythonSnippetError

    with pytest.raises(PythonSnippetError, match="(?s)exit status 3.*boom-out.*boom-err"):
        run_python(
            textwrap.dedent(
                """
                import sys
                print("boom-out")
                print("boom-err", file=sys.stderr)
                sys.exit(3)
                """
            ),
            env=None,
            cwd=tmp_path,
        )
