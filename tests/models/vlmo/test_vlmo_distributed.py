"""Global contrastive loss and global hard negative mining across processes (2 CPU processes, gloo): the loss and
the averaged gradients of the distributed run equal the single-process ones on the global batch (TorchMultimodal's
way of testing distributed losses)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_vl import VlmoConfig, VlmoForImageAndTextRetrieval, VlmoForPreTraining

WORLD_SIZE = 2
PER_RANK = 3


def _config():
    return VlmoConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                      vl_ffn_start_layer=1, image_size=32, max_text_len=8, max_relative_text_length=8,
                      drop_path_rate=0.0, embedding_dropout_prob=0.0, initializer_range=0.2)


def _global_batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 99, (WORLD_SIZE * PER_RANK, 6), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    mlm_input_ids = input_ids.clone()
    mlm_input_ids[:, 2] = 1
    mlm_labels = torch.full_like(input_ids, -100)
    mlm_labels[:, 2] = input_ids[:, 2]
    pixel_values = torch.randn(WORLD_SIZE * PER_RANK, 3, 32, 32, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
            "mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels}


def _models():
    torch.manual_seed(0)
    pretraining = VlmoForPreTraining(_config()).eval()  # eval: hardest negatives (deterministic), no dropout
    torch.manual_seed(1)
    retrieval = VlmoForImageAndTextRetrieval(_config()).eval()
    return pretraining, retrieval


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch, return_loss=True).loss
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        batch = {k: v[rank * PER_RANK : (rank + 1) * PER_RANK] for k, v in _global_batch().items()}
        results = {}
        for name, model in zip(("pretraining", "retrieval"), _models()):
            if name == "retrieval":
                batch = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
            loss, grads = _loss_and_grads(model, batch)
            for grad in grads.values():  # what DDP does: average the gradients over the processes
                dist.all_reduce(grad)
                grad /= WORLD_SIZE
            losses = [torch.zeros_like(loss) for _ in range(WORLD_SIZE)]
            dist.all_gather(losses, loss)
            results[name] = {"loss": torch.stack(losses).mean(), "grads": grads}
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "distributed.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_losses_and_gradients_equal_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(tmp_path / "distributed.pt")
    torch.set_num_threads(1)
    batch = _global_batch()
    for name, model in zip(("pretraining", "retrieval"), _models()):
        inputs = batch if name == "pretraining" else {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        loss, grads = _loss_and_grads(model, inputs)
        torch.testing.assert_close(distributed[name]["loss"], loss, atol=1e-5, rtol=1e-5)
        assert sorted(distributed[name]["grads"]) == sorted(grads)
        for param_name, grad in grads.items():
            torch.testing.assert_close(distributed[name]["grads"][param_name], grad, atol=1e-5, rtol=1e-4,
                                       msg=f"{name}: {param_name}")


def test_gather_is_a_no_op_without_distributed():
    from hf_vl.models.vlmo.modeling_vlmo import gather_features

    features = torch.randn(4, 8)
    gathered, offset = gather_features(features)
    assert gathered is features and offset == 0
