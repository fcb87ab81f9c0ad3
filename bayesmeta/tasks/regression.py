"""Synthetic regression task families: the MAML sinusoids and Bayesian linear regression.

Both families return regression :class:`~bayesmeta.tasks.batch.TaskBatch` es with
``support_x [T, K, D]``, ``support_y [T, K, 1]``, ``query_x [T, Q, D]``, ``query_y [T, Q, 1]``
and ``n_way = None``. All randomness comes from the ``generator`` passed to ``sample`` (or torch's
default generator when it is ``None``); nothing here touches global random state.

:class:`LinearGaussian` is conjugate, so its posterior predictive is known exactly
(:meth:`LinearGaussian.exact_predictive`): it is the yardstick that Bayesian meta-learners are
measured against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bayesmeta._validation import check_positive_int, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.gaussian import LOG_2PI
from bayesmeta.predictive import GaussianPredictive
from bayesmeta.tasks.batch import SupportSet, TaskBatch

__all__ = ["Sinusoid", "SinusoidParams", "LinearGaussian"]



def _check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    """Return ``(lo, hi)`` as floats if it is a finite interval with ``lo <= hi``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{name}: expected a pair (low, high) of floats, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InvalidValueError(f"{name}: expected finite bounds with low <= high, got {value!r}")
    return lo, hi


def _check_nonneg(name: str, value: float, strict: bool = False) -> float:
    """Return ``value`` as a float if it is finite and >= 0 (> 0 when ``strict``)."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        want = "> 0" if strict else ">= 0"
        raise InvalidValueError(f"{name}: expected a finite number {want}, got {value!r}")
    return v


def _uniform(
    shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=dtype)


# --------------------------------------------------------------------------------------- sinusoid
@dataclass(frozen=True)
class SinusoidParams:
    """The true functions ``y = amplitude * sin(x - phase)`` of T sinusoid tasks.

    Attributes:
        amplitude: ``[T]``.
        phase: ``[T]``.
    """

    amplitude: torch.Tensor
    phase: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the noiseless functions at ``x`` (``[T, N, 1]``), returning ``[T, N, 1]``."""
        if x.dim() != 3 or x.shape[0] != self.amplitude.shape[0] or x.shape[2] != 1:
            raise ShapeError(
                f"x: expected a tensor [T, N, 1] with T = {self.amplitude.shape[0]}, got {describe(x)}"
            )
        return self.amplitude[:, None, None] * torch.sin(x - self.phase[:, None, None])


