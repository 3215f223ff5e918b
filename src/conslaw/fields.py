"""Sources of vector fields on parameter space.

A field source is a family of vector fields chi_p : R^D -> R^D indexed by a
parameter p that the source can sample at random. The generated Lie algebra
of their span is what the engine in :mod:`conslaw.lie` measures.

- :class:`ReparamFields`: chi_a(theta) = dphi(theta)^T a, a in R^d (paper eq. 9,
  with P_ell = I as in Thm 3.4 and Thm 3.8).
- :class:`ModelFields`: chi_{x,w}(theta) = d_theta g(theta, x)^T w, x an input,
  w in V_ell = R^n (Cor 2.5).
- :class:`SignFields`: sign of another source's fields, the Adam flow
  (eq. 12-13, App. R eq. 96). Locally constant, so all brackets vanish.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad, vmap

from .params import DTYPE, ParamSpace

Params = dict[str, torch.Tensor]


class FieldSource(ABC):
    """A family of vector fields chi_p on the parameter space."""

    space: ParamSpace
    #: name in outputs (``reparam``, ``model``, ``sign(reparam)``)
    kind: str = "fields"
    #: extra samples per level beyond (D - rank + margin): sources that are not
    #: linear in their random parameter (sign) need more to see rare patterns.
    oversample: float = 0.0

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Any:
        """n random field parameters, batched along dimension 0 (a pytree)."""

    @abstractmethod
    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """chi_p(theta) in R^D for one (unbatched) parameter p."""

    def evaluate(self, theta: torch.Tensor, ps: Any) -> torch.Tensor:
        """Fields at theta for a batch of parameters: (n, D)."""
        return vmap(self.field, in_dims=(None, 0))(theta, ps)


class ReparamFields(FieldSource):
    """chi_a(theta) = dphi(theta)^T a for a reparametrization phi: R^D -> R^d (eq. 9).

    By default a ~ N(0, I_d) and chi_a = grad_theta <phi(theta), a>. A block
    whose phi is large (path liftings: d = product of the widths) can pass
    ``pairing(params, c)`` = <phi(theta), a(c)> and ``sample_coefficients``
    for a structured random a(c) (e.g. rank-one tensors) whose values span
    R^d: the fields then span the same W at O(D) cost per sample.
    """

    kind = "reparam"

    def __init__(self, space: ParamSpace, phi: Callable[[Params], torch.Tensor] | None = None,
                 pairing: Callable[[Params, Any], torch.Tensor] | None = None,
                 sample_coefficients: Callable[[int, torch.Generator], Any] | None = None) -> None:
        self.space = space
        self.phi = phi
        if pairing is None:
            if phi is None:
                raise ValueError("ReparamFields needs phi or pairing")
            self.d = int(phi(space.unflatten(torch.zeros(space.D, dtype=DTYPE))).numel())
            self._pairing = lambda params, a: torch.dot(phi(params).reshape(-1), a)
            self._sample = lambda n, gen: torch.randn(n, self.d, generator=gen, dtype=DTYPE)
        else:
            if sample_coefficients is None:
                raise ValueError("a custom pairing needs its sample_coefficients")
            self._pairing, self._sample = pairing, sample_coefficients

    def sample(self, n: int, generator: torch.Generator) -> Any:
        return self._sample(n, generator)

    def field(self, theta: torch.Tensor, a: Any) -> torch.Tensor:
        return grad(lambda t: self._pairing(self.space.unflatten(t), a))(theta)


class ModelFields(FieldSource):
    """chi_{x,w}(theta) = d_theta g(theta, x)^T w (Cor 2.5), V_ell = R^n.

    ``model(params, x)`` evaluates g on one input; ``sample_input(n, gen)``
    draws n inputs. Each sampled field uses ``inputs_per_sample`` inputs,
    chi = sum_b d_theta g(theta, x_b)^T w_b (a mini-batch loss gradient).
    """

    kind = "model"
    oversample = 0.25

    def __init__(self, space: ParamSpace, model: Callable[[Params, torch.Tensor], torch.Tensor],
                 sample_input: Callable[[int, torch.Generator], torch.Tensor],
                 inputs_per_sample: int = 1) -> None:
        self.space = space
        self.model = model
        self.sample_input = sample_input
        self.inputs_per_sample = inputs_per_sample
        x0 = sample_input(1, torch.Generator().manual_seed(0))[0]
        self.output_shape = tuple(model(space.unflatten(torch.zeros(space.D, dtype=DTYPE)), x0).shape)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.inputs_per_sample
        x = self.sample_input(n * b, generator)
        w = torch.randn(n * b, *self.output_shape, generator=generator, dtype=DTYPE)
        return x.reshape(n, b, *x.shape[1:]), w.reshape(n, b, *self.output_shape)

    def field(self, theta: torch.Tensor, p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        xs, ws = p

        def pairing(t: torch.Tensor) -> torch.Tensor:
            params = self.space.unflatten(t)
            out = vmap(self.model, in_dims=(None, 0))(params, xs)
            return (out * ws).sum()

        return grad(pairing)(theta)


class SignFields(FieldSource):
    """sign(chi_p(theta)) for the fields chi_p of ``base``: the Adam flow (eq. 13, eq. 96)."""

    oversample = 3.0

    def __init__(self, base: FieldSource) -> None:
        self.base = base
        self.space = base.space
        self.kind = f"sign({base.kind})"

    def sample(self, n: int, generator: torch.Generator) -> Any:
        return self.base.sample(n, generator)

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        return torch.sign(self.base.field(theta, p))


class RestrictedFields(FieldSource):
    """Fields of ``base`` restricted to a block of parameters theta_T, the others resampled (Prop 4.3).

    R_{theta_T}(W) = span over eta, x, w of d_{theta_T} g((theta_T, eta), x)^T w (eq. 25):
    each sampled field draws fresh values eta of the other parameters (from
    ``init``) and keeps the theta_T-components of a field of ``base`` at
    (theta_T, eta). Laws of these fields are the laws of the whole network that
    depend on theta_T only.
    """

    def __init__(self, base: FieldSource, block: list[str], init: str = "gaussian") -> None:
        from .errors import ConslawError

        unknown = [name for name in block if name not in base.space.shapes]
        if unknown or not block:
            raise ConslawError(f"block {block} names parameters {unknown or 'none'} that do not exist",
                               f"choose among {base.space.names}")
        self.base = base
        self.block = [name for name in base.space.names if name in block]
        self.rest = [name for name in base.space.names if name not in block]
        self.space = ParamSpace({name: base.space.shapes[name] for name in self.block})
        self.rest_space = ParamSpace({name: base.space.shapes[name] for name in self.rest}) if self.rest else None
        self.init = init
        self.kind = f"{base.kind} restricted to {','.join(self.block)}"
        self.oversample = base.oversample
        full = torch.arange(base.space.D)
        self.block_index = torch.cat([full[base.space.slice(name)] for name in self.block])
        self.rest_index = torch.cat([full[base.space.slice(name)] for name in self.rest]) if self.rest else None

    def sample(self, n: int, generator: torch.Generator) -> Any:
        if self.rest_space is None:
            eta = torch.zeros(n, 0, dtype=DTYPE)
        else:
            eta = torch.stack([self.rest_space.sample(self.init, generator) for _ in range(n)])
        return eta, self.base.sample(n, generator)

    def full_theta(self, theta_block: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.base.space.D, dtype=theta_block.dtype)
        full = full.index_copy(0, self.block_index, theta_block)
        if self.rest_index is not None:
            full = full.index_copy(0, self.rest_index, eta)
        return full

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        eta, base_p = p
        return self.base.field(self.full_theta(theta, eta), base_p)[self.block_index]
