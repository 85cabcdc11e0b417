"""The `vqa_score` evaluate module of hf_vl (see `vqa_score.py`)."""
