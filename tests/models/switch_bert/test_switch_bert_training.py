"""Switch-BERT around training: Gumbel temperature annealing in the Trainer, learned-architecture counts and their
PNG drawing."""

import pytest
import torch
from PIL import Image
from transformers import Trainer, TrainingArguments

from hf_vl import SwitchBertForQuestionAnswering
from hf_vl.training import GumbelTemperatureCallback
from hf_vl.training.switch_bert_architectures import (
    architectures_from_outputs,
    count_architectures,
    describe_architecture,
    draw_architectures,
)
from hf_vl.training.switch_bert_callbacks import gumbel_temperature
from test_modeling_switch_bert import SwitchBertModelTester


def _model_and_examples():
    tester = SwitchBertModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    labels = tester.prepare_labels(SwitchBertForQuestionAnswering, inputs)
    torch.manual_seed(0)
    model = SwitchBertForQuestionAnswering(config)
    examples = [{key: value[index] for key, value in {**inputs, **labels}.items()} for index in range(3)]
    return model, inputs, examples


def test_schedules_start_high_and_end_small_but_non_zero():
    for schedule in ("exponential", "linear", "cosine"):
        values = [gumbel_temperature(step, 10, 2.0, 0.1, schedule) for step in range(12)]
        assert values[0] == pytest.approx(2.0) and values[10] == pytest.approx(0.1) and values[11] == pytest.approx(0.1)
        assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="end"):
        GumbelTemperatureCallback(end=0.0)
    with pytest.raises(ValueError, match="schedule"):
        GumbelTemperatureCallback(schedule="step")


def test_callback_anneals_the_model_temperature_during_training(tmp_path):
    model, _, examples = _model_and_examples()
    seen = []
    original = model.set_gumbel_temperature
    model.set_gumbel_temperature = lambda tau: (seen.append(tau), original(tau))[1]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=3, learning_rate=1e-3,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1)
    callback = GumbelTemperatureCallback(start=1.0, end=0.1)
    trainer = Trainer(model=model, args=args, train_dataset=examples, callbacks=[callback])
    trainer.train()
    assert seen[0] == pytest.approx(1.0) and seen[-1] < 0.5 and len(seen) >= 4
    assert model.config.gumbel_temperature == pytest.approx(seen[-1])
    logs = {"loss": 1.0}
    callback.on_log(args, trainer.state, trainer.control, logs=logs)
    assert logs["gumbel_temperature"] == pytest.approx(callback.temperature)


def test_count_and_draw_learned_architectures(tmp_path):
    model, inputs, _ = _model_and_examples()
    with torch.no_grad():  # layer 2 of every sample: joint attention; layer 3: the image reads layer 1
        for layer in model.switch_bert.layers:
            layer.attention_switcher.classifier.weight.zero_()
            layer.attention_switcher.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 9.0]))
        for layer in model.switch_bert.layers[1:]:
            for switcher in (layer.text_input_switcher, layer.image_input_switcher):
                switcher.classifier.weight.zero_()
                switcher.classifier.bias.copy_(torch.tensor([9.0, 0.0]))
        image_switcher = model.switch_bert.layers[2].image_input_switcher
        image_switcher.classifier.bias.copy_(torch.tensor([0.0, 9.0]))
    labelled = dict(inputs, labels=torch.zeros(3, 5))
    counts = count_architectures(model, [labelled, labelled])
    assert counts == [(((3, 0, 0), (3, 0, 0), (3, 0, 1)), 6)]
    assert "layer 3: M3 joint | text <- l-1 | image <- l-2" in describe_architecture(counts[0][0])
    assert model.training  # restored
    with torch.no_grad():  # a second architecture: sample 0 runs M0 in layer 1
        model.eval()
        outputs = model(**inputs)
    outputs.attention_modes[0, 0] = 0
    architectures = architectures_from_outputs(outputs)
    assert architectures[0] != architectures[1] == architectures[2]
    path = tmp_path / "architectures.png"
    drawn = draw_architectures([(architectures[1], 2), (architectures[0], 1)], path)
    reloaded = Image.open(path)
    assert reloaded.format == "PNG" and reloaded.size == drawn.size and reloaded.size[0] > reloaded.size[1] / 2
    colours = {colour for _, colour in reloaded.convert("RGB").getcolors(1 << 20)}
    assert {(130, 200, 120), (120, 170, 235), (255, 0, 0)} <= colours  # joint, self cells and a skip line
    with pytest.raises(ValueError, match="empty"):
        draw_architectures([], path)


