"""Stein variational gradient descent as pure, differentiable functions (Liu & Wang, 2016).

SVGD moves M particles ``x_1..x_M`` (each a flat vector of P numbers) along

    phi*(x_i) = 1/M sum_j [ k(x_j, x_i) grad log p(x_j) + tau * grad_{x_j} k(x_j, x_i) ]

with an RBF kernel ``k(x, y) = exp(-|x - y|^2 / h)``: the first (driving) term pulls particles
towards high density, the second (repulsive) term pushes them apart so that at the fixed point
the particles approximate p. ``tau = 1`` is plain SVGD; a ``tau`` != 1 (used by BMAML to rescale a
log posterior into MAML's units) makes ``phi*`` the SVGD direction of ``p^(1/tau)`` multiplied
by ``tau``, which with the score of ``p^tau`` is ``tau`` times the direction of p (see
:func:`svgd_direction`).

Why not ``pyro.infer.SVGD``: it runs under ``torch.no_grad`` and keeps its particles in Pyro's
global parameter store, so no meta-gradient can flow through it (DESIGN.md section 4). Everything
here is a pure function of tensors, safe under ``torch.func.vmap`` and ``torch.func.grad``, and
differentiable by the outer autograd. The tests check it against ``pyro.infer.SVGD`` on a fixed
Gaussian target.

Bandwidth: the median heuristic ``h = med^2 / log M`` (``med^2`` the median of the pairwise
squared distances between distinct particles, the lower median when their number is even), as in
the BMAML paper. It is computed from *detached* particles: the bandwidth is a tuning choice, not
part of the model, and differentiating the median would give a meaningless, noisy gradient.
With M = 1 the kernel is ``[[1]]`` and its gradient zero whatever h, so SVGD is gradient ascent
on ``log p``; that is how BMAML reduces to MAML.

Shapes: ``particles [M, P]``, scores ``[M, P]``; the ``*_steps`` functions work on parameter dicts
``{name: [M, *shape]}`` (one task) or ``{name: [T, M, *shape]}`` (batched).

The public functions validate their inputs (finite particles, M >= 1, a positive bandwidth);
:func:`svgd_steps` and :func:`batched_svgd_steps` run inside ``vmap`` and assume checked inputs
(data-dependent checks are impossible there), so callers check particles at the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import grad, vmap

from bayesmeta._validation import check_finite, check_ndim, describe
from bayesmeta.exceptions import InvalidValueError, ShapeError
from bayesmeta.inference.inner_loop import Params, as_batched, chunks, loss_gradient

__all__ = [
    "LogTarget",
    "median_bandwidth",
    "rbf_kernel",
    "svgd_direction",
    "stein_update",
    "flatten_particles",
    "unflatten_particles",
    "svgd_steps",
    "batched_svgd_steps",
]

#: ``log_target(params, x, y, mask) -> scalar``: the (unnormalized) log density that SVGD samples,
#: for one particle of one task; same signature as :data:`~bayesmeta.inference.inner_loop.TaskLoss`.
LogTarget = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Smallest bandwidth the median heuristic may return: when all particles coincide the median is
# zero, and the kernel (all ones) and its gradient (zero) do not depend on h, so any positive
# value gives the same direction while avoiding 0/0.
_MIN_BANDWIDTH = 1e-12


# ---------------------------------------------------------------------------- checks
def _check_particles(particles: torch.Tensor) -> None:
    check_ndim("particles", particles, 2, "[M, P]")
    if particles.shape[0] < 1:
        raise InvalidValueError(f"particles: expected M >= 1 particles, got {describe(particles)}")
    if not particles.is_floating_point():
        raise InvalidValueError(f"particles: expected a floating-point tensor, got {describe(particles)}")
    check_finite("particles", particles)


def _check_bandwidth(bandwidth: float | torch.Tensor | None) -> None:
    if bandwidth is None:
        return
    value = bandwidth.detach() if isinstance(bandwidth, torch.Tensor) else bandwidth
    try:
        ok = bool(torch.as_tensor(value).numel() == 1 and math.isfinite(float(value)) and float(value) > 0)
    except (TypeError, ValueError):
        ok = False
    if isinstance(bandwidth, bool) or not ok:
        raise InvalidValueError(
            f"bandwidth: expected a positive finite number or None (median heuristic), got {bandwidth!r}"
        )


# ---------------------------------------------------------------------- unchecked core
def _d2_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ``[M, M]`` from the Gram matrix (no ``[M, M, P]`` intermediate)."""
    sq = torch.diagonal(gram)
    # rounding can make the Gram form slightly negative on and near the diagonal
    return (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * gram).clamp_min(0.0)


