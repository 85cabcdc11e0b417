"""Adaptive LXMERT learns: with every mechanism on, a tiny model fits a task that needs the regions (the answer is
a region attribute chosen by the question), far above the text-only prior (1/3)."""

import torch

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering

COLOUR_QUESTION, SHAPE_QUESTION = 5, 6


def toy_vqa(num_examples=48, seed=0):
    """Region 0 carries a one-hot colour (channels 0-2), region 1 a one-hot shape (channels 3-5), regions 2-3 noise;
    the question asks for the colour (answers 0-2) or the shape (answers 3-5)."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 3, (num_examples,), generator=generator)
    shapes = torch.randint(0, 3, (num_examples,), generator=generator)
    asks_colour = torch.rand(num_examples, generator=generator) < 0.5
    feats = torch.rand(num_examples, 4, 8, generator=generator) * 0.1
    feats[torch.arange(num_examples), 0, colours] = 1.0
    feats[torch.arange(num_examples), 1, 3 + shapes] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.5, 0.0, 1.0, 0.5]])
    question = torch.where(asks_colour, COLOUR_QUESTION, SHAPE_QUESTION)
    input_ids = torch.stack([torch.full_like(question, 2), question, torch.full_like(question, 3)], dim=1)
    labels = torch.where(asks_colour, colours, 3 + shapes)
    return {"input_ids": input_ids, "visual_feats": feats, "visual_pos": boxes.expand(num_examples, 4, 4)}, labels


def test_tiny_model_with_every_mechanism_learns_a_region_dependent_task():
    """Span + learnable-alpha entmax + LayerDrop (the plain model is LXMERT, checked numerically elsewhere)."""
    config = AdaptiveLxmertConfig(vocab_size=10, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  l_layers=1, x_layers=2, r_layers=1, visual_feat_dim=8, num_qa_labels=6,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=8,
                                  adaptive_span=True, adaptive_span_init=0.5, attention_entmax=True,
                                  cross_layerdrop=0.2, adaptive_span_loss_coeff=1e-4)
    torch.manual_seed(0)
    model = AdaptiveLxmertForQuestionAnswering(config)
    inputs, labels = toy_vqa()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_adaptive_parameters()
    model.eval()
    test_inputs, test_labels = toy_vqa(num_examples=60, seed=1)
    with torch.no_grad():
        accuracy = (model(**test_inputs).question_answering_score.argmax(-1) == test_labels).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_lora_on_attention_projections_trains_only_the_adapters():
    from peft import LoraConfig, get_peft_model

    config = AdaptiveLxmertConfig(vocab_size=10, hidden_size=32, num_attention_heads=4, intermediate_size=37,
                                  l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=8, num_qa_labels=6,
                                  max_position_embeddings=8, adaptive_span=True, attention_entmax=True)
    torch.manual_seed(0)
    model = get_peft_model(AdaptiveLxmertForQuestionAnswering(config),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                      modules_to_save=["answer_head"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("x_layers.0.visual_attention.att.query.lora_A" in n for n in trainable)
    assert not any("span_fraction" in n or "entmax_alpha" in n for n in trainable)  # frozen with the base weights
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs, labels = toy_vqa(num_examples=8)
    for _ in range(2):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in frozen.items())
    assert any(not torch.equal(params[n], before) for n, before in lora_b.items())
