"""numpy's BLAS on one thread while a trainer fits.

The trainers' fits (L-BFGS over a logistic loss, Adam over small matrices) make many
products of a few thousand numbers each; OpenBLAS splits each one across a thread per
core, and on a busy machine those threads mostly wait for each other (docs/benchmarks.md,
"The trainers' BLAS threads"). One thread computes the same numbers: the artifacts are
the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["one_blas_thread"]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread inside the block, as it was after it.

    The limit is the process's, not the calling thread's: blocks in two threads that
    overlap may leave the second one's saved setting in force afterwards."""
    from threadpoolctl import threadpool_limits  # its library scan: for training only

    with threadpool_limits(limits=1, user_api="blas"):
        yield
