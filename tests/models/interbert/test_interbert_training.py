"""InterBERT learns: a tiny VQA model answers from the regions (beating the text-only prior), zero-shot retrieval
with the pre-trained ITM head, PEFT LoRA with the Trainer."""

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from hf_vl import (
    InterBertConfig,
    InterBertForImageAndTextRetrieval,
    InterBertForPreTraining,
    InterBertForQuestionAnswering,
)

TINY = dict(
    vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=37, max_position_embeddings=16,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_interaction_layers=1,
    num_text_extraction_layers=1, num_image_extraction_layers=1, image_num_attention_heads=2,
    image_intermediate_size=24, image_hidden_dropout_prob=0.0, image_attention_probs_dropout_prob=0.0,
    visual_feat_dim=8, visual_pos_dim=5, num_region_classes=5, pooler_size=32, classifier_dropout_prob=0.0,
)


def _colour_regions(num_examples, generator):
    """Each image has 4 regions; one of them carries a one-hot "colour" (the answer) in its first 4 features, its
    position random; the other regions are noise. The question is the same for every example."""
    answers = torch.randint(0, 4, (num_examples,), generator=generator)
    feats = torch.randn(num_examples, 4, 8, generator=generator) * 0.3
    where = torch.randint(0, 4, (num_examples,), generator=generator)
    feats[torch.arange(num_examples), where, :4] += F.one_hot(answers, 4).float() * 3
    corner = torch.rand(num_examples, 4, 2, generator=generator) * 0.5
    pos = torch.cat([corner, corner + 0.4, torch.full((num_examples, 4, 1), 0.16)], -1)
    input_ids = torch.tensor([[1, 7, 8, 9, 2]]).repeat(num_examples, 1)
    return {"input_ids": input_ids, "visual_feats": feats, "visual_pos": pos}, answers


def test_tiny_vqa_model_learns_to_answer_from_the_regions():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train, train_answers = _colour_regions(64, generator)
    test, test_answers = _colour_regions(64, generator)
    model = InterBertForQuestionAnswering(InterBertConfig(**TINY, num_labels=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = F.one_hot(train_answers, 4).float()
    for step in range(80):
        batch = torch.arange(16 * (step % 4), 16 * (step % 4 + 1))
        loss = model(**{k: v[batch] for k, v in train.items()}, labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(**test).logits.argmax(-1) == test_answers).float().mean().item()
    # the question is constant, so the text-only prior is at most the majority answer's share (~1/4)
    prior = torch.bincount(test_answers, minlength=4).max().item() / len(test_answers)
    assert accuracy >= 0.9 > prior + 0.4, (accuracy, prior)


def test_zero_shot_retrieval_scores_are_the_pretrained_itm_log_odds():
    torch.manual_seed(0)
    pretraining = InterBertForPreTraining(InterBertConfig(**TINY)).eval()
    retrieval = InterBertForImageAndTextRetrieval.from_pretraining_model(pretraining).eval()
    inputs, _ = _colour_regions(3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        itm = pretraining(**inputs).itm_logits
        scores = retrieval(**inputs).logits[:, 0]
        torch.testing.assert_close(scores, itm[:, 1] - itm[:, 0])
        ranked = retrieval(input_ids=inputs["input_ids"][:, None].repeat(1, 3, 1), visual_feats=inputs["visual_feats"],
                           visual_pos=inputs["visual_pos"]).logits
    assert ranked.shape == (3, 3)


def test_lora_on_attention_projections_trains_with_trainer(tmp_path):
    torch.manual_seed(0)
    model = InterBertForQuestionAnswering(InterBertConfig(**TINY, num_labels=4))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                  modules_to_save=["classifier"]))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any("interaction_layers.0.attention.self.query.lora_A" in n for n in names)
    assert any("image_extraction_layers.0.attention.self.value.lora_B" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    inputs, answers = _colour_regions(16, torch.Generator().manual_seed(2))
    dataset = Dataset.from_dict({**{k: v.tolist() for k, v in inputs.items()},
                                 "labels": F.one_hot(answers, 4).float().tolist()}).with_format("torch")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    Trainer(model=peft_model, args=args, train_dataset=dataset).train()
    params = dict(peft_model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in frozen.items())
    assert any(not torch.equal(params[n], before) for n, before in lora_before.items())



def _caption_pairs(colours, generator):
    """Captions `[CLS] colour [SEP]` and 2 regions; region 0 shows the colour, region 1 is noise."""
    num = len(colours)
    input_ids = torch.stack([torch.ones(num, dtype=torch.long), 10 + colours, torch.full((num,), 2)], dim=1)
    feats = torch.randn(num, 2, 8, generator=generator) * 0.3
    feats[:, 0, :4] += F.one_hot(colours, 4).float() * 3
    pos = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.25], [0.5, 0.5, 1.0, 1.0, 0.25]]).expand(num, 2, 5)
    return input_ids, feats, pos


def test_itm_pretraining_gives_zero_shot_retrieval_above_chance():
    """Matching needs the interaction module: the caption's colour must be compared with the region's."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = InterBertForPreTraining(InterBertConfig(**TINY))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        colours = torch.randint(0, 4, (32,), generator=generator)
        input_ids, feats, pos = _caption_pairs(colours, generator)
        shifted = torch.roll(torch.arange(32), 1)
        # swap in the previous example's image for about half the pairs (a same-colour image is no negative)
        negative = (torch.rand(32, generator=generator) < 0.5) & (colours[shifted] != colours)
        source = torch.where(negative, shifted, torch.arange(32))
        loss = model(input_ids=input_ids, visual_feats=feats[source], visual_pos=pos[source],
                     itm_labels=(~negative).long()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    retrieval = InterBertForImageAndTextRetrieval.from_pretraining_model(model).eval()
    input_ids, feats, pos = _caption_pairs(torch.arange(4), torch.Generator().manual_seed(99))  # held-out images
    with torch.no_grad():  # image i against the 4 captions; caption i is the right one
        scores = retrieval(input_ids=input_ids[None].repeat(4, 1, 1), visual_feats=feats, visual_pos=pos).logits
    recall_at_1 = (scores.argmax(-1) == torch.arange(4)).float().mean().item()
    assert recall_at_1 >= 0.75, (recall_at_1, scores)  # chance: 1/4


def test_msm_loss_is_the_mean_over_masked_tokens_and_zero_when_none_is_masked():
    """InterBERT's 10% word anchors often mask nothing in a batch of short captions: MSM is then 0, not NaN."""
    torch.manual_seed(0)
    model = InterBertForPreTraining(InterBertConfig(**TINY)).eval()
    inputs, _ = _colour_regions(3, torch.Generator().manual_seed(3))
    nothing = torch.full_like(inputs["input_ids"], -100)
    outputs = model(**inputs, mlm_labels=nothing, itm_labels=torch.ones(3, dtype=torch.long))
    assert outputs.msm_loss.item() == 0.0 and torch.isfinite(outputs.loss)
    labels = nothing.clone()
    labels[0, 1], labels[2, 3] = 5, 7
    outputs = model(**inputs, mlm_labels=labels)
    expected = F.cross_entropy(outputs.msm_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(outputs.msm_loss, expected)