class Sinusoid:
    """The sinusoid regression family of MAML (Finn et al., 2017).

    Task t is ``f_t(x) = A_t sin(x - phi_t)`` with ``A_t ~ U(amplitude)``,
    ``phi_t ~ U(phase)``; inputs are uniform on ``x_range`` (support) and ``query_x_range``
    (query; defaults to ``x_range``), and targets get i.i.d. ``N(0, noise_std^2)`` noise.

    Args:
        k_shot: support points per task K.
        n_query: query points per task Q.
        amplitude: ``(low, high)`` range of A.
        phase: ``(low, high)`` range of phi (radians).
        x_range: ``(low, high)`` range of the support inputs.
        query_x_range: range of the query inputs; set it outside ``x_range`` (e.g. ``(5, 10)``)
            to test extrapolation. ``None`` means ``x_range``.
        noise_std: standard deviation of the Gaussian observation noise (0 = noiseless).
        dtype: floating dtype of the returned tensors.

    Raises:
        InvalidValueError: a non-positive size, an empty/inverted range or a negative noise.
    """

    def __init__(
        self,
        k_shot: int = 10,
        n_query: int = 10,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        query_x_range: tuple[float, float] | None = None,
        noise_std: float = 0.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_positive_int("n_query", n_query)
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x_range", x_range)
        self.query_x_range = (
            self.x_range if query_x_range is None else _check_range("query_x_range", query_x_range)
        )
        self.noise_std = _check_nonneg("noise_std", noise_std)
        if not dtype.is_floating_point:
            raise InvalidValueError(f"dtype: expected a floating-point dtype, got {dtype}")
        self.dtype = dtype

    def sample_with_params(
        self, n_tasks: int, generator: torch.Generator | None = None
    ) -> tuple[TaskBatch, SinusoidParams]:
        """Sample T tasks and return them with their true functions (for plots and checks).

        Args:
            n_tasks: T.
            generator: source of randomness; ``None`` uses torch's default generator.

        Returns:
            ``(batch, params)``: a regression batch with x and y ``[T, K, 1]`` / ``[T, Q, 1]``,
            and the ``[T]`` amplitudes and phases.
        """
        t = check_positive_int("n_tasks", n_tasks)
        g, dt = generator, self.dtype
        # draw order is fixed (params, then x, then noise) so a seed names the same tasks
        amp = _uniform((t,), self.amplitude, g, dt)
        phase = _uniform((t,), self.phase, g, dt)
        params = SinusoidParams(amp, phase)
        sx = _uniform((t, self.k_shot, 1), self.x_range, g, dt)
        qx = _uniform((t, self.n_query, 1), self.query_x_range, g, dt)
        sy, qy = params(sx), params(qx)
        if self.noise_std > 0:
            sy = sy + self.noise_std * torch.randn(sy.shape, generator=g, dtype=dt)
            qy = qy + self.noise_std * torch.randn(qy.shape, generator=g, dtype=dt)
        return TaskBatch(sx, sy, qx, qy), params

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample a batch of T tasks (see :meth:`sample_with_params`)."""
        return self.sample_with_params(n_tasks, generator)[0]

    def __repr__(self) -> str:
        return (
            f"Sinusoid(k_shot={self.k_shot}, n_query={self.n_query}, amplitude={self.amplitude}, "
            f"phase={self.phase}, x_range={self.x_range}, query_x_range={self.query_x_range}, "
            f"noise_std={self.noise_std})"
        )


# ------------------------------------------------------------------------------ linear Gaussian
class LinearGaussian:
    """Bayesian linear regression tasks over fixed features: a family with an exact posterior.

    Task t has weights ``w_t ~ N(0, prior_std^2 I_F)`` and targets
    ``y = phi(x)^T w_t + eps``, ``eps ~ N(0, noise_std^2)``, inputs uniform on ``x_range``.
    The features ``phi`` act on ``z = x / feature_scale``:

    - ``n_features=None``: ``phi(x) = [z, 1]`` (F = in_features + 1), plain linear regression
      with a bias;
    - ``n_features=F``: random Fourier features ``phi(x) = sqrt(2/F) cos(z Omega^T + b)`` with
      ``Omega ~ N(0, I)`` ``[F, D]`` and ``b ~ U(0, 2 pi)`` ``[F]``, drawn once at construction
      from ``seed``. The prior over functions then approximates a GP with covariance
      ``prior_std^2 exp(-|x - x'|^2 / (2 feature_scale^2))`` (Rahimi & Recht, 2007).

    Args:
        in_features: input dimension D.
        n_features: number of random Fourier features, or ``None`` for identity-plus-bias.
        k_shot: support points per task K.
        n_query: query points per task Q.
        prior_std: prior standard deviation of every weight, > 0.
        noise_std: observation noise standard deviation, > 0 (the posterior needs it).
        x_range: ``(low, high)`` range of every input coordinate (support).
        query_x_range: range of the query inputs; ``None`` means ``x_range``.
        feature_scale: inputs are divided by it before featurization (the RFF lengthscale).
        seed: seed of the random Fourier features (unused when ``n_features`` is ``None``).
        dtype: floating dtype of sampled tensors and of the features.

    Raises:
        InvalidValueError: a non-positive size or scale, an empty/inverted range.
    """

    def __init__(
        self,
        in_features: int = 1,
        n_features: int | None = None,
        k_shot: int = 10,
        n_query: int = 10,
        prior_std: float = 1.0,
        noise_std: float = 0.1,
        x_range: tuple[float, float] = (-5.0, 5.0),
        query_x_range: tuple[float, float] | None = None,
        feature_scale: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.in_features = check_positive_int("in_features", in_features)
        self.n_features = None if n_features is None else check_positive_int("n_features", n_features)
        self.k_shot = check_positive_int("k_shot", k_shot)
        self.n_query = check_positive_int("n_query", n_query)
        self.prior_std = _check_nonneg("prior_std", prior_std, strict=True)
        self.noise_std = _check_nonneg("noise_std", noise_std, strict=True)
        self.x_range = _check_range("x_range", x_range)
        self.query_x_range = (
            self.x_range if query_x_range is None else _check_range("query_x_range", query_x_range)
        )
        self.feature_scale = _check_nonneg("feature_scale", feature_scale, strict=True)
        if not dtype.is_floating_point:
            raise InvalidValueError(f"dtype: expected a floating-point dtype, got {dtype}")
        self.dtype = dtype
        self.seed = int(seed)
        if self.n_features is not None:
            # the feature map is part of the task family, so it gets its own seeded generator and
            # never consumes draws from the generator that samples tasks
            g = torch.Generator().manual_seed(self.seed)
            self._omega = torch.randn(self.n_features, self.in_features, generator=g, dtype=torch.float64)
            self._bias = 2.0 * math.pi * torch.rand(self.n_features, generator=g, dtype=torch.float64)

    @property
    def feature_dim(self) -> int:
        """F, the number of features (and of weights)."""
        return self.in_features + 1 if self.n_features is None else self.n_features

    # ------------------------------------------------------------------ model
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map ``phi``.

        Args:
            x: ``[..., D]`` inputs.

        Returns:
            ``[..., F]`` features, in the dtype and on the device of ``x``.
        """
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            got = describe(x) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"x: expected a tensor [..., D] with D = {self.in_features}, got {got}")
        z = x / self.feature_scale
        if self.n_features is None:
            return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)
        omega = self._omega.to(device=x.device, dtype=x.dtype)
        bias = self._bias.to(device=x.device, dtype=x.dtype)
        return math.sqrt(2.0 / self.n_features) * torch.cos(z @ omega.T + bias)

    def evaluate(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Noiseless task functions ``phi(x)^T w_t``.

        Args:
            weights: ``[T, F]``.
            x: ``[T, N, D]``.

        Returns:
            ``[T, N, 1]``.
        """
        if weights.dim() != 2 or weights.shape[1] != self.feature_dim:
            raise ShapeError(f"weights: expected a tensor [T, F] with F = {self.feature_dim}, got {describe(weights)}")
        if x.dim() != 3 or x.shape[0] != weights.shape[0]:
            raise ShapeError(f"x: expected a tensor [T, N, D] with T = {weights.shape[0]}, got {describe(x)}")
        return self.features(x) @ weights.unsqueeze(-1)

    def sample_with_params(
        self, n_tasks: int, generator: torch.Generator | None = None
    ) -> tuple[TaskBatch, torch.Tensor]:
        """Sample T tasks and return them with their true weights ``[T, F]``.

        Args:
            n_tasks: T.
            generator: source of randomness; ``None`` uses torch's default generator.

        Returns:
            ``(batch, weights)``; the batch has x ``[T, K, D]`` / ``[T, Q, D]`` and y
            ``[T, K, 1]`` / ``[T, Q, 1]``.
        """
        t = check_positive_int("n_tasks", n_tasks)
        g, dt, d = generator, self.dtype, self.in_features
        w = self.prior_std * torch.randn(t, self.feature_dim, generator=g, dtype=dt)
        sx = _uniform((t, self.k_shot, d), self.x_range, g, dt)
        qx = _uniform((t, self.n_query, d), self.query_x_range, g, dt)
        sy = self.evaluate(w, sx) + self.noise_std * torch.randn(t, self.k_shot, 1, generator=g, dtype=dt)
        qy = self.evaluate(w, qx) + self.noise_std * torch.randn(t, self.n_query, 1, generator=g, dtype=dt)
        return TaskBatch(sx, sy, qx, qy), w

    def sample(self, n_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Sample a batch of T tasks (see :meth:`sample_with_params`)."""
        return self.sample_with_params(n_tasks, generator)[0]

    # ------------------------------------------------------------ exact posterior
    def _design(self, support: SupportSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float64 design matrix ``[T, S, F]``, targets ``[T, S, 1]``, present counts ``[T]``.

        Masked points get zero rows in both, which removes them from every sufficient statistic
        (``Phi^T Phi``, ``Phi^T y``, ``y^T y``) exactly as if they had been dropped.
        """
        if not isinstance(support, SupportSet):
            raise ShapeError(f"support: expected a SupportSet, got {type(support).__name__}")
        if support.n_way is not None:
            raise ShapeError("support: LinearGaussian needs a regression support set (n_way None), got n_way "
                             f"= {support.n_way}")
        x, y = support.x, support.y
        if x.dim() != 3 or x.shape[2] != self.in_features:
            raise ShapeError(f"support.x: expected a tensor [T, S, D] with D = {self.in_features}, got {describe(x)}")
        if y.shape[2] != 1:
            raise ShapeError(f"support.y: expected targets [T, S, 1], got {describe(y)}")
        phi = self.features(x.to(torch.float64))
        y64 = y.to(torch.float64)
        if support.mask is None:
            n = torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64, device=x.device)
        else:
            keep = support.mask.unsqueeze(-1).to(torch.float64)
            phi, y64 = phi * keep, y64 * keep
            n = support.mask.sum(1).to(torch.float64)
        return phi, y64, n

    def _posterior_factors(self, phi: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cholesky factor ``L`` of the posterior precision, ``b = Phi^T y / s^2``, posterior mean.

        Precision ``A = Phi^T Phi / noise^2 + I / prior^2`` (``[T, F, F]``), mean ``A^{-1} b``.
        """
        s2, p2 = self.noise_std**2, self.prior_std**2
        eye = torch.eye(self.feature_dim, dtype=phi.dtype, device=phi.device)
        precision = phi.transpose(-1, -2) @ phi / s2 + eye / p2
        chol = torch.linalg.cholesky(precision)  # A is SPD: >= I / prior^2
        b = phi.transpose(-1, -2) @ y / s2  # [T, F, 1]
        mean = torch.cholesky_solve(b, chol)
        return chol, b, mean

    def exact_posterior(self, support: SupportSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Gaussian posterior over the weights of every task.

        Args:
            support: regression support set, x ``[T, S, D]``, y ``[T, S, 1]``, optional mask
                ``[T, S]`` (masked points are ignored).

        Returns:
            ``(mean [T, F], cov [T, F, F])`` in the dtype of ``support.x`` (computed in float64).
        """
        phi, y, _ = self._design(support)
        chol, _, mean = self._posterior_factors(phi, y)
        eye = torch.eye(self.feature_dim, dtype=phi.dtype, device=phi.device).expand_as(chol)
        cov = torch.cholesky_solve(eye, chol)
        out = support.x.dtype
        return mean.squeeze(-1).to(out), cov.to(out)

    def exact_predictive(
        self, support: SupportSet, query_x: torch.Tensor, observation_noise: bool = True
    ) -> GaussianPredictive:
        """Exact posterior predictive ``p(y* | x*, support)`` of every task.

        ``mean = phi*^T m``, ``var = phi*^T Sigma phi* (+ noise_std^2)`` with ``(m, Sigma)`` from
        :meth:`exact_posterior`; the variance is computed as ``|L^{-1} phi*|^2`` for stability.

        Args:
            support: regression support set (see :meth:`exact_posterior`).
            query_x: ``[T, Q, D]``.
            observation_noise: include ``noise_std^2`` (predict y) or not (predict f).

        Returns:
            A :class:`GaussianPredictive` with M = 1, mean and variance ``[1, T, Q, 1]``, in the
            dtype of ``query_x``.
        """
        phi, y, _ = self._design(support)
        if not isinstance(query_x, torch.Tensor) or query_x.dim() != 3 or query_x.shape[0] != phi.shape[0]:
            got = describe(query_x) if isinstance(query_x, torch.Tensor) else type(query_x).__name__
            raise ShapeError(f"query_x: expected a tensor [T, Q, D] with T = {phi.shape[0]}, got {got}")
        chol, _, mean = self._posterior_factors(phi, y)
        phi_q = self.features(query_x.to(torch.float64))  # [T, Q, F]
        pred_mean = phi_q @ mean  # [T, Q, 1]
        v = torch.linalg.solve_triangular(chol, phi_q.transpose(-1, -2), upper=False)  # [T, F, Q]
        pred_var = (v**2).sum(-2).unsqueeze(-1)  # [T, Q, 1]
        if observation_noise:
            pred_var = pred_var + self.noise_std**2
        out = query_x.dtype
        return GaussianPredictive(pred_mean.to(out).unsqueeze(0), pred_var.to(out).unsqueeze(0))

    def log_marginal_likelihood(self, support: SupportSet) -> torch.Tensor:
        """Exact log evidence ``log p(y_support)`` of every task, ``[T]`` (masked points dropped).

        Uses ``log N(y; 0, noise^2 I + prior^2 Phi Phi^T)`` rewritten in weight space:
        ``-1/2 [n log(2 pi noise^2) + y^T y / noise^2 - b^T A^{-1} b + log|A| + F log prior^2]``.
        """
        phi, y, n = self._design(support)
        chol, b, mean = self._posterior_factors(phi, y)
        s2, p2 = self.noise_std**2, self.prior_std**2
        yy = (y**2).sum((-1, -2))
        quad = (b * mean).sum((-1, -2))
        logdet_a = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        lml = -0.5 * (n * (LOG_2PI + math.log(s2)) + yy / s2 - quad + logdet_a + self.feature_dim * math.log(p2))
        return lml.to(support.x.dtype)

    def __repr__(self) -> str:
        return (
            f"LinearGaussian(in_features={self.in_features}, n_features={self.n_features}, "
            f"k_shot={self.k_shot}, n_query={self.n_query}, prior_std={self.prior_std}, "
            f"noise_std={self.noise_std}, x_range={self.x_range}, feature_scale={self.feature_scale})"
        )
