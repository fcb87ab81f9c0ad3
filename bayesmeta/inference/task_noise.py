"""Random draws that belong to a task, not to a position in a batch (DESIGN.md section 4).

A sampling learner (VERSA, NP/ANP, BMAML with a prior, PLATIPUS) must give a task the same
numbers for a given seed whatever else is in the call: alone, inside a shuffled batch, or with
its queries predicted one at a time. Drawing ``torch.randn([M, T, ...])`` breaks that (a task's
noise depends on its index and on T). Instead each task gets its own seed,

    seed_t = mix(base, key_t)

where ``base`` is *one* draw from the caller's generator (torch's default generator when none is
given) and ``key_t`` is a content key of task t's support set: a hash of the bit patterns of its
present support inputs and labels, summed over points so that it does not depend on their
order or on padding. Each task's noise then comes from its own ``torch.Generator`` seeded with
``seed_t``. Posteriors store the seeds, so repeated ``predict`` calls on one posterior (one
query at a time, say) reuse the same draws.

The hashing is integer arithmetic on int64 tensors (wrapping multiplication and addition), which
is exact and order-independent on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["task_keys", "task_seeds", "task_randn"]

_M64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v >= (1 << 63) else v


# splitmix64's finalizer constants, as signed int64
_C1 = _signed(0xBF58476D1CE4E5B9)
_C2 = _signed(0x94D049BB133111EB)
_GOLDEN = _signed(0x9E3779B97F4A7C15)


def _lshr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic on negative values)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (two's-complement wrapping arithmetic)."""
    z = z ^ _lshr(z, 30)
    z = z * _C1
    z = z ^ _lshr(z, 27)
    z = z * _C2
    return z ^ _lshr(z, 31)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The exact bit pattern of every entry of ``[T, N, ...]`` as int64 ``[T, N, F]``."""
    t = t.detach().contiguous()
    if t.is_floating_point():
        as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
        t = t.view(as_int)
    return t.reshape(t.shape[0], t.shape[1], -1).to(torch.int64)


def _coefficients(n: int, salt: int, device: torch.device) -> torch.Tensor:
    """``n`` fixed odd int64 multipliers (a fixed generator: the same on every call and machine)."""
    g = torch.Generator().manual_seed(salt)
    c = torch.randint(-(2**62), 2**62, (n,), generator=g, dtype=torch.int64) | 1
    return c.to(device)


def _row_hash(t: torch.Tensor, salt: int) -> torch.Tensor:
    b = _bits(t)
    if t.is_floating_point():
        # -0.0 and 0.0 are the same number: give them one bit pattern
        b = torch.where(b == -(1 << (8 * t.element_size() - 1)), torch.zeros_like(b), b)
    return mix64((b * _coefficients(b.shape[-1], salt, b.device)).sum(-1))  # [T, N]


def task_keys(x: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A content key per task, independent of point order and of padded points.

    Args:
        x: ``[T, N, ...]`` inputs of each task's set (usually the support set).
        y: ``[T, N]`` labels or ``[T, N, Dy]`` targets, or ``None``.
        mask: ``[T, N]`` bool (True: present), or ``None`` for all present.

    Returns:
        ``[T]`` int64 keys; equal sets give equal keys on any device.
    """
    rows = _row_hash(x, 0x51ED)
    if y is not None:
        rows = mix64(rows ^ _row_hash(y, 0x7A6B))
    if mask is not None:
        rows = torch.where(mask, rows, torch.zeros_like(rows))
    count = torch.full_like(rows[:, 0], rows.shape[1]) if mask is None else mask.sum(1).to(torch.int64)
    return mix64(rows.sum(1) + count * _GOLDEN)


def task_seeds(keys: torch.Tensor, generator: torch.Generator | None = None) -> tuple[int, ...]:
    """One seed per task from its key and a single draw of the caller's generator.

    Args:
        keys: ``[T]`` int64 from :func:`task_keys`.
        generator: where the one shared draw comes from (torch's default CPU generator if
            ``None``), so that seeding the caller's generator reproduces every task's noise.

    Returns:
        T non-negative Python ints, usable with ``torch.Generator.manual_seed``.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    base = torch.randint(0, 2**62, (1,), generator=generator, device=device, dtype=torch.int64).cpu()
    seeds = mix64(keys.detach().cpu() ^ base) & ((1 << 63) - 1)
    return tuple(int(s) for s in seeds.tolist())


def task_randn(
    seeds: Sequence[int], shapes: Sequence[Sequence[int]], dtype: torch.dtype, device: torch.device | str
) -> list[torch.Tensor]:
    """Standard normal draws of the given shapes for every task, each from that task's seed.

    Args:
        seeds: T seeds from :func:`task_seeds`.
        shapes: per-task shapes, drawn in this order from one generator per task.
        dtype, device: of the draws.

    Returns:
        One tensor ``[T, *shape]`` per entry of ``shapes``; task t's slices depend only on
        ``seeds[t]`` and ``shapes``.
    """
    per_task: list[list[torch.Tensor]] = []
    dev = torch.device(device)
    for s in seeds:
        g = torch.Generator(device=dev).manual_seed(int(s))
        per_task.append([torch.randn(tuple(sh), generator=g, dtype=dtype, device=dev) for sh in shapes])
    return [torch.stack([d[i] for d in per_task]) for i in range(len(shapes))]
