"""Custom ``torch.autograd.Function`` nodes in a graph: where a "gradient" field may not be a gradient.

The Lie engine takes D chi_p(theta) v of gradient fields as a vector-Jacobian product, using the
symmetry of a Hessian (:func:`conslaw.lie.bracket_value`). Autograd's backward pass is the transpose
of the forward derivative only for its own ops: a custom ``autograd.Function`` may define any
backward (a gradient-reversal layer returns -lambda g, a straight-through estimator passes g through
a rounding), and then the "gradient" it produces is not the gradient of anything, its Jacobian is not
symmetric, and the reverse-mode brackets would be wrong (a reviewer's domain-adversarial model: 0
laws counted instead of 6). Field sources built on a model therefore look for such nodes once and
keep forward mode (jvps only, no symmetry assumed) when they find one.
"""

from __future__ import annotations

import torch
from torch.autograd.function import BackwardCFunction


def custom_function_nodes(output: torch.Tensor) -> list[str]:
    """The class names of the custom ``autograd.Function`` backward nodes in ``output``'s graph (sorted, unique)."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, BackwardCFunction):
            found.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return sorted(found)
