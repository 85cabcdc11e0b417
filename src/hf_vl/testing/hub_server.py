"""A small local server speaking the Hugging Face Hub HTTP API (standard library only).

It lets ``push_to_hub``, ``hf_hub_download``, ``snapshot_download`` and
``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` run end to end on 127.0.0.1, without the
real Hub. Written against ``huggingface_hub`` 2.4 and ``transformers`` 5.23.

What it implements (model, dataset and space repos alike):

=========================================================  ==========================================
``GET  /api/whoami-v2``                                    fake user ``server.username`` (token needed)
``POST /api/repos/create`` / ``DELETE /api/repos/delete``  create (409 + ``url`` if it exists) / delete
``POST /api/repos/move``                                   rename a repo
``POST /api/validate-yaml``                                always valid
``GET  /api/{type}s``                                      list repos (``search``, ``author``)
``GET  /api/{type}s/{repo}[/revision/{rev}]``              repo info with ``sha`` and ``siblings``
``POST /api/{type}s/{repo}/preupload/{rev}``               every file ``"regular"`` (no LFS, no Xet)
``POST /api/{type}s/{repo}/commit/{rev}``                  NDJSON: header / file (base64) / deletedFile /
                                                           deletedFolder; ``create_pr=1``; ``parentCommit``
``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]``           ``recursive``, ``expand``
``POST /api/{type}s/{repo}/paths-info/{rev}``              paths info
``GET  /api/{type}s/{repo}/refs`` / ``commits/{rev}``      branches, tags, PR refs / history
``POST|DELETE /api/{type}s/{repo}/branch/{name}``          branches (``startingPoint``)
``POST /api/{type}s/{repo}/tag/{rev}`` / ``DELETE tag/x``  tags
``PUT  /api/{type}s/{repo}/settings``                      ``private``
``GET|HEAD /[{type}s/]{repo}/resolve/{rev}/{path}``        file content; ``X-Repo-Commit``, ``ETag``
                                                           (git blob sha1), ``Content-Length``, ``Range``
=========================================================  ==========================================

Errors carry the ``X-Error-Code`` header that ``huggingface_hub`` maps to its exceptions: ``RepoNotFound``
(-> ``RepositoryNotFoundError``), ``RevisionNotFound`` (-> ``RevisionNotFoundError``) and ``EntryNotFound``
(-> ``RemoteEntryNotFoundError`` / ``EntryNotFoundError``). Missing-file answers also carry ``X-Repo-Commit``
so the client caches the non-existence, as with the real Hub.

Storage: ``root_dir/{type}s/{namespace}/{name}/`` holds ``repo.json`` (branches, tags, visibility),
``commits/{sha}.json`` (one full file listing per commit, so every revision stays readable) and
``blobs/{git-sha1}`` (content-addressed). A new server on the same ``root_dir`` sees the same repos.

Pointing clients at the server
------------------------------
``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import time. Two ways:

* :func:`hub_env` -- environment variables for a **fresh interpreter** (``subprocess``; see
  :func:`run_python`). This is the robust way: nothing cached in-process can point elsewhere, every
  client (``huggingface_hub``, ``transformers``, ``datasets``...) sees the endpoint from its first import,
  and each process gets its own empty cache (``HF_HOME``) and remote-code module cache.
* :func:`patched_hub_endpoint` -- a context manager that patches the already-imported modules of the
  current process (endpoint constants, the default ``HfApi`` instances of ``huggingface_hub`` and
  ``transformers``, trusted hosts, offline/xet/telemetry flags, cache dir, ``HF_TOKEN``). Good for quick
  in-process checks (errors, ``HfApi`` calls, ``from_pretrained`` of plain models). Limits: ``HfApi``
  objects created *before* entering keep their old endpoint, and remote code loaded with
  ``trust_remote_code`` is written to the process-wide ``HF_MODULES_CACHE`` and stays imported in
  ``sys.modules`` -- prefer a subprocess for ``trust_remote_code`` tests.

Limitations: no LFS/Xet transfer (the server tells the client to send every file inline, base64, which is
fine for test-sized checkpoints but keeps each commit in memory), one user (every valid token is
``server.username`` and may write to any namespace), no ``.gitignore`` handling, no discussions, no
pagination (one page answers), no gated repos, no ``super_squash_history``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "LocalHubServer",
    "PythonSnippetError",
    "hub_env",
    "patched_hub_endpoint",
    "run_python",
]

DEFAULT_TOKEN = "hf_localhubserver_test_token_0000000000"
DEFAULT_USERNAME = "user"

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
# Sub-paths that follow a repo id in /api/{type}s/{repo_id}/... (used to tell "name" from "namespace/name").
_API_SUBPATHS = {
    "revision", "preupload", "commit", "tree", "paths-info", "refs", "commits", "branch", "tag", "settings",
    "auth-check", "lfs-files", "discussions", "resolve", "likers", "like",
}  # fmt: skip
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{7,39}")
_REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# What the Hub writes into the first commit of a new repository (shortened).
_INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    b"*.msgpack filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.zip filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(data: bytes) -> str:
    """Git blob id of ``data`` (what ``git hash-object`` prints): the Hub's ``oid``/``ETag`` of a regular file."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


# ----------------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------------


