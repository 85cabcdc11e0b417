"""Testing helpers shipped with hf_vl.

`LocalHubServer` is a small local server speaking the Hugging Face Hub HTTP API, so that `push_to_hub` and
`from_pretrained(repo_id, trust_remote_code=True)` can be tested end to end without the real Hub. See
`hf_vl.testing.hub_server` for details and `hf_vl.testing.pytest_plugin` for the `local_hub` fixture.
"""

from .hub_server import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    LocalHubServer,
    PythonSnippetError,
    git_blob_sha1,
    hub_env,
    patched_hub_endpoint,
    run_python,
)

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "LocalHubServer",
    "PythonSnippetError",
    "git_blob_sha1",
    "hub_env",
    "patched_hub_endpoint",
    "run_python",
]
