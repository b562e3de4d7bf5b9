"""Whether a tensor's values can be looked at now: not while compiling, tracing, or inside ``torch.func``.

Validation that reads values (a named error for a bad target) runs only where reading is possible;
the computations themselves never branch on values.
"""

from __future__ import annotations

import torch

__all__ = ["is_symbolic", "is_functorch_wrapped", "values_readable"]


def is_functorch_wrapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is wrapped by a ``torch.func`` transform (``grad``, ``vmap``, ``jacrev``, …)."""
    if torch.compiler.is_compiling():
        return False  # Dynamo traces torch.func itself, and warns that it cannot trace the builtin below
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # pragma: no cover - older torch
        return False


def values_readable(x: torch.Tensor) -> bool:
    """Whether torch can read ``x``'s values now: not batched by ``torch.func.vmap`` at any level (the wrappers
    of ``grad`` and ``jacrev`` hold concrete values; numpy still cannot read them)."""
    if torch.compiler.is_compiling():
        return True
    functorch = torch._C._functorch
    try:
        while functorch.is_functorch_wrapped_tensor(x):
            if functorch.is_batchedtensor(x):
                return False
            x = functorch.get_unwrapped(x)
    except AttributeError:  # pragma: no cover - older torch
        return not is_functorch_wrapped(x)
    return True


def is_symbolic(x: torch.Tensor) -> bool:
    """Whether ``x``'s values cannot be looked at now: compiling, tracing, or a ``torch.func`` transform."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or is_functorch_wrapped(x)