def test_pretraining_through_the_collators_mlm_and_mrc_kl_learn():
    """hf_vl's collators give Switch-BERT's pre-training batches: BERT masking of the text and UNITER's MRC-KL
    (15% of the regions at random = IoU-group masking with no groups, `iou_threshold=1.0`); a few steps lower both."""
    from transformers import AutoTokenizer

    from hf_vl import SwitchBertConfig, SwitchBertForPreTraining
    from hf_vl.data import DataCollatorForIoURegionMasking, DataCollatorForVLMaskedLM
    from hf_vl.training import local_pretrained_path

    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))
    text_collator = DataCollatorForVLMaskedLM(tokenizer, mlm_probability=0.3, seed=0)
    collator = DataCollatorForIoURegionMasking(anchor_probability=0.15, iou_threshold=1.0,
                                               text_collator=text_collator, seed=0)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for caption in ("a red circle", "a blue square", "a green triangle", "a red square") * 2:
        boxes = torch.tensor([[0.1, 0.1, 0.4, 0.4, 0.09], [0.5, 0.5, 0.9, 0.9, 0.16], [0.0, 0.5, 0.3, 0.9, 0.12],
                              [0.6, 0.0, 1.0, 0.3, 0.12]])
        examples.append({**tokenizer(caption), "visual_feats": torch.randn(4, 8, generator=generator),
                         "visual_pos": boxes, "region_labels": torch.softmax(torch.randn(4, 7, generator=generator), -1)})
    config = SwitchBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, max_position_embeddings=32, visual_feat_dim=8, num_region_classes=7,
                              pooler_size=16, qa_hidden_size=16, switcher_hidden_size=8, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = SwitchBertForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collator(examples)
    assert batch["mrm_mask"].any() and (batch["mlm_labels"] != -100).any()
    first = model(**batch)
    for _ in range(40):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = model(**batch)
    assert last.mlm_loss < 0.5 * first.mlm_loss and last.mrm_loss < 0.7 * first.mrm_loss, (first, last)


def test_lora_on_the_shared_attention_projections_trains_with_trainer(tmp_path):
    """PEFT LoRA on the query / value projections every mode shares; the switchers and the head train in full."""
    from peft import LoraConfig, get_peft_model

    model, _, examples = _model_and_examples()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                  modules_to_save=["classifier", "attention_switcher"]))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("layers.0.attention.self.query.lora_A" in n for n in names)
    assert any("attention_switcher" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=3, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    Trainer(model=peft_model, args=args, train_dataset=examples, callbacks=[GumbelTemperatureCallback()]).train()
    params = dict(peft_model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in frozen.items())
    assert any(not torch.equal(params[n], before) for n, before in lora_before.items())


def test_text_loss_is_the_mean_over_masked_tokens_and_zero_when_none_is_masked():
    """Short captions often get no masked token in a small batch: the MLM term is then 0, not NaN, so the other
    objectives still train that step."""
    import torch.nn.functional as F

    from hf_vl import SwitchBertForPreTraining

    config, inputs = SwitchBertModelTester(None).prepare_config_and_inputs_for_common()
    torch.manual_seed(0)
    model = SwitchBertForPreTraining(config).eval()
    itm = torch.ones(inputs["input_ids"].shape[0], dtype=torch.long)
    nothing = torch.full_like(inputs["input_ids"], -100)
    outputs = model(**inputs, mlm_labels=nothing, itm_labels=itm)
    assert outputs.mlm_loss.item() == 0.0 and torch.isfinite(outputs.loss)
    labels = nothing.clone()
    labels[0, 1], labels[-1, 2] = 5, 7
    outputs = model(**inputs, mlm_labels=labels)
    expected = F.cross_entropy(outputs.mlm_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(outputs.mlm_loss, expected)


def _region_vqa(num_examples, seed):
    """The answer is a region attribute the question picks: region 0 carries a one-hot colour (channels 0-2), region 1
    a one-hot shape (channels 3-5); the question (token 5 or 6) asks for the colour (answers 0-2) or the shape (3-5)."""
    generator = torch.Generator().manual_seed(seed)
    colours, shapes = torch.randint(0, 3, (2, num_examples), generator=generator)
    asks_colour = torch.rand(num_examples, generator=generator) < 0.5
    feats = torch.rand(num_examples, 4, 8, generator=generator) * 0.1
    feats[torch.arange(num_examples), 0, colours] = 1.0
    feats[torch.arange(num_examples), 1, 3 + shapes] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.25], [0.5, 0.5, 1.0, 1.0, 0.25], [0.0, 0.5, 0.5, 1.0, 0.25],
                          [0.5, 0.0, 1.0, 0.5, 0.25]]).expand(num_examples, 4, 5)  # fmt: skip
    question = torch.where(asks_colour, 5, 6)
    input_ids = torch.stack([torch.full_like(question, 2), question, torch.full_like(question, 3)], dim=1)
    return {"input_ids": input_ids, "visual_feats": feats, "visual_pos": boxes}, torch.where(asks_colour, colours, 3 + shapes)


@pytest.mark.parametrize("broken", [False, True], ids=["regions", "regions-shuffled"])
def test_routed_model_learns_a_region_dependent_task_that_a_broken_pairing_cannot(broken):
    """With SAB + SIB routing on, a tiny model answers from the regions; the same training with each example's
    regions taken from another example (the image no longer matches the answer) stays near the text prior (~1/3)."""
    from hf_vl import SwitchBertConfig

    config = SwitchBertConfig(vocab_size=10, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=8, visual_feat_dim=8, visual_pos_dim=5,
                              pooler_size=32, qa_hidden_size=32, switcher_hidden_size=8, num_labels=6,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
                              switch_top_k=2, initializer_range=32**-0.5)  # fmt: skip
    torch.manual_seed(0)
    model = SwitchBertForQuestionAnswering(config)
    inputs, answers = _region_vqa(64, seed=0)
    if broken:
        inputs["visual_feats"] = inputs["visual_feats"].roll(1, dims=0)
    labels = torch.nn.functional.one_hot(answers, 6).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(100):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_inputs, test_answers = _region_vqa(96, seed=1)
    with torch.no_grad():
        accuracy = (model(**test_inputs).logits.argmax(-1) == test_answers).float().mean().item()
    if broken:
        assert accuracy < 0.5, accuracy
    else:
        assert accuracy >= 0.9, accuracy
