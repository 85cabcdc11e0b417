import os

# Everything runs offline: tests build tiny models from configs and talk to a local Hub server only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

pytest_plugins = ["hf_vl.testing.pytest_plugin"]
