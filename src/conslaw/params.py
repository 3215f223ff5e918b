"""ParamSpace: named parameters <-> one flat float64 vector.

Every coordinate of theta in R^D has a readable name such as ``W1[3,2]`` or
``fc1.weight[0,1]``; parameters are laid out in the order given, each
flattened row-major (C order), as ``torch.nn.utils.parameters_to_vector``
does for a module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .errors import ConslawError

DTYPE = torch.float64


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module a ``torch.compile``d model wraps (its ``_orig_mod``), else ``model`` itself.

    The compiled wrapper shares the original's parameters (named with a ``_orig_mod.`` prefix); laws are
    found and monitored on the original module, whose names they use.
    """
    inner = getattr(model, "_orig_mod", None)
    while isinstance(inner, torch.nn.Module):
        model, inner = inner, getattr(inner, "_orig_mod", None)
    return model


class ParamSpace:
    """Named parameter shapes and the flat layout theta in R^D.

    >>> space = ParamSpace({"U": (2, 3), "b": (3,)})
    >>> space.D, space.coordinate_name(4), space.index("b", 1)
    (9, 'U[1,1]', 7)
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]]) -> None:
        if not shapes:
            raise ConslawError("a parameter space needs at least one parameter, got none",
                               "pass a mapping name -> shape with one entry or more")
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            if any(s < 1 for s in shape):
                raise ConslawError(f"parameter {name!r} has shape {shape} with an empty dimension",
                                   "give every dimension a size >= 1")
            self.shapes[name] = shape
            self.offsets[name] = offset
            offset += math.prod(shape)
        self.D = offset
        self._index_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> ParamSpace:
        """The space of ``module.named_parameters()`` that require gradients."""
        return cls({n: tuple(p.shape) for n, p in module.named_parameters() if p.requires_grad})

    @property
    def names(self) -> list[str]:
        """Parameter names in layout order."""
        return list(self.shapes)

    def numel(self, name: str) -> int:
        """Number of entries of parameter ``name``."""
        return math.prod(self.shapes[name])

    def slice(self, name: str) -> slice:
        """The flat coordinates of parameter ``name``."""
        start = self.offsets[self._check(name)]
        return slice(start, start + self.numel(name))

    def index(self, name: str, *idx: int) -> int:
        """Flat index of entry ``name[idx]``."""
        shape = self.shapes[self._check(name)]
        if len(idx) != len(shape) or any(not 0 <= i < s for i, s in zip(idx, shape, strict=False)):
            raise ConslawError(f"index {idx} is outside {name} of shape {shape}",
                               "use one index per dimension, each within its size")
        flat = 0
        for i, s in zip(idx, shape, strict=True):
            flat = flat * s + i
        return self.offsets[name] + flat

    def indices(self, name: str) -> torch.Tensor:
        """Flat indices of parameter ``name`` shaped like the parameter (cached: treat it as read-only)."""
        if name not in self._index_cache:
            sl = self.slice(name)
            self._index_cache[name] = torch.arange(sl.start, sl.stop).reshape(self.shapes[name])
        return self._index_cache[name]

    def drop_index_cache(self) -> None:
        """Forget the cached index tensors of :meth:`indices` (D long integers in all, once every parameter was
        asked for: 0.8 GB for a 100M-parameter model), e.g. once the laws are built."""
        self._index_cache.clear()

    def coordinate_name(self, i: int) -> str:
        """Readable name of flat coordinate ``i``, e.g. ``W1[3,2]``."""
        if not 0 <= i < self.D:
            raise ConslawError(f"coordinate {i} is outside 0..{self.D - 1}", "use an index < D")
        for name, shape in self.shapes.items():
            start = self.offsets[name]
            if i < start + math.prod(shape):
                rest, idx = i - start, []
                for s in reversed(shape):
                    idx.append(rest % s)
                    rest //= s
                if not shape:
                    return name
                return f"{name}[{','.join(str(k) for k in reversed(idx))}]"
        raise AssertionError("unreachable")

    def coordinate_names(self) -> list[str]:
        """Readable names of all D coordinates."""
        return [self.coordinate_name(i) for i in range(self.D)]

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat vector (works under torch.func transforms)."""
        return {n: theta[self.slice(n)].reshape(s) for n, s in self.shapes.items()}

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The flat float64 vector of a mapping name -> tensor (every parameter required)."""
        missing = set(self.shapes) - set(params)
        if missing:
            raise ConslawError(f"parameters {sorted(missing)} are missing", "pass every parameter")
        return torch.cat([torch.as_tensor(params[n], dtype=DTYPE).reshape(-1) for n in self.shapes])

    def sample(self, init: str = "gaussian", generator: torch.Generator | None = None) -> torch.Tensor:
        """A random theta: i.i.d. N(0,1) (``gaussian``) or |N(0,1)| (``positive``)."""
        theta = torch.randn(self.D, generator=generator, dtype=DTYPE)
        if init == "positive":
            return theta.abs()
        if init != "gaussian":
            raise ConslawError(f"unknown init {init!r}", "use 'gaussian' or 'positive'")
        return theta

    def check_theta(self, theta: torch.Tensor) -> torch.Tensor:
        """theta as a float64 vector of length D with finite entries, or a clear error."""
        theta = torch.as_tensor(theta, dtype=DTYPE).reshape(-1)
        if theta.numel() != self.D:
            raise ConslawError(f"theta has {theta.numel()} entries, expected D = {self.D}",
                               "pass one value per parameter coordinate")
        bad = (~torch.isfinite(theta)).nonzero().flatten()
        if bad.numel():
            raise ConslawError(f"theta has {bad.numel()} non-finite entries (first: "
                               f"{self.coordinate_name(int(bad[0]))} = {theta[bad[0]].item()})",
                               "pass finite values (no NaN or inf)")
        return theta

    def _check(self, name: str) -> str:
        if name not in self.shapes:
            raise ConslawError(f"no parameter named {name!r}; the parameters are {self.names}",
                               "use one of these names")
        return name

    def __repr__(self) -> str:
        return f"ParamSpace(D={self.D}, {self.shapes})"
