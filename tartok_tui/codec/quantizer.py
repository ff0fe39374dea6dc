"""Factorized VQ lookup: project to a low-dimensional space, nearest l2-normalised code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tartok_tui.codec.precision import fp32_island


class FactorizedVQ(nn.Module):
    """Latents (B, C, T) -> code indices (B, T).

    `in_project` is the official weight-normed 1x1 conv, stored here with its weight folded.
    All of it runs in fp32 with autocast off: a near tie between codes must resolve as it
    does in fp32.
    """

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_project = nn.Conv1d(input_dim, codebook_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with fp32_island(z):
            return self._indices(z.float())

    def _indices(self, z: torch.Tensor) -> torch.Tensor:
        latents = self.in_project(z)  # (B, D, T)
        b = latents.shape[0]
        enc = F.normalize(latents.transpose(1, 2).reshape(-1, latents.shape[1]))
        codes = F.normalize(self.codebook.weight)
        # The full squared distance (not just the dot product) keeps near-ties resolving as
        # they do in the official model: the same sums round the same way. It is built in
        # one (frames x codes) buffer: e2 + (-2 * dot) equals e2 - 2 * dot exactly (scaling
        # by -2 is exact), and the first smallest distance is the first largest -distance.
        dist = torch.addmm(enc.pow(2).sum(1, keepdim=True), enc, codes.t(), alpha=-2)
        dist.add_(codes.pow(2).sum(1, keepdim=True).t())
        return dist.argmin(1).view(b, -1)
