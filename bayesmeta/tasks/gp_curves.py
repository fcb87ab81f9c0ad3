"""1-D curves sampled from Gaussian processes: the standard neural-process benchmark.

Setup of the neural-process papers (Garnelo et al., 2018; Kim et al., 2019, ``GPCurvesReader``):
each task is a draw from a zero-mean GP with the RBF kernel
``k(x, x') = s^2 exp(-(x - x')^2 / (2 l^2))`` whose length-scale ``l ~ U(0.1, 0.6)`` and output
scale ``s ~ U(0.1, 1.0)`` are drawn per task, observed with Gaussian noise of standard deviation
0.02 at inputs uniform on ``[-2, 2]``. The number of context points is uniform on
``[min_context, max_context]`` per task (the papers: ``[3, 50)``).

Layout: the context (support) set is padded to ``max_context`` points with a ``support_mask``
``[T, max_context]`` marking the present ones (no mask when the size is fixed); the target (query)
set holds ``n_target`` further points of the same curve. Unlike the papers' reader, the query set
does not repeat the context points — the neural-process learners add them to their training targets
themselves (``context_in_target``), and evaluation stays on held-out points.

Because the generating process is known, :meth:`GPCurves.exact_predictive` gives the Bayes-optimal
predictive (the GP posterior under the true hyperparameters): the yardstick for every learner.
All randomness comes from the ``generator`` given to ``sample``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.gaussian import gp_condition, gp_predict
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["GPCurves", "GPCurveParams"]

#: Relative diagonal jitter for the Cholesky factorization (noise_std may be 0).
_JITTER = 1e-8


def _range(name: str, value: float | tuple[float, float], positive: bool) -> tuple[float, float]:
    """A ``(low, high)`` interval from a pair or a single number (a point interval)."""
    try:
        lo, hi = (float(value), float(value)) if isinstance(value, int | float) else (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{name}: expected a number or a pair (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (positive and lo <= 0):
        want = "0 < low <= high" if positive else "low <= high"
        raise InvalidValueError(f"{name}: expected finite bounds with {want}, got {value!r}")
    return lo, hi


def _uniform(n: int, bounds: tuple[float, float], g: torch.Generator | None) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


@dataclass(frozen=True)
class GPCurveParams:
    """The kernel hyperparameters of T sampled curves.

    Attributes:
        length_scale: ``[T]`` RBF length-scales l.
        output_scale: ``[T]`` output standard deviations s.
        noise_std: observation noise standard deviation (shared).
    """

    length_scale: torch.Tensor
    output_scale: torch.Tensor
    noise_std: float


class GPCurves:
    """Few-shot regression tasks drawn from GPs with random RBF hyperparameters.

    Args:
        min_context: smallest context (support) size, >= 1.
        max_context: largest context size; the support tensors are padded to it.
        n_target: query points per task.
        length_scale: ``(low, high)`` range of the RBF length-scale (or one value).
        output_scale: ``(low, high)`` range of the output standard deviation (or one value).
        x_range: ``(low, high)`` range of the inputs.
        noise_std: standard deviation of the observation noise on every y (>= 0).
        query_grid: put the query inputs on an even grid over ``x_range`` (for plots) instead of
            sampling them uniformly.
        dtype: floating dtype of the returned tensors (sampling itself runs in float64).

    Raises:
        InvalidValueError: a size < 1, ``min_context > max_context``, a bad range or a negative
            noise.
    """

    def __init__(
        self,
        min_context: int = 3,
        max_context: int = 50,
        n_target: int = 50,
        length_scale: float | tuple[float, float] = (0.1, 0.6),
        output_scale: float | tuple[float, float] = (0.1, 1.0),
        x_range: tuple[float, float] = (-2.0, 2.0),
        noise_std: float = 0.02,
        query_grid: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.min_context = check_positive_int("min_context", min_context)
        self.max_context = check_positive_int("max_context", max_context)
        if self.min_context > self.max_context:
            raise InvalidValueError(
                f"min_context: expected <= max_context = {max_context}, got {min_context}"
            )
        self.n_target = check_positive_int("n_target", n_target)
        self.length_scale = _range("length_scale", length_scale, positive=True)
        self.output_scale = _range("output_scale", output_scale, positive=True)
        self.x_range = _range("x_range", x_range, positive=False)
        self.noise_std = float(noise_std)
        if not math.isfinite(self.noise_std) or self.noise_std < 0:
            raise InvalidValueError(f"noise_std: expected a finite number >= 0, got {noise_std!r}")
        self.query_grid = bool(query_grid)
        if not dtype.is_floating_point:
            raise InvalidValueError(f"dtype: expected a floating-point dtype, got {dtype}")
        self.dtype = dtype

    # ------------------------------------------------------------------ kernel
    @staticmethod
    def kernel(x1: torch.Tensor, x2: torch.Tensor, length_scale: torch.Tensor, output_scale: torch.Tensor) -> torch.Tensor:
        """RBF kernel per task.

        Args:
            x1: ``[T, N, 1]``.
            x2: ``[T, M, 1]``.
            length_scale: ``[T]``.
            output_scale: ``[T]``.

        Returns:
            ``[T, N, M]``.
        """
        d2 = (x1 - x2.transpose(1, 2)) ** 2  # [T, N, M]
        l2 = (length_scale**2)[:, None, None]
        return (output_scale**2)[:, None, None] * torch.exp(-0.5 * d2 / l2)

    # ----------------------------------------------------------------- sampling
    def sample_with_params(
        self, n_tasks: int, generator: torch.Generator | None = None
    ) -> tuple[TaskBatch, GPCurveParams]:
        """Sample T curves and return them with their hyperparameters.

        Args:
            n_tasks: T.
            generator: source of randomness (``None``: torch's default generator).

        Returns:
            ``(batch, params)``: support ``[T, max_context, 1]`` (+ ``support_mask`` when the
            context size varies), query ``[T, n_target, 1]``.
        """
        t = check_positive_int("n_tasks", n_tasks)
        g, c, q = generator, self.max_context, self.n_target
        # fixed draw order (hyperparameters, sizes, inputs, curves) so a seed names the same tasks
        ls = _uniform(t, self.length_scale, g)
        os_ = _uniform(t, self.output_scale, g)
        n_ctx = torch.randint(self.min_context, self.max_context + 1, (t,), generator=g)
        lo, hi = self.x_range
        sx = lo + (hi - lo) * torch.rand((t, c, 1), generator=g, dtype=torch.float64)
        if self.query_grid:
            qx = torch.linspace(lo, hi, q, dtype=torch.float64).reshape(1, q, 1).expand(t, q, 1)
        else:
            qx = lo + (hi - lo) * torch.rand((t, q, 1), generator=g, dtype=torch.float64)
        x = torch.cat([sx, qx], dim=1)  # [T, C + Q, 1]
        k = self.kernel(x, x, ls, os_)
        eye = torch.eye(c + q, dtype=torch.float64)
        k = k + (self.noise_std**2 + _JITTER * (os_**2)[:, None, None]) * eye
        chol = torch.linalg.cholesky(k)
        y = chol @ torch.randn((t, c + q, 1), generator=g, dtype=torch.float64)  # [T, C + Q, 1]
        mask = None
        if self.min_context < self.max_context:
            mask = torch.arange(c).unsqueeze(0) < n_ctx.unsqueeze(1)  # [T, C]
        dt = self.dtype
        batch = TaskBatch(
            sx.to(dt), y[:, :c].to(dt), qx.contiguous().to(dt), y[:, c:].to(dt), support_mask=mask
        )
        return batch, GPCurveParams(ls.to(dt), os_.to(dt), self.noise_std)

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample a batch of T curves (see :meth:`sample_with_params`)."""
        return self.sample_with_params(n_tasks, generator)[0]

    # ------------------------------------------------------------------ oracle
    def exact_predictive(
        self, support: SupportSet, query_x: torch.Tensor, params: GPCurveParams
    ) -> GaussianPredictive:
        """The GP posterior predictive of noisy targets under the true hyperparameters.

        Hidden support points are decoupled (unit prior variance, zero cross-covariance, y = 0)
        so that they carry no information.

        Args:
            support: ``x, y [T, S, 1]`` with an optional mask.
            query_x: ``[T, Q, 1]``.
            params: the hyperparameters the tasks were drawn with.

        Returns:
            ``GaussianPredictive`` with ``[1, T, Q, 1]`` mean and variance (noise included).
        """
        sx, sy = support.x, support.y
        if sx.dim() != 3 or sx.shape[-1] != 1 or sy.shape != sx.shape:
            raise ShapeError(f"support: expected x and y of shape [T, S, 1], got {describe(sx)} and {describe(sy)}")
        if query_x.dim() != 3 or query_x.shape[-1] != 1 or query_x.shape[0] != sx.shape[0]:
            raise ShapeError(f"query_x: expected [T, Q, 1] with T = {sx.shape[0]}, got {describe(query_x)}")
        f64 = torch.float64
        sx, sy, qx = sx.to(f64), sy.to(f64), query_x.to(f64)
        ls, os_ = params.length_scale.to(f64), params.output_scale.to(f64)
        noise = params.noise_std**2 + _JITTER * os_**2  # [T]
        k_ss = self.kernel(sx, sx, ls, os_)
        chol, alpha, _, _ = gp_condition(
            k_ss, torch.zeros(sx.shape[:2], dtype=f64), sy, noise, support.mask, name="GPCurves oracle kernel matrix"
        )
        mean, latent_var = gp_predict(chol, alpha, self.kernel(qx, sx, ls, os_), (os_**2)[:, None].expand(qx.shape[:2]), support.mask)
        var = (latent_var + params.noise_std**2).clamp_min(1e-12).unsqueeze(-1)  # [T, Q, 1]
        dt = query_x.dtype
        return GaussianPredictive(mean.to(dt), var.to(dt))

    def __repr__(self) -> str:
        return (
            f"GPCurves(min_context={self.min_context}, max_context={self.max_context}, "
            f"n_target={self.n_target}, length_scale={self.length_scale}, "
            f"output_scale={self.output_scale}, x_range={self.x_range}, noise_std={self.noise_std}, "
            f"query_grid={self.query_grid})"
        )
