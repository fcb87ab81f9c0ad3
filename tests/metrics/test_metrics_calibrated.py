"""Statistical sanity: a perfectly calibrated predictor's ECE vanishes as n grows."""

from __future__ import annotations

import torch

from bayesmeta.metrics import classwise_ece, ece


def _calibrated(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities from a Dirichlet and labels drawn from those very probabilities."""
    g = torch.Generator().manual_seed(seed)
    p = _dirichlet_half(n, c, g)
    y = torch.multinomial(p, 1, generator=g).squeeze(-1)
    return p, y


def _dirichlet_half(n: int, c: int, g: torch.Generator) -> torch.Tensor:
    """Dirichlet(0.5, ..., 0.5) draws: normalized squared normals (Gamma(1/2) = chi-square(1) / 2)."""
    z = torch.randn(n, c, generator=g, dtype=torch.float64) ** 2
    return z / z.sum(-1, keepdim=True)


def test_ece_of_calibrated_predictor_tends_to_zero() -> None:
    values = {}
    for n in (1_000, 10_000, 200_000):
        p, y = _calibrated(n, 5, seed=n)
        values[n] = (float(ece(p, y)), float(ece(p, y, binning="equal_mass")), float(classwise_ece(p, y)))
    for k in range(3):
        seq = [values[n][k] for n in (1_000, 10_000, 200_000)]
        assert seq[0] > seq[2]
        assert seq[2] < 0.006  # binning noise shrinks like sqrt(n_bins / n)
    # a miscalibrated predictor (probabilities sharpened) stays far from zero at every n
    p, y = _calibrated(200_000, 5, seed=1)
    sharp = p**3 / (p**3).sum(-1, keepdim=True)
    assert float(ece(sharp, y)) > 0.05