class _Store:
    """Repositories on disk; every public method holds the (re-entrant) lock."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.RLock()
        self._counter = itertools.count()

    # -- paths ---------------------------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    @staticmethod
    def check_repo_id(repo_id: str) -> None:
        parts = repo_id.split("/")
        if not 1 <= len(parts) <= 2 or not all(_REPO_NAME.fullmatch(p) and p not in (".", "..") for p in parts):
            raise HubError(400, f"Invalid repo id: {repo_id!r}")

    def exists(self, repo_type: str, repo_id: str) -> bool:
        try:
            self.check_repo_id(repo_id)
        except HubError:
            return False
        return (self.repo_dir(repo_type, repo_id) / "repo.json").is_file()

    # -- metadata ------------------------------------------------------------------------------------------
    def load(self, repo_type: str, repo_id: str) -> dict:
        with self.lock:
            if not self.exists(repo_type, repo_id):
                raise _repo_not_found(repo_id)
            return json.loads((self.repo_dir(repo_type, repo_id) / "repo.json").read_text())

    def save(self, meta: dict) -> None:
        with self.lock:
            path = self.repo_dir(meta["type"], meta["id"]) / "repo.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, path)

    def list_repos(self, repo_type: str) -> list[dict]:
        with self.lock:
            base = self.root / f"{repo_type}s"
            metas = []
            for path in sorted(base.glob("*/repo.json")) + sorted(base.glob("*/*/repo.json")):
                metas.append(json.loads(path.read_text()))
            return metas

    # -- blobs & commits -----------------------------------------------------------------------------------
    def put_blob(self, repo_type: str, repo_id: str, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.repo_dir(repo_type, repo_id) / "blobs" / oid
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{oid}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return oid

    def blob_path(self, repo_type: str, repo_id: str, oid: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "blobs" / oid

    def get_commit(self, repo_type: str, repo_id: str, sha: str) -> dict:
        return json.loads((self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json").read_text())

    def has_commit(self, repo_type: str, repo_id: str, sha: str) -> bool:
        return (self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json").is_file()

    def write_commit(
        self,
        meta: dict,
        *,
        parent: str | None,
        files: dict[str, dict],
        title: str,
        message: str = "",
        author: str = DEFAULT_USERNAME,
    ) -> str:
        date = _now_iso()
        tree = self.tree_oid(files)
        seed = f"{parent}\n{tree}\n{title}\n{message}\n{date}\n{time.time_ns()}\n{next(self._counter)}"
        sha = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
        commit = {
            "id": sha,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": date,
            "author": author,
            "files": dict(sorted(files.items())),
        }
        path = self.repo_dir(meta["type"], meta["id"]) / "commits" / f"{sha}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(commit))
        return sha

    @staticmethod
    def tree_oid(files: Mapping[str, dict]) -> str:
        listing = "\n".join(f"{p}:{f['oid']}" for p, f in sorted(files.items()))
        return hashlib.sha1(listing.encode(), usedforsecurity=False).hexdigest()

    # -- repos ---------------------------------------------------------------------------------------------
    def create(self, repo_type: str, repo_id: str, *, private: bool = False, author: str = DEFAULT_USERNAME) -> dict:
        with self.lock:
            self.check_repo_id(repo_id)
            if self.exists(repo_type, repo_id):
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            d = self.repo_dir(repo_type, repo_id)
            d.mkdir(parents=True, exist_ok=True)
            meta = {
                "id": repo_id,
                "type": repo_type,
                "private": bool(private),
                "createdAt": _now_iso(),
                "branches": {},
                "tags": {},
                "pull_requests": {},
                "uid": uuid.uuid4().hex[:24],
            }
            oid = self.put_blob(repo_type, repo_id, _INITIAL_GITATTRIBUTES)
            files = {".gitattributes": {"oid": oid, "size": len(_INITIAL_GITATTRIBUTES)}}
            meta["branches"]["main"] = self.write_commit(
                meta, parent=None, files=files, title="initial commit", author=author
            )
            self.save(meta)
            return meta

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if not self.exists(repo_type, repo_id):
                raise _repo_not_found(repo_id)
            shutil.rmtree(self.repo_dir(repo_type, repo_id))

    def move(self, repo_type: str, src: str, dst: str) -> None:
        with self.lock:
            meta = self.load(repo_type, src)
            self.check_repo_id(dst)
            if self.exists(repo_type, dst):
                raise HubError(409, f"Repository {dst} already exists")
            target = self.repo_dir(repo_type, dst)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.repo_dir(repo_type, src)), str(target))
            meta["id"] = dst
            self.save(meta)

    def resolve(self, meta: dict, revision: str | None) -> str | None:
        """Commit sha of a branch, tag, PR ref, full or abbreviated commit id; ``None`` if unknown."""
        rev = revision or "main"
        for prefix, table in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if rev.startswith(prefix) and rev[len(prefix) :] in meta[table]:
                return meta[table][rev[len(prefix) :]]
        if rev in meta["branches"]:
            return meta["branches"][rev]
        if rev in meta["tags"]:
            return meta["tags"][rev]
        if rev in meta["pull_requests"]:
            return meta["pull_requests"][rev]
        if _HEX40.fullmatch(rev):
            return rev if self.has_commit(meta["type"], meta["id"], rev) else None
        if _HEX_PREFIX.fullmatch(rev):
            found = list((self.repo_dir(meta["type"], meta["id"]) / "commits").glob(f"{rev}*.json"))
            if len(found) == 1:
                return found[0].stem
        return None

    def history(self, meta: dict, sha: str) -> list[dict]:
        commits = []
        while sha:
            commit = self.get_commit(meta["type"], meta["id"], sha)
            commits.append(commit)
            sha = commit["parents"][0] if commit["parents"] else None
        return commits


# ----------------------------------------------------------------------------------------------------------
# HTTP layer
# ----------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalHubServer/1.0"
    protocol_version = "HTTP/1.1"
    hub: LocalHubServer  # set on the subclass built by LocalHubServer

    # -- plumbing ------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.hub.verbose:
            sys.stderr.write("[LocalHubServer] " + (format % args) + "\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._body
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e

    def _send(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, ctype: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.close_connection = True

    def _json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _dispatch(self, method: str) -> None:
        status = 500
        try:
            self._body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
            status = self._route(method) or 200
        except HubError as e:
            status = e.status
            headers = {"X-Error-Message": e.message.splitlines()[0][:200], **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, json.dumps({"error": e.message}).encode(), headers)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as e:  # pragma: no cover - server bug: answer 500 with the traceback text
            import traceback

            traceback.print_exc()
            with contextlib.suppress(Exception):
                self._send(500, json.dumps({"error": f"LocalHubServer internal error: {e!r}"}).encode())
        finally:
            self.hub._log_request(method, self.path, status)

    # -- auth ----------------------------------------------------------------------------------------------
    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.username

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(
                401, "You must be authenticated to access this endpoint (send `Authorization: Bearer <token>`)."
            )
        return user

    def _load_readable(self, repo_type: str, repo_id: str) -> dict:
        meta = self.hub.store.load(repo_type, repo_id)
        if meta["private"] and self._user() is None:
            raise _repo_not_found(repo_id)
        return meta

    # -- routing -------------------------------------------------------------------------------------------
    def _route(self, method: str) -> int | None:
        url = urlsplit(self.path)
        self._query = parse_qs(url.query, keep_blank_values=True)
        segs = [unquote(s) for s in url.path.strip("/").split("/")] if url.path.strip("/") else []

        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["repos", "move"] and method == "POST":
                return self._move_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._json({"errors": [], "warnings": []})
            if rest[:1] == ["telemetry"]:
                return self._json({})
            if len(rest) == 1 and rest[0] in _REPO_TYPES and method == "GET":
                return self._list_repos(_REPO_TYPES[rest[0]])
            if len(rest) >= 2 and rest[0] in _REPO_TYPES:
                repo_type = _REPO_TYPES[rest[0]]
                repo_id, action = self._split_repo(repo_type, rest[1:])
                return self._repo_api(method, repo_type, repo_id, action)
            raise HubError(404, f"LocalHubServer does not implement {method} {url.path}")

        # /[{type}s/]{repo_id}/resolve/{revision}/{path}
        if method in ("GET", "HEAD"):
            repo_type = "model"
            if segs and segs[0] in ("datasets", "spaces", "kernels"):
                repo_type, segs = _REPO_TYPES[segs[0]], segs[1:]
            if len(segs) >= 5 and segs[2] == "resolve":
                return self._resolve(repo_type, "/".join(segs[:2]), segs[3], "/".join(segs[4:]))
            if len(segs) >= 4 and segs[1] == "resolve":
                return self._resolve(repo_type, segs[0], segs[2], "/".join(segs[3:]))
        raise HubError(404, f"LocalHubServer does not implement {method} {url.path}")

    def _split_repo(self, repo_type: str, rest: list[str]) -> tuple[str, list[str]]:
        store = self.hub.store
        if len(rest) >= 2 and store.exists(repo_type, f"{rest[0]}/{rest[1]}"):
            return f"{rest[0]}/{rest[1]}", rest[2:]
        if store.exists(repo_type, rest[0]):
            return rest[0], rest[1:]
        if len(rest) >= 2 and rest[1] not in _API_SUBPATHS:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        return rest[0], rest[1:]

    def _repo_api(self, method: str, repo_type: str, repo_id: str, action: list[str]) -> int | None:
        head = action[0] if action else ""
        if method == "GET" and not action:
            return self._info(repo_type, repo_id, None)
        if method == "GET" and head == "revision" and len(action) >= 2:
            return self._info(repo_type, repo_id, "/".join(action[1:]))
        if method == "POST" and head == "preupload" and len(action) >= 2:
            return self._preupload(repo_type, repo_id, "/".join(action[1:]))
        if method == "POST" and head == "commit" and len(action) >= 2:
            return self._commit(repo_type, repo_id, "/".join(action[1:]))
        if method == "GET" and head == "tree" and len(action) >= 2:
            return self._tree(repo_type, repo_id, action[1], "/".join(action[2:]))
        if method == "POST" and head == "paths-info" and len(action) >= 2:
            return self._paths_info(repo_type, repo_id, "/".join(action[1:]))
        if method == "GET" and action == ["refs"]:
            return self._refs(repo_type, repo_id)
        if method == "GET" and head == "commits" and len(action) >= 2:
            return self._commits(repo_type, repo_id, "/".join(action[1:]))
        if head == "branch" and len(action) >= 2 and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, "/".join(action[1:]))
        if head == "tag" and len(action) >= 2 and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, "/".join(action[1:]))
        if method == "PUT" and action == ["settings"]:
            return self._settings(repo_type, repo_id)
        if method == "GET" and action == ["auth-check"]:
            self._load_readable(repo_type, repo_id)
            return self._json({})
        if method == "GET" and action == ["lfs-files"]:
            self._load_readable(repo_type, repo_id)
            return self._json([])
        if method == "GET" and head == "resolve" and len(action) >= 3:
            return self._resolve(repo_type, repo_id, action[1], "/".join(action[2:]))
        raise HubError(
            404, f"LocalHubServer does not implement {method} /api/{repo_type}s/{repo_id}/{'/'.join(action)}"
        )

    # -- helpers -------------------------------------------------------------------------------------------
    def _qbool(self, name: str) -> bool:
        values = self._query.get(name)
        return bool(values) and values[-1].lower() in ("1", "true", "yes")

    def _commit_of(self, meta: dict, revision: str | None) -> dict:
        sha = self.hub.store.resolve(meta, revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.hub.store.get_commit(meta["type"], meta["id"], sha)

    def _repo_url(self, meta: dict) -> str:
        return f"{self.hub.endpoint}/{_URL_PREFIX[meta['type']]}{meta['id']}"

    # -- endpoints -----------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        user = self._require_user()
        self._json(self.hub.whoami_payload(user))

    def _create_repo(self) -> None:
        user = self._require_user()
        payload = self._json_body()
        name, org = payload.get("name"), payload.get("organization")
        if not name:
            raise HubError(400, "Missing 'name' in payload")
        repo_id = f"{org or user}/{name}"
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        private = payload.get("private")
        if "visibility" in payload:
            private = payload["visibility"] != "public"
        store = self.hub.store
        with store.lock:
            if store.exists(repo_type, repo_id):
                meta = store.load(repo_type, repo_id)
                return self._json(
                    {"error": f"You already created this {repo_type} repo", "url": self._repo_url(meta)},
                    status=409,
                    headers={"X-Error-Message": f"You already created this {repo_type} repo"},
                )
            meta = store.create(repo_type, repo_id, private=bool(private), author=user)
        self._json({"url": self._repo_url(meta), "name": repo_id, "id": meta["uid"]})

    def _delete_repo(self) -> None:
        user = self._require_user()
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        self.hub.store.delete(payload.get("type") or "model", repo_id)
        self._json({})

    def _move_repo(self) -> None:
        self._require_user()
        payload = self._json_body()
        self.hub.store.move(payload.get("type") or "model", payload["fromRepo"], payload["toRepo"])
        self._json({})

    def _list_repos(self, repo_type: str) -> None:
        user = self._user()
        search = (self._query.get("search") or [""])[-1].lower()
        author = (self._query.get("author") or [""])[-1]
        out = []
        for meta in self.hub.store.list_repos(repo_type):
            if meta["private"] and user is None:
                continue
            if search and search not in meta["id"].lower():
                continue
            if author and not meta["id"].startswith(author + "/"):
                continue
            out.append(self._info_payload(meta, self._commit_of(meta, None), with_siblings=False))
        self._json(out)

    def _info_payload(self, meta: dict, commit: dict, *, with_siblings: bool = True, blobs: bool = False) -> dict:
        files = commit["files"]
        data: dict[str, Any] = {
            "_id": meta["uid"],
            "id": meta["id"],
            "author": meta["id"].split("/")[0] if "/" in meta["id"] else None,
            "sha": commit["id"],
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "usedStorage": sum(f["size"] for f in files.values()),
        }
        if meta["type"] == "model":
            data["modelId"] = meta["id"]
            data["library_name"] = None
            data["pipeline_tag"] = None
            data.update(self._card_fields(meta, files))
            config = self._read_json_file(meta, files, "config.json")
            if isinstance(config, dict):
                data["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        if with_siblings:
            siblings = []
            for path, info in files.items():
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sibling.update(size=info["size"], blobId=info["oid"])
                siblings.append(sibling)
            data["siblings"] = siblings
        return data

    def _read_json_file(self, meta: dict, files: dict, path: str) -> Any:
        info = files.get(path)
        if info is None or info["size"] > 5_000_000:
            return None
        try:
            return json.loads(self.hub.store.blob_path(meta["type"], meta["id"], info["oid"]).read_bytes())
        except (OSError, ValueError):
            return None

    def _card_fields(self, meta: dict, files: dict) -> dict:
        """``library_name``, ``pipeline_tag`` and ``tags`` from the README front matter (tiny YAML subset)."""
        info = files.get("README.md")
        if info is None:
            return {}
        text = self.hub.store.blob_path(meta["type"], meta["id"], info["oid"]).read_text(errors="replace")
        match = re.match(r"---\s*\n(.*?)\n---", text, re.S)
        if not match:
            return {}
        out: dict[str, Any] = {}
        current_list: list[str] | None = None
        for line in match.group(1).splitlines():
            if current_list is not None and re.match(r"\s*-\s+", line):
                current_list.append(line.split("-", 1)[1].strip().strip("'\""))
                continue
            current_list = None
            key, sep, value = line.partition(":")
            if not sep or line[:1].isspace():
                continue
            value = value.strip().strip("'\"")
            if key in ("library_name", "pipeline_tag") and value:
                out[key] = value
            elif key == "tags":
                out["tags"] = current_list = (
                    [] if not value else [v.strip() for v in value.strip("[]").split(",") if v.strip()]
                )
        return out

    def _info(self, repo_type: str, repo_id: str, revision: str | None) -> None:
        meta = self._load_readable(repo_type, repo_id)
        commit = self._commit_of(meta, revision)
        self._json(self._info_payload(meta, commit, blobs=self._qbool("blobs")))

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._require_user()
        meta = self.hub.store.load(repo_type, repo_id)
        sha = self.hub.store.resolve(meta, revision)
        if sha is None and not self._qbool("create_pr"):
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = self.hub.store.get_commit(repo_type, repo_id, sha)["files"] if sha else {}
        payload = self._json_body()
        answer = []
        for item in payload.get("files", []):
            existing = files.get(item["path"])
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": existing["oid"] if existing else None,
                }
            )
        self._json({"files": answer, "commitOid": sha})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        user = self._require_user()
        body = self._body
        ctype = self.headers.get("Content-Type", "")
        if "ndjson" in ctype or (body.lstrip().startswith(b"{") and b"\n{" in body.strip()):
            try:
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            except ValueError as e:
                raise HubError(400, f"Invalid NDJSON commit payload: {e}") from e
        else:  # legacy JSON commit payload
            data = self._json_body()
            lines = [
                {
                    "key": "header",
                    "value": {
                        "summary": data.get("summary", ""),
                        "description": data.get("description", ""),
                        **({"parentCommit": data["parentCommit"]} if data.get("parentCommit") else {}),
                    },
                }
            ]
            lines += [{"key": "file", "value": f} for f in data.get("files", [])]
            lines += [{"key": "deletedFile", "value": f} for f in data.get("deletedFiles", [])]
            lines += [{"key": "lfsFile", "value": f} for f in data.get("lfsFiles", [])]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit payload must be the header")
        header = lines[0]["value"]

        store = self.hub.store
        with store.lock:
            meta = store.load(repo_type, repo_id)
            pr_num = None
            if self._qbool("create_pr"):
                base = store.resolve(meta, revision)
                if base is None:
                    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                pr_num = len(meta["pull_requests"]) + 1
                branch = f"refs/pr/{pr_num}"
                meta["pull_requests"][branch] = base
                table = "pull_requests"
            elif revision in meta["branches"] or revision.removeprefix("refs/heads/") in meta["branches"]:
                branch, table = revision.removeprefix("refs/heads/"), "branches"
            elif revision in meta["pull_requests"]:
                branch, table = revision, "pull_requests"
            else:
                raise HubError(
                    404, f"Invalid rev id: {revision} (commits go to an existing branch)", "RevisionNotFound"
                )
            parent = meta[table][branch]
            expected = header.get("parentCommit")
            if expected and not parent.startswith(expected):
                raise HubError(412, f"A commit has happened since. Please refresh and try again. (head is {parent})")

            files = dict(store.get_commit(repo_type, repo_id, parent)["files"])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = value.get("path", "")
                if key in ("file", "deletedFile", "deletedFolder", "lfsFile"):
                    self._check_path(path.rstrip("/") if key == "deletedFolder" else path)
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        data = str(value.get("content", "")).encode()
                    else:
                        try:
                            data = base64.b64decode(value.get("content", ""), validate=True)
                        except ValueError as e:
                            raise HubError(400, f"Invalid base64 content for {path}: {e}") from e
                    oid = store.put_blob(repo_type, repo_id, data)
                    files[path] = {"oid": oid, "size": len(data)}
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                elif key == "lfsFile":
                    raise HubError(
                        400,
                        f"LocalHubServer does not support LFS files ({path}); it answers 'regular' to every preupload "
                        "request, so the client should send the content inline.",
                    )
                else:
                    raise HubError(400, f"Unknown commit operation key: {key!r}")
            sha = store.write_commit(
                meta,
                parent=parent,
                files=files,
                title=header.get("summary") or "Upload",
                message=header.get("description") or "",
                author=user,
            )
            meta[table][branch] = sha
            store.save(meta)
        repo_url = self._repo_url(meta)
        self._json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{repo_url}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": f"{repo_url}/discussions/{pr_num}" if pr_num else None,
            }
        )

    @staticmethod
    def _check_path(path: str) -> None:
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
            raise HubError(400, f"Invalid path in repo: {path!r}")
        if parts[0] == ".git":
            raise HubError(400, f"Cannot commit into .git: {path!r}")

    def _tree_entries(self, meta: dict, commit: dict, base: str, recursive: bool, expand: bool) -> list[dict]:
        files = commit["files"]
        prefix = base.rstrip("/") + "/" if base else ""
        entries: dict[str, dict] = {}
        for path, info in files.items():
            if not path.startswith(prefix):
                continue
            rel_parts = path[len(prefix) :].split("/")
            # every folder level below `base` (only the first one when not recursive)
            levels = range(1, len(rel_parts)) if recursive else range(1, min(2, len(rel_parts)))
            for n in levels:
                folder = prefix + "/".join(rel_parts[:n])
                if folder not in entries:
                    sub = {p: f for p, f in files.items() if p.startswith(folder + "/")}
                    entries[folder] = {"type": "directory", "oid": _Store.tree_oid(sub), "size": 0, "path": folder}
            if recursive or len(rel_parts) == 1:
                entries[path] = {"type": "file", "oid": info["oid"], "size": info["size"], "path": path}
        if expand:
            for entry in entries.values():
                entry["lastCommit"] = self._last_commit(meta, commit, entry["path"], entry["type"] == "directory")
        return sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))

    def _last_commit(self, meta: dict, commit: dict, path: str, folder: bool) -> dict:
        def state(c: dict) -> Any:
            if folder:
                return _Store.tree_oid({p: f for p, f in c["files"].items() if p.startswith(path + "/")})
            return (c["files"].get(path) or {}).get("oid")

        history = self.hub.store.history(meta, commit["id"])
        current, last = state(history[0]), history[0]
        for older in history[1:]:
            if state(older) != current:
                break
            last = older
        return {"id": last["id"], "title": last["title"], "date": last["date"]}

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        meta = self._load_readable(repo_type, repo_id)
        commit = self._commit_of(meta, revision)
        path = path.strip("/")
        if path and path not in commit["files"] and not any(p.startswith(path + "/") for p in commit["files"]):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit["id"]})
        if path in commit["files"]:  # listing a file: the Hub answers with the file itself
            info = commit["files"][path]
            entries = [{"type": "file", "oid": info["oid"], "size": info["size"], "path": path}]
        else:
            entries = self._tree_entries(meta, commit, path, self._qbool("recursive"), self._qbool("expand"))
        self._json(entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        meta = self._load_readable(repo_type, repo_id)
        commit = self._commit_of(meta, revision)
        if "json" in self.headers.get("Content-Type", ""):
            payload = self._json_body()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(self._body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
        files, out = commit["files"], []
        for path in paths if isinstance(paths, list) else [paths]:
            path = path.strip("/")
            if path in files:
                entry = {"type": "file", "oid": files[path]["oid"], "size": files[path]["size"], "path": path}
                if expand:
                    entry["lastCommit"] = self._last_commit(meta, commit, path, False)
                out.append(entry)
            elif path and any(p.startswith(path + "/") for p in files):
                sub = {p: f for p, f in files.items() if p.startswith(path + "/")}
                entry = {"type": "directory", "oid": _Store.tree_oid(sub), "size": 0, "path": path}
                if expand:
                    entry["lastCommit"] = self._last_commit(meta, commit, path, True)
                out.append(entry)
        self._json(out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        meta = self._load_readable(repo_type, repo_id)
        data: dict[str, Any] = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in meta["branches"].items()
            ],
            "converts": [],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in meta["tags"].items()],
        }
        if self._qbool("include_prs"):
            data["pullRequests"] = [{"name": n, "ref": n, "targetCommit": s} for n, s in meta["pull_requests"].items()]
        self._json(data)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        meta = self._load_readable(repo_type, repo_id)
        commit = self._commit_of(meta, revision)
        out = [
            {
                "id": c["id"],
                "title": c["title"],
                "message": c["message"],
                "date": c["date"],
                "authors": [{"user": c.get("author", DEFAULT_USERNAME)}],
                "formatted": {"title": c["title"], "message": c["message"]},
            }
            for c in self.hub.store.history(meta, commit["id"])
        ]
        self._json(out)

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str) -> None:
        self._require_user()
        store = self.hub.store
        with store.lock:
            meta = store.load(repo_type, repo_id)
            if method == "POST":
                if branch in meta["branches"]:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                start = self._json_body().get("startingPoint")
                sha = store.resolve(meta, start)
                if sha is None:
                    raise HubError(404, f"Invalid rev id: {start}", "RevisionNotFound")
                meta["branches"][branch] = sha
            else:
                if branch not in meta["branches"]:
                    raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del meta["branches"][branch]
            store.save(meta)
        self._json({})

    def _tag(self, method: str, repo_type: str, repo_id: str, target: str) -> None:
        self._require_user()
        store = self.hub.store
        with store.lock:
            meta = store.load(repo_type, repo_id)
            if method == "POST":
                tag = self._json_body().get("tag")
                if not tag:
                    raise HubError(400, "Missing 'tag' in payload")
                if tag in meta["tags"]:
                    raise HubError(409, f"Tag already exists: {tag}")
                sha = store.resolve(meta, target)
                if sha is None:
                    raise HubError(404, f"Invalid rev id: {target}", "RevisionNotFound")
                meta["tags"][tag] = sha
            else:
                if target not in meta["tags"]:
                    raise HubError(404, f"Invalid rev id: {target}", "RevisionNotFound")
                del meta["tags"][target]
            store.save(meta)
        self._json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        self._require_user()
        store = self.hub.store
        with store.lock:
            meta = store.load(repo_type, repo_id)
            payload = self._json_body()
            if "private" in payload:
                meta["private"] = bool(payload["private"])
            if "visibility" in payload:
                meta["private"] = payload["visibility"] != "public"
            store.save(meta)
        self._json({})

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        store = self.hub.store
        with store.lock:
            meta = self._load_readable(repo_type, repo_id)
            commit = self._commit_of(meta, revision)
            info = commit["files"].get(path)
        if info is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit["id"]})
        blob = store.blob_path(repo_type, repo_id, info["oid"])
        size = info["size"]
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and size > 0:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
            if not match or (not match.group(1) and not match.group(2)):
                raise HubError(
                    416, f"Unsupported Range header: {range_header}", headers={"Content-Range": f"bytes */{size}"}
                )
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # suffix range: last N bytes
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status = 206
        length = max(end - start + 1, 0)
        filename = path.rsplit("/", 1)[-1]
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{info["oid"]}"')
        self.send_header("X-Repo-Commit", commit["id"])
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Disposition", f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{filename}\"")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD" or length == 0:
            return
        with open(blob, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(1 << 20, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


class LocalHubServer:
    """A Hugging Face Hub look-alike on ``http://host:port``, run in a background thread.

    Args:
        root_dir: where repositories are stored; a temporary directory (deleted by :meth:`stop`) by default.
        host: interface to bind, ``127.0.0.1`` by default.
        port: TCP port, ``0`` (default) picks a free one.
        token: the bearer token the server accepts (``server.token``); ``extra_tokens`` are accepted too.
        username: the user every valid token authenticates as (``whoami``, default namespace).
        verbose: print one line per request on stderr.

    Example::

        with LocalHubServer() as hub:
            env = hub_env(hub)                       # for a subprocess
            run_python("...push_to_hub('user/x')...", env=env, cwd=tmp)
            assert "config.json" in hub.list_files("user/x")
    """

    def __init__(
        self,
        root_dir: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        extra_tokens: tuple[str, ...] = (),
        username: str = DEFAULT_USERNAME,
        verbose: bool = False,
    ):
        self._tmp_root = root_dir is None
        self.root_dir = Path(tempfile.mkdtemp(prefix="local_hub_")) if root_dir is None else Path(root_dir)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.token = token
        self.tokens = frozenset((token, *extra_tokens))
        self.username = username
        self.verbose = verbose
        self.store = _Store(self.root_dir / "repos")
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), most recent last
        self._requests_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._client_homes = itertools.count()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> LocalHubServer:
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, name=f"LocalHubServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a temporary ``root_dir`` is deleted, an explicit one is kept."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._httpd = self._thread = None
        if self._tmp_root:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT`` (no trailing slash), the value for ``HF_ENDPOINT``."""
        if self._httpd is None:
            raise RuntimeError("LocalHubServer is not running; call start() or use it as a context manager.")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _log_request(self, method: str, path: str, status: int) -> None:
        with self._requests_lock:
            self.requests.append((method, path, status))
            del self.requests[:-10_000]

    def whoami_payload(self, user: str) -> dict:
        return {
            "type": "user",
            "id": hashlib.sha1(user.encode(), usedforsecurity=False).hexdigest()[:24],
            "name": user,
            "fullname": "Local Hub User",
            "email": f"{user}@localhost",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": "local-hub-server",
                    "role": "write",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                },
            },
        }

    # -- direct access for tests (no HTTP) -----------------------------------------------------------------
    def new_repo_id(self, prefix: str = "test-repo") -> str:
        """A fresh ``username/prefix-xxxxxxxx`` id, for tests sharing one server."""
        return f"{self.username}/{prefix}-{uuid.uuid4().hex[:8]}"

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> str:
        """Create a repository directly (with its initial commit); returns its id."""
        if "/" not in repo_id:
            repo_id = f"{self.username}/{repo_id}"
        self.store.create(repo_type, repo_id, private=private, author=self.username)
        return repo_id

    def repo_exists(self, repo_id: str, *, repo_type: str = "model") -> bool:
        return self.store.exists(repo_type, repo_id)

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Commit sha a revision points to (``KeyError`` if unknown)."""
        sha = self.store.resolve(self.store.load(repo_type, repo_id), revision)
        if sha is None:
            raise KeyError(f"{repo_id}@{revision}")
        return sha

    def list_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        sha = self.head(repo_id, revision, repo_type=repo_type)
        return sorted(self.store.get_commit(repo_type, repo_id, sha)["files"])

    def read_file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        sha = self.head(repo_id, revision, repo_type=repo_type)
        info = self.store.get_commit(repo_type, repo_id, sha)["files"][path]
        return self.store.blob_path(repo_type, repo_id, info["oid"]).read_bytes()

    def commits(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[dict]:
        """Commits reachable from ``revision``, newest first: dicts with ``id``, ``title``, ``message``, ``files``."""
        meta = self.store.load(repo_type, repo_id)
        return self.store.history(meta, self.head(repo_id, revision, repo_type=repo_type))

    def url(self, repo_id: str, filename: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The ``resolve`` URL of a file."""
        return (
            f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"
        )

    def new_client_home(self) -> Path:
        """A fresh, empty ``HF_HOME`` directory under ``root_dir``."""
        path = self.root_dir / "clients" / f"home-{next(self._client_homes)}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


