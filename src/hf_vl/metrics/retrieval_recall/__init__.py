"""The `retrieval_recall` evaluate module of hf_vl (see `retrieval_recall.py`)."""
