"""Discrete visual tokens for masked patch classification with discrete codes (METER paper Sec. 3.2, the second MIM
variant; BEiT's objective): every masked image patch predicts the index of its visual token.

Any image tokenizer plugs in through one small interface, :class:`VisualTokenizer`: a callable from pixel values
`(batch_size, 3, height, width)` to code indices `(batch_size, grid_height, grid_width)`, with two attributes,
`codebook_size` and `downsample_factor` (pixels per code side; DALL-E's dVAE: 8192 codes, factor 8; a VQGAN: 16).
:func:`discrete_mim_labels` resizes the images so that the tokenizer's code grid equals the model's token grid (as
the paper does), tokenizes them and keeps the codes of the masked patches (-100 elsewhere): the `mim_discrete_labels`
of :class:`~hf_vl.MeterForPreTraining`.

:class:`PatchKMeansTokenizer` is a small tokenizer that needs no download: nearest-codeword quantisation of each
`downsample_factor x downsample_factor` patch (standardised per patch, so the codes describe structure rather than
brightness), with a codebook fitted by k-means on your images or drawn at random.
"""

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class VisualTokenizer(Protocol):
    """What :func:`discrete_mim_labels` needs from an image tokenizer (e.g. a wrapped DALL-E dVAE or VQGAN encoder)."""

    codebook_size: int
    downsample_factor: int

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch_size, 3, H, W)` float pixels -> `(batch_size, H // downsample_factor, W // downsample_factor)`
        long code indices in `[0, codebook_size)`."""
        ...


class PatchKMeansTokenizer:
    """Nearest-codeword visual tokenizer over `downsample_factor`-pixel patches.

    Args:
        codebook (`torch.Tensor` of shape `(codebook_size, 3 * downsample_factor ** 2)`): one code word per row, in
            the space of standardised patches (each patch minus its mean, divided by its std).
        downsample_factor (`int`): pixels per code side.

    Example:

    ```python
    >>> import torch
    >>> from hf_vl.data import PatchKMeansTokenizer
    >>> tokenizer = PatchKMeansTokenizer.random(codebook_size=64, downsample_factor=8, seed=0)
    >>> tokenizer(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 4, 4])
    ```
    """

    def __init__(self, codebook: torch.Tensor, downsample_factor: int):
        if isinstance(downsample_factor, bool) or not isinstance(downsample_factor, int) or downsample_factor < 1:
            raise ValueError(f"`downsample_factor` must be a positive int, got {downsample_factor!r}.")
        if codebook.dim() != 2 or codebook.shape[1] != 3 * downsample_factor**2:
            raise ValueError(
                f"`codebook` must be (codebook_size, 3 * downsample_factor ** 2 = {3 * downsample_factor ** 2}), got "
                f"shape {tuple(codebook.shape)}."
            )
        self.codebook = codebook.float()
        self.downsample_factor = downsample_factor

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    @classmethod
    def random(cls, codebook_size: int = 8192, downsample_factor: int = 8, seed: int = 0) -> "PatchKMeansTokenizer":
        """A codebook of random unit-norm code words (a fixed random projection of patch structure)."""
        generator = torch.Generator().manual_seed(seed)
        codebook = torch.randn(codebook_size, 3 * downsample_factor**2, generator=generator)
        return cls(F.normalize(codebook, dim=-1) * (3 * downsample_factor**2) ** 0.5, downsample_factor)

    @classmethod
    def fit(cls, pixel_values: torch.Tensor, codebook_size: int = 512, downsample_factor: int = 8,
            num_iterations: int = 10, seed: int = 0) -> "PatchKMeansTokenizer":  # fmt: skip
        """k-means (k-means++-free: random patches as the initial code words) over the patches of `pixel_values`
        `(N, 3, H, W)`; empty clusters are re-seeded with random patches."""
        patches = cls._patches(pixel_values.float(), downsample_factor).reshape(-1, 3 * downsample_factor**2)
        if patches.shape[0] < codebook_size:
            raise ValueError(
                f"`pixel_values` hold {patches.shape[0]} patches, fewer than `codebook_size` ({codebook_size})."
            )
        generator = torch.Generator().manual_seed(seed)
        codebook = patches[torch.randperm(patches.shape[0], generator=generator)[:codebook_size]].clone()
        for _ in range(num_iterations):
            assignment = torch.cdist(patches, codebook).argmin(-1)
            sums = torch.zeros_like(codebook).index_add_(0, assignment, patches)
            counts = torch.bincount(assignment, minlength=codebook_size).to(patches.dtype)
            empty = counts == 0
            codebook = torch.where(empty[:, None], codebook, sums / counts.clamp(min=1)[:, None])
            if bool(empty.any()):
                refill = torch.randint(0, patches.shape[0], (int(empty.sum()),), generator=generator)
                codebook[empty] = patches[refill]
        return cls(codebook, downsample_factor)

    @staticmethod
    def _patches(pixel_values: torch.Tensor, factor: int) -> torch.Tensor:
        """`(B, 3, H, W)` -> standardised patches `(B, H // f, W // f, 3 * f * f)`."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"`pixel_values` must be (batch_size, 3, height, width), got {tuple(pixel_values.shape)}.")
        batch_size, _, height, width = pixel_values.shape
        if height % factor or width % factor:
            raise ValueError(f"Image size {height}x{width} is not a multiple of downsample_factor={factor}.")
        patches = F.unfold(pixel_values, kernel_size=factor, stride=factor).transpose(1, 2)  # (B, N, 3 f f)
        patches = (patches - patches.mean(-1, keepdim=True)) / patches.std(-1, keepdim=True).clamp(min=1e-3)
        return patches.reshape(batch_size, height // factor, width // factor, -1)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self._patches(pixel_values.float(), self.downsample_factor)
        codebook = self.codebook.to(patches.device)
        flat = patches.reshape(-1, patches.shape[-1])
        return torch.cdist(flat, codebook).argmin(-1).reshape(patches.shape[:3])

    def save(self, path: str) -> None:
        torch.save({"codebook": self.codebook, "downsample_factor": self.downsample_factor}, path)

    @classmethod
    def load(cls, path: str) -> "PatchKMeansTokenizer":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["codebook"], int(state["downsample_factor"]))


def discrete_mim_labels(tokenizer: VisualTokenizer, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor,
                        token_grid: tuple[int, int] | int) -> torch.Tensor:  # fmt: skip
    """`mim_discrete_labels` for [`MeterForPreTraining`]: the tokenizer's code of every masked patch, -100 elsewhere.

    The images are resized (bicubic) to `token_grid * tokenizer.downsample_factor` pixels so that the tokenizer's code
    grid equals the model's token grid (paper Sec. 3.2: "we resize the image so that the patch grid matches").

    Args:
        tokenizer: a [`VisualTokenizer`] (callable + `codebook_size` + `downsample_factor`).
        pixel_values (`(batch_size, 3, H, W)`): the images as the tokenizer expects them.
        bool_masked_pos (`(batch_size, grid_h * grid_w)` bool): the masked patches (row-major), e.g. from
            `MeterForPreTraining.random_patch_mask`.
        token_grid: the model's image token grid `(grid_h, grid_w)` (an int for a square grid), e.g.
            `image_size // model.image_token_stride()`.
    """
    grid_h, grid_w = (token_grid, token_grid) if isinstance(token_grid, int) else tuple(token_grid)
    if not isinstance(tokenizer, VisualTokenizer):
        raise TypeError(
            "`tokenizer` must be callable and have `codebook_size` and `downsample_factor` (see VisualTokenizer), got "
            f"{type(tokenizer).__name__}."
        )
    if bool_masked_pos.shape != (pixel_values.shape[0], grid_h * grid_w):
        raise ValueError(
            f"`bool_masked_pos` must be (batch_size, grid_h * grid_w) = {(pixel_values.shape[0], grid_h * grid_w)}, "
            f"got {tuple(bool_masked_pos.shape)}."
        )
    factor = tokenizer.downsample_factor
    size = (grid_h * factor, grid_w * factor)
    if tuple(pixel_values.shape[-2:]) != size:
        pixel_values = F.interpolate(pixel_values.float(), size=size, mode="bicubic", align_corners=False)
    with torch.no_grad():
        codes = tokenizer(pixel_values)
    if tuple(codes.shape) != (pixel_values.shape[0], grid_h, grid_w):
        raise ValueError(
            f"The tokenizer returned codes of shape {tuple(codes.shape)}, expected {(pixel_values.shape[0], grid_h, grid_w)}."
        )
    codes = codes.reshape(codes.shape[0], -1).long().to(bool_masked_pos.device)
    if int(codes.min()) < 0 or int(codes.max()) >= tokenizer.codebook_size:
        raise ValueError(f"The tokenizer returned codes outside [0, {tokenizer.codebook_size}).")
    return codes.masked_fill(~bool_masked_pos.bool(), -100)


__all__ = ["VisualTokenizer", "PatchKMeansTokenizer", "discrete_mim_labels"]