# ----------------------------------------------------------------------------------------------------------
# Pointing clients at the server
# ----------------------------------------------------------------------------------------------------------

# Variables that would make a child process read another cache, token or endpoint.
_STALE_ENV = (
    "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE", "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE", "HF_DATASETS_CACHE",
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGINGFACE_CO_STAGING",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN",
)  # fmt: skip


def hub_env(
    server: LocalHubServer,
    *,
    hf_home: str | os.PathLike | None = None,
    base: Mapping[str, str] | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """A complete environment for a subprocess that talks to ``server`` (the robust way).

    Starts from ``base`` (``os.environ`` by default), drops every variable that could point at another
    endpoint, cache or token, and sets ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE=0``,
    ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_PROGRESS_BARS=1``,
    ``HF_HUB_DISABLE_UPDATE_CHECK=1``, ``NO_PROXY`` (+= 127.0.0.1, localhost) and ``HF_HOME``: ``hf_home``,
    or a new empty directory under ``server.root_dir`` on every call (so two processes share nothing,
    pass the same ``hf_home`` to share a cache). Use it as ``subprocess.run(..., env=hub_env(server))``.
    """
    env = dict(os.environ if base is None else base)
    for key in _STALE_ENV:
        env.pop(key, None)
    home = Path(hf_home) if hf_home is not None else server.new_client_home()
    home.mkdir(parents=True, exist_ok=True)
    no_proxy = [h for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h]
    no_proxy += [h for h in ("127.0.0.1", "localhost", server.host) if h not in no_proxy]
    env.update(
        HF_ENDPOINT=server.endpoint,
        HF_TOKEN=token if token is not None else server.token,
        HF_HOME=str(home),
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_DISABLE_SYMLINKS_WARNING="1",
        NO_PROXY=",".join(no_proxy),
        no_proxy=",".join(no_proxy),
    )
    return env


class _Patcher:
    """Set attributes / env vars and put them back in reverse order."""

    _MISSING = object()

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        self._undo.append(
            (obj, name, obj.__dict__.get(name, self._MISSING) if hasattr(obj, "__dict__") else getattr(obj, name))
        )
        setattr(obj, name, value)

    def setenv(self, name: str, value: str | None) -> None:
        self._undo.append((os.environ, name, os.environ.get(name, self._MISSING)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def undo(self) -> None:
        while self._undo:
            obj, name, old = self._undo.pop()
            if obj is os.environ:
                if old is self._MISSING:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old
            elif old is self._MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, old)


@contextlib.contextmanager
def patched_hub_endpoint(
    server: LocalHubServer,
    *,
    cache_dir: str | os.PathLike | None = None,
    set_token: bool = True,
) -> Iterator[LocalHubServer]:
    """Point the already-imported ``huggingface_hub`` / ``transformers`` of this process at ``server``.

    Patches (and restores on exit): ``huggingface_hub.constants.ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE``,
    ``HF_URL_HOSTS``, ``HF_HUB_OFFLINE`` (False), ``HF_HUB_DISABLE_XET`` (True), ``HF_HUB_DISABLE_TELEMETRY``
    (True), ``HF_HUB_CACHE``/``HUGGINGFACE_HUB_CACHE`` (``cache_dir``, or a temporary directory removed on
    exit); the copies re-exported by ``huggingface_hub`` and its CLI; the module-level ``HfApi`` behind
    ``huggingface_hub.create_repo`` & co.; the trusted-origin set used for redirects; the shared ``HfApi``
    of ``transformers.utils.hub`` (reset so it is rebuilt with the new endpoint); fsspec's cached
    ``HfFileSystem`` instances; and the ``HF_ENDPOINT`` / ``HF_TOKEN`` environment variables.

    Not covered (use :func:`hub_env` + a subprocess instead): ``HfApi`` objects created before entering,
    libraries that copied the endpoint into their own globals at import (e.g. ``datasets.config``), and
    remote code, which ``transformers`` writes to the process-wide ``HF_MODULES_CACHE``.
    """
    import huggingface_hub
    from huggingface_hub import constants

    endpoint = server.endpoint
    p = _Patcher()
    tmp_cache = None
    try:
        if cache_dir is None:
            tmp_cache = tempfile.mkdtemp(prefix="local_hub_cache_")
            cache_dir = tmp_cache
        cache_dir = str(cache_dir)
        host = urlsplit(endpoint).hostname or server.host

        p.setattr(constants, "ENDPOINT", endpoint)
        p.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        p.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
        p.setattr(constants, "HF_HUB_OFFLINE", False)
        p.setattr(constants, "HF_HUB_DISABLE_XET", True)
        p.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        p.setattr(constants, "HF_HUB_CACHE", cache_dir)
        p.setattr(constants, "HUGGINGFACE_HUB_CACHE", cache_dir)
        p.setenv("HF_ENDPOINT", endpoint)
        if set_token:
            p.setenv("HF_TOKEN", server.token)
            p.setenv("HUGGING_FACE_HUB_TOKEN", None)

        # Copies made at import time.
        for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE"):
            if name in vars(huggingface_hub):  # lazily re-exported: only patch if already materialised
                p.setattr(huggingface_hub, name, getattr(constants, name))
        for modname in ("huggingface_hub.cli.auth", "huggingface_hub.utils._git_credential"):
            mod = sys.modules.get(modname)
            if mod is not None and "ENDPOINT" in vars(mod):
                p.setattr(mod, "ENDPOINT", endpoint)
        hf_api_mod = sys.modules.get("huggingface_hub.hf_api")
        if hf_api_mod is not None and hasattr(hf_api_mod, "api"):
            p.setattr(hf_api_mod.api, "endpoint", endpoint)
        http_mod = sys.modules.get("huggingface_hub.utils._http")
        if http_mod is not None and hasattr(http_mod, "_HUB_ORIGINS"):
            p.setattr(http_mod, "_HUB_ORIGINS", frozenset(http_mod._HUB_ORIGINS | {http_mod._url_origin(endpoint)}))
        hub_mod = sys.modules.get("transformers.utils.hub")
        if hub_mod is not None and hasattr(hub_mod, "_hf_api"):
            p.setattr(hub_mod, "_hf_api", None)
        _clear_hf_filesystem_cache()
        yield server
    finally:
        p.undo()
        _clear_hf_filesystem_cache()
        if tmp_cache is not None:
            shutil.rmtree(tmp_cache, ignore_errors=True)


def _clear_hf_filesystem_cache() -> None:
    mod = sys.modules.get("huggingface_hub.hf_file_system")
    fs_cls = getattr(mod, "HfFileSystem", None) if mod is not None else None
    if fs_cls is not None and hasattr(fs_cls, "clear_instance_cache"):
        with contextlib.suppress(Exception):
            fs_cls.clear_instance_cache()


# ----------------------------------------------------------------------------------------------------------
# Subprocess helper
# ----------------------------------------------------------------------------------------------------------


class PythonSnippetError(AssertionError):
    """A snippet run by :func:`run_python` exited with a non-zero status."""

    def __init__(self, message: str, result: subprocess.CompletedProcess):
        super().__init__(message)
        self.result = result


def run_python(
    code: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    *,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a fresh interpreter (``sys.executable -c``) and return the completed process.

    ``env`` is the *complete* environment of the child (e.g. :func:`hub_env`), ``os.environ`` if ``None``.
    ``cwd`` is its working directory, which is also its ``sys.path[0]``. stdout/stderr are captured as text.
    With ``check`` (default), a non-zero exit raises :class:`PythonSnippetError` (an ``AssertionError``)
    whose message holds the exit status, the code, stdout and stderr.
    """
    code = textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        numbered = "\n".join(f"{i + 1:4d} | {line}" for i, line in enumerate(code.splitlines()))
        raise PythonSnippetError(
            f"Python snippet failed with exit status {result.returncode} (cwd={cwd}).\n"
            f"--- code ---\n{numbered}\n"
            f"--- stdout ---\n{result.stdout[-20000:]}\n"
            f"--- stderr ---\n{result.stderr[-20000:]}",
            result,
        )
    return result