def _sq_dists(particles: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ``[M, M]`` of flat particles ``[M, P]``."""
    return _d2_from_gram(particles @ particles.transpose(0, 1))


def _median_of_d2(d2: torch.Tensor) -> torch.Tensor:
    """``med^2 / log M`` from squared distances ``[M, M]`` (M >= 2), without grad."""
    m = d2.shape[0]
    with torch.no_grad():
        iu = torch.triu_indices(m, m, offset=1, device=d2.device)
        med = torch.median(d2.detach()[iu[0], iu[1]])  # lower median of the M (M - 1) / 2 pairs
        return (med / math.log(m)).clamp_min(_MIN_BANDWIDTH)


def _median_bandwidth(particles: torch.Tensor) -> torch.Tensor:
    if particles.shape[0] == 1:
        return torch.ones((), dtype=particles.dtype, device=particles.device)
    return _median_of_d2(_sq_dists(particles.detach()))


def _rbf_kernel(
    particles: torch.Tensor, bandwidth: float | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    m = particles.shape[0]
    if m == 1:
        # k(x, x) = 1 and its gradient vanishes: written out so that M = 1 is exactly gradient
        # ascent (no 0 * inf from the heuristic, no rounding from exp(-0 / h)).
        return torch.ones(1, 1, dtype=particles.dtype, device=particles.device), torch.zeros_like(particles)
    h = _median_bandwidth(particles) if bandwidth is None else bandwidth
    k = torch.exp(-_sq_dists(particles) / h)  # [M, M], symmetric
    # sum_j grad_{x_j} k(x_j, x_i) = sum_j k_ij * (-2 / h) (x_j - x_i)
    #                              = (2 / h) (x_i sum_j k_ij - sum_j k_ij x_j)
    repulsion = (2.0 / h) * (particles * k.sum(1, keepdim=True) - k @ particles)  # [M, P]
    return k, repulsion


def _stein_direction(
    views: Params,
    scores: Params,
    bandwidth: float | torch.Tensor | None,
    temperature: float | torch.Tensor,
    normalize: bool,
) -> Params:
    """The one Stein direction ``phi*``, per parameter tensor: views and scores ``{name: [M, P_k]}``, M >= 2.

    Only the kernel needs all parameters at once (a sum of per-parameter Gram matrices); the
    direction is then formed per parameter tensor. Flattening into ``[M, P]`` would copy every
    parameter twice per step and keep those copies for the backward pass: for small networks
    the parameter-sized tensors, not the activations, dominate the memory of the inner loop.
    Every public entry point (:func:`svgd_direction`, :func:`stein_update`, the ``*_steps``
    functions) goes through here, so the update BMAML runs is the one checked against Pyro.
    """
    m = next(iter(views.values())).shape[0]
    gram = sum(v @ v.transpose(0, 1) for v in views.values())
    d2 = _d2_from_gram(gram)
    h = _median_of_d2(d2) if bandwidth is None else bandwidth
    k_mat = torch.exp(-d2 / h)  # [M, M], symmetric
    k_sum = k_mat.sum(1, keepdim=True)  # [M, 1]
    out: Params = {}
    for name, v in views.items():
        # repulsion: sum_j grad_{x_j} k(x_j, x_i) = (2 / h) (x_i sum_j k_ij - sum_j k_ij x_j)
        repulsion = (2.0 / h) * (v * k_sum - k_mat @ v)
        total = k_mat @ scores[name] + temperature * repulsion
        out[name] = total / k_sum if normalize else total / m
    return out


def _svgd_direction(
    particles: torch.Tensor,
    scores: torch.Tensor,
    bandwidth: float | torch.Tensor | None,
    temperature: float | torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    if particles.shape[0] == 1:
        return scores  # K = [[1]], no repulsion: exactly the score, bit for bit
    return _stein_direction({"x": particles}, {"x": scores}, bandwidth, temperature, normalize)["x"]


# ------------------------------------------------------------------------- public API
def median_bandwidth(particles: torch.Tensor) -> torch.Tensor:
    """The median-heuristic bandwidth ``h = med^2 / log M`` (detached).

    Args:
        particles: ``[M, P]``.

    Returns:
        A 0-d tensor ``h > 0`` without grad; ``1`` for M = 1 (where h does not matter).

    Raises:
        ShapeError: ``particles`` is not 2-d.
        InvalidValueError: M < 1 or non-finite particles.
    """
    _check_particles(particles)
    return _median_bandwidth(particles)


def rbf_kernel(
    particles: torch.Tensor, bandwidth: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RBF kernel matrix between particles and the summed kernel gradient SVGD needs.

    ``K_ij = exp(-|x_i - x_j|^2 / h)``. The gradient is returned already summed over the first
    argument, ``grad_K[i] = sum_j grad_{x_j} k(x_j, x_i)`` (the repulsive force on particle i),
    which is all SVGD uses and costs ``O(M^2 + M P)`` memory instead of ``O(M^2 P)``.

    Args:
        particles: ``[M, P]`` flat particles; differentiable (the kernel carries the graph).
        bandwidth: h > 0, or ``None`` for the detached median heuristic.

    Returns:
        ``(K [M, M], grad_K [M, P])``.

    Raises:
        ShapeError: ``particles`` is not 2-d.
        InvalidValueError: M < 1, NaN/Inf particles, or a non-positive bandwidth.
    """
    _check_particles(particles)
    _check_bandwidth(bandwidth)
    return _rbf_kernel(particles, bandwidth)


def svgd_direction(
    particles: torch.Tensor,
    log_prob_grads: torch.Tensor,
    bandwidth: float | torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """The Stein variational direction ``phi*`` at every particle (ascend it: ``x + eps phi*``).

    ``phi*(x_i) = 1/M sum_j [k(x_j, x_i) s_j + temperature * grad_{x_j} k(x_j, x_i)]`` with
    ``s_j = log_prob_grads[j]``. For ``temperature = 1`` this is SVGD for the density whose score
    is ``s``. Passing ``s = tau * grad log p`` and ``temperature = tau`` gives ``tau`` times the
    SVGD direction of p: the same fixed point, with the step measured in other units.

    ``normalize=True`` divides particle i's direction by ``sum_j k(x_j, x_i)`` instead of M. With
    the median heuristic that sum is about 2 whatever M, so plain SVGD moves a particle about
    M / 2 times slower than gradient ascent with the same step size; normalized, a particle far
    from the others moves exactly like gradient ascent. A positive per-particle factor changes
    the path, not the fixed points (``phi*(x_i) = 0`` either way), and nothing changes for M = 1.

    Args:
        particles: ``[M, P]``.
        log_prob_grads: ``[M, P]``, the score ``grad log p`` at each particle.
        bandwidth: h > 0 or ``None`` (median heuristic, detached).
        temperature: weight of the repulsive term, > 0.
        normalize: divide by the kernel row sums instead of M (see above).

    Returns:
        ``[M, P]``; equal to ``log_prob_grads`` when M = 1.

    Raises:
        ShapeError: the two tensors' shapes differ or are not 2-d.
        InvalidValueError: M < 1, non-finite inputs, a non-positive bandwidth.
    """
    _check_particles(particles)
    _check_bandwidth(bandwidth)
    if not isinstance(log_prob_grads, torch.Tensor) or log_prob_grads.shape != particles.shape:
        got = describe(log_prob_grads) if isinstance(log_prob_grads, torch.Tensor) else type(log_prob_grads).__name__
        raise ShapeError(f"log_prob_grads: expected shape {list(particles.shape)} to match particles, got {got}")
    check_finite("log_prob_grads", log_prob_grads)
    t = float(temperature.detach()) if isinstance(temperature, torch.Tensor) and temperature.numel() == 1 else temperature
    if isinstance(t, (int, float)) and not (math.isfinite(t) and t > 0):
        raise InvalidValueError(f"temperature: expected a positive finite number, got {temperature!r}")
    return _svgd_direction(particles, log_prob_grads, bandwidth, temperature, bool(normalize))


def flatten_particles(params: Params) -> torch.Tensor:
    """Concatenate a dict of ``[M, *shape]`` tensors into ``[M, P]`` (dict order)."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], dim=1)


def unflatten_particles(flat: torch.Tensor, like: Params) -> Params:
    """Inverse of :func:`flatten_particles`: split ``[M, P]`` into tensors shaped like ``like``."""
    out: Params = {}
    i = 0
    for k, v in like.items():
        n = v[0].numel()
        out[k] = flat[:, i:i + n].reshape(v.shape)
        i += n
    return out


def _gaussian_prior_score(particles: Params, prior: tuple[Params, Params]) -> Params:
    """``grad log N(p; mean, diag(1 / precision))`` of every particle, ``{name: [M, *shape]}``."""
    mean, precision = prior
    return {k: -(p - mean[k]) * precision[k] for k, p in particles.items()}


def svgd_steps(
    log_target: LogTarget,
    particles: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float,
    bandwidth: float | torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    normalize: bool = False,
    prior: tuple[Params, Params] | None = None,
) -> Params:
    """``steps`` SVGD updates ``x <- x + lr * phi*(x)`` of one task's particles.

    The score of every particle is ``torch.func.grad(log_target)`` vmapped over the particle
    dimension, plus ``temperature`` times the score of an optional diagonal Gaussian ``prior``
    (added in closed form, ``-(x - mean) * precision``: differentiating a log density over every
    parameter inside ``grad`` would cost a second backward pass through it for nothing). The
    kernel couples the particles. Differentiable in ``particles`` (second order), in ``prior``
    and in anything ``log_target`` closes over. With M = 1 no kernel is formed at all, and a step
    is exactly ``x + lr * score``.

    Args:
        log_target: ``log_target(params, x, y, mask) -> scalar`` for one particle.
        particles: ``{name: [M, *shape]}``.
        x: ``[S, ...]`` inputs of the task; y: ``[S]`` or ``[S, Dy]``; mask: ``[S]`` bool.
        steps: number of updates, >= 0.
        lr: step size.
        bandwidth: h or ``None`` (median heuristic, recomputed every step, detached).
        temperature: repulsion weight and prior weight, see :func:`svgd_direction`.
        normalize: kernel-row-sum normalization, see :func:`svgd_direction`.
        prior: ``(mean, precision)``, dicts of ``[*shape]`` tensors, or ``None``.

    Returns:
        Updated particles, same keys and shapes.
    """
    score_fn = vmap(grad(log_target), in_dims=(0, None, None, None))
    for _ in range(steps):
        score = score_fn(particles, x, y, mask)
        if prior is not None:
            ps = _gaussian_prior_score(particles, prior)
            score = {k: v + temperature * ps[k] for k, v in score.items()}
        particles = stein_update(particles, score, lr, bandwidth, temperature, normalize)
    return particles


def stein_update(
    particles: Params,
    score: Params,
    lr: float,
    bandwidth: float | torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    normalize: bool = False,
) -> Params:
    """One SVGD update ``x + lr * phi*(x)`` of a parameter dict of M particles (unchecked: vmap-safe).

    The same direction as :func:`svgd_direction` on the flattened particles, formed parameter by
    parameter; with M = 1 it is exactly gradient ascent ``x + lr * score``.

    Args:
        particles: ``{name: [M, *shape]}``.
        score: ``{name: [M, *shape]}``, the score at each particle.
        lr: step size.
        bandwidth, temperature, normalize: as in :func:`svgd_direction`.

    Returns:
        Updated particles, same keys and shapes.
    """
    m = next(iter(particles.values())).shape[0]
    if m == 1:
        return {k: p + lr * score[k] for k, p in particles.items()}
    views = {k: p.reshape(m, -1) for k, p in particles.items()}
    direction = _stein_direction(views, {k: score[k].reshape(m, -1) for k in views}, bandwidth, temperature, normalize)
    return {k: (views[k] + lr * direction[k]).reshape(particles[k].shape) for k in views}


def batched_svgd_steps(
    log_target: LogTarget,
    particles: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    steps: int,
    lr: float,
    bandwidth: float | torch.Tensor | None = None,
    temperature: float | torch.Tensor = 1.0,
    normalize: bool = False,
    prior: tuple[Params, Params] | None = None,
    chunk_size: int | None = None,
) -> Params:
    """:func:`svgd_steps` for T tasks at once.

    The scores of all T * M particles come from one batched evaluation of ``log_target`` and one
    ``torch.autograd.grad`` (:func:`~bayesmeta.inference.inner_loop.loss_gradient`, the inner
    loop's gradient; ``log_target``'s ``batched`` form when it has one); the kernel, which
    couples only the particles of one task, is formed per task under ``vmap``. Task t's result
    depends only on task t's particles and data.

    Args:
        log_target, steps, lr, bandwidth, normalize, prior: as in :func:`svgd_steps`; the
            prior is shared by all tasks.
        particles: ``{name: [T, M, *shape]}``, one particle set per task.
        x: ``[T, S, ...]``; y: ``[T, S]`` or ``[T, S, Dy]``; mask: ``[T, S]`` bool or ``None``
            (every point present).
        temperature: a number, or a ``[T]`` tensor (one weight per task).
        chunk_size: tasks per chunk (``None``: all at once); caps peak memory.

    Returns:
        Updated particles ``{name: [T, M, *shape]}``.
    """
    if steps == 0:
        return dict(particles)
    per_task_temp = isinstance(temperature, torch.Tensor) and temperature.dim() == 1
    t, m = next(iter(particles.values())).shape[:2]
    if chunk_size is not None and chunk_size < t:
        parts = [
            batched_svgd_steps(
                log_target, {k: v[c] for k, v in particles.items()}, x[c], y[c], None if mask is None else mask[c], steps, lr, bandwidth,
                temperature[c] if per_task_temp else temperature, normalize, prior, None,
            )
            for c in chunks(t, chunk_size)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in particles}
    target = as_batched(log_target)

    def flat(v: torch.Tensor) -> torch.Tensor:  # [T, ...] -> [T * M, ...], task t's rows repeated
        return v if m == 1 else v.unsqueeze(1).expand(t, m, *v.shape[1:]).reshape(t * m, *v.shape[1:])

    xf, yf, mf = flat(x), flat(y), None if mask is None else flat(mask)
    if not torch.is_grad_enabled():
        particles = {k: v.detach() for k, v in particles.items()}
    second_order = torch.is_grad_enabled() and any(v.requires_grad for v in particles.values())
    if m == 1:
        # K = [[1]]: exactly gradient ascent, no kernel; the steps run on [T, *shape] views
        # (squeeze, not reshape: the starting particles may be a stride-0 expansion)
        flat = {k: v.squeeze(1) for k, v in particles.items()}
        for _ in range(steps):
            score = loss_gradient(target, flat, xf, yf, mf, create_graph=second_order)
            if prior is not None:
                ps = _gaussian_prior_score(flat, prior)
                score = {k: v + _per_task(temperature, v) * ps[k] for k, v in score.items()}
            flat = {k: torch.add(p, score[k], alpha=lr) for k, p in flat.items()}  # one op per parameter
        return {k: v.unsqueeze(1) for k, v in flat.items()}
    update = vmap(stein_update, in_dims=(0, 0, None, None, 0 if per_task_temp else None, None))
    for _ in range(steps):
        flat_p = {k: v.reshape(t * m, *v.shape[2:]) for k, v in particles.items()}
        score = loss_gradient(target, flat_p, xf, yf, mf, create_graph=second_order)
        score = {k: g.reshape(particles[k].shape) for k, g in score.items()}
        if prior is not None:
            ps = _gaussian_prior_score(particles, prior)
            score = {k: v + _per_task(temperature, v) * ps[k] for k, v in score.items()}
        particles = update(particles, score, lr, bandwidth, temperature, normalize)
    return particles


def _per_task(temperature: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A ``[T]`` temperature as ``[T, 1, ..., 1]`` to broadcast against ``like`` ``[T, M, ...]``."""
    if isinstance(temperature, torch.Tensor) and temperature.dim() == 1:
        return temperature.reshape(-1, *([1] * (like.dim() - 1)))
    return temperature
