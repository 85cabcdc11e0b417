"""The `accuracy` evaluate module of hf_vl (see `accuracy.py`)."""
