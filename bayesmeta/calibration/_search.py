"""One-dimensional minimization shared by the scaling calibrators (private).

Temperature and variance scaling each fit one scalar by minimizing a validation NLL. A grid
followed by golden-section search needs no gradients and no ``torch.optim`` (whose first use
imports the compiler stack: seconds of start-up), and the grid guards against a poor local optimum
of a mixture's NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["minimize_1d"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def minimize_1d(f: Callable[[float], float], lo: float, hi: float, n_grid: int, tol: float = 1e-9) -> float:
    """Grid search on ``[lo, hi]``, then golden-section search in the best point's bracket.

    A minimum at an end of the grid extends the bracket to twice the range, the hard bound.

    Args:
        f: the objective.
        lo: lower end of the grid.
        hi: upper end of the grid.
        n_grid: grid points (>= 3).
        tol: width of the final bracket.

    Returns:
        The argmin (midpoint of the final bracket).
    """
    step = (hi - lo) / (n_grid - 1)
    grid = [lo + i * step for i in range(n_grid)]
    values = [f(x) for x in grid]
    i = min(range(n_grid), key=values.__getitem__)
    a = grid[i - 1] if i > 0 else 2.0 * lo
    b = grid[i + 1] if i < n_grid - 1 else 2.0 * hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return 0.5 * (a + b)
