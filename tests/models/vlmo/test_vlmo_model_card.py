"""VLMo has a model-card template in the package: save_for_hub writes a filled card next to the code."""

from hf_vl import VlmoConfig, VlmoForImageAndTextRetrieval
from hf_vl.hub import available_model_card_templates, render_model_card, save_for_hub


def test_vlmo_card_is_rendered_and_saved(tmp_path):
    assert "vlmo" in available_model_card_templates()
    config = VlmoConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                        vl_ffn_start_layer=1, image_size=32, max_text_len=16, max_relative_text_length=16)
    model = VlmoForImageAndTextRetrieval(config)
    card = render_model_card(
        model, model_name="vlmo-tiny", repo_id="user/vlmo-tiny", intended_uses="Tests.", image_size=32,
        normalization="0.5", max_text_len=16, training_data="none", evaluation_results="none", provenance="random",
    )
    assert "$" not in card.split("```bibtex")[0] and "VlmoForImageAndTextRetrieval" in card
    save_for_hub(model, str(tmp_path), model_card=card)
    assert (tmp_path / "README.md").read_text() == card and (tmp_path / "modeling_vlmo.py").is_file()
