"""Tiny random detectors and backbones for the region-extractor tests (built locally, no download, no timm)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    ResNetConfig,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrResNetConfig,
    YolosConfig,
    YolosForObjectDetection,
)

NUM_LABELS = 5
NUM_QUERIES = 12
IMAGE_SIZE = 64


def _tiny_resnet_config() -> ResNetConfig:
    return ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
        out_features=["stage2"],
    )  # fmt: skip


def _detr_kwargs() -> dict:
    return dict(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=_tiny_resnet_config(), d_model=32,
        encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=NUM_QUERIES, num_labels=NUM_LABELS,
    )  # fmt: skip


def _spread_class_scores(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw the learned queries and the class heads: freshly initialised, every query scores almost
    alike, which would make the top-K order a matter of ties."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("query_position_embeddings"):  # DETR-style learned queries, else all alike
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
            if isinstance(module, torch.nn.Linear) and module.out_features in (NUM_LABELS, NUM_LABELS + 1):
                scale = 2.0 / module.in_features**0.5  # logits of std ~2 over layer-normed states
                module.weight.copy_(scale * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def tiny_yolos() -> YolosForObjectDetection:
    """YOLOS: ViT with detection tokens; softmax head with a "no object" class (NUM_LABELS + 1 logits)."""
    torch.manual_seed(0)
    config = YolosConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=16, num_detection_tokens=NUM_QUERIES, num_labels=NUM_LABELS,
    )  # fmt: skip
    model = YolosForObjectDetection(config)
    with torch.no_grad():  # zero-initialised tokens would make every detection token identical
        embeddings = model.vit.embeddings
        for parameter in (embeddings.cls_token, embeddings.detection_tokens, embeddings.position_embeddings):
            parameter.normal_(std=1.0)
    return _spread_class_scores(model, seed=0)


def tiny_detr() -> DetrForObjectDetection:
    """DETR with a tiny transformers ResNet backbone; softmax head with a "no object" class."""
    torch.manual_seed(1)
    return _spread_class_scores(DetrForObjectDetection(DetrConfig(**_detr_kwargs())), seed=1)


def tiny_conditional_detr() -> ConditionalDetrForObjectDetection:
    """Conditional DETR: sigmoid (focal-loss) head with NUM_LABELS logits, no "no object" class."""
    torch.manual_seed(2)
    return _spread_class_scores(ConditionalDetrForObjectDetection(ConditionalDetrConfig(**_detr_kwargs())), seed=2)


def tiny_rt_detr() -> RTDetrForObjectDetection:
    """RT-DETR: hybrid encoder + deformable decoder over encoder-selected queries; sigmoid head."""
    torch.manual_seed(3)
    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, use_pretrained_backbone=False, encoder_hidden_dim=16, d_model=32,
        encoder_in_channels=[16, 16, 16], feat_strides=[8, 16, 32], encoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=32, num_queries=NUM_QUERIES,
        num_labels=NUM_LABELS, decoder_n_points=2, num_feature_levels=3, decoder_in_channels=[16, 16, 16],
        hidden_expansion=0.5, num_denoising=0,
    )  # fmt: skip
    return _spread_class_scores(RTDetrForObjectDetection(config), seed=3)


def random_images(count: int, size: int = IMAGE_SIZE, seed: int = 0) -> list[np.ndarray]:
    """``count`` random uint8 RGB images ``(size, size, 3)``."""
    generator = np.random.default_rng(seed)
    return [generator.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)]
