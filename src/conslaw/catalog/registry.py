"""The catalog's constructors with their argument specs: the one place a block's signature is written.

The CLI (``conslaw count ARCH``, ``conslaw discover ARCH``) builds its
subcommands from these specs; the library calls the constructors directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConslawError
from .attention import attention
from .base import Architecture
from .conv import conv
from .linear import linear
from .relu import relu
from .resnet import resnet
from .softmax import softmax
from .transformer import transformer


@dataclass(frozen=True)
class Arg:
    """One argument of a constructor.

    ``positional``: a variadic list of integers (the widths of ``linear`` and
    ``relu``); ``nargs``: integers taken by one option; ``default``: None when
    required; ``flag``: a boolean switch.
    """

    name: str
    help: str
    positional: bool = False
    nargs: int = 1
    default: int | None = None
    flag: bool = False

    @property
    def option(self) -> str:
        """The command-line option, e.g. ``--channels``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ArchSpec:
    """A catalog constructor, its description and its arguments."""

    name: str
    doc: str
    build: Callable[..., Architecture]
    args: tuple[Arg, ...]

    def make(self, values: dict) -> Architecture:
        """Build the architecture from argument values keyed by :attr:`Arg.name` (integers or integer lists).

        Args:
            values: the argument values; missing optional ones take their defaults.
        """
        positional, kwargs = [], {}
        for arg in self.args:
            value = values.get(arg.name, arg.default)
            if arg.positional:
                positional += list(value)
            elif value is not None:
                kwargs[arg.name] = value
            elif not arg.flag:
                raise ConslawError(f"{self.name} needs {arg.option}", f"pass {arg.option} ({arg.help})")
        return self.build(*positional, **kwargs)


ARCHITECTURES: dict[str, ArchSpec] = {spec.name: spec for spec in (
    ArchSpec("linear", "Deep linear network; WIDTHS input first (W0 W1 ... Wq).", linear,
             (Arg("widths", "W0 W1 ... Wq", positional=True),)),
    ArchSpec("relu", "Deep ReLU network; WIDTHS input first (W0 W1 ... Wq).", relu,
             (Arg("widths", "W0 W1 ... Wq", positional=True), Arg("bias", "biases on the hidden neurons", flag=True))),
    ArchSpec("conv", "Two-layer circular convolutional ReLU block, eq. (16) (Thm 3.6).", conv,
             (Arg("channels", "C0 C1 C2", nargs=3), Arg("pixels", "P, samples per channel"),
              Arg("filters", "NV NU, taps of the first and second filters", nargs=2),
              Arg("stride", "S, stride of the first convolution", default=1))),
    ArchSpec("attention", "Self-attention, eq. (18) (one head, Cor 3.9) or eq. (19) (H heads, Cor 3.10).", attention,
             (Arg("tokens", "N"), Arg("dim", "E, token dimension"), Arg("d1", "D1, rows of Q, K, V, O"),
              Arg("heads", "H, heads (must divide D1)", default=1))),
    ArchSpec("softmax", "Softmax layer with cross-entropy, eq. (20) (Prop 3.11).", softmax,
             (Arg("classes", "N"), Arg("inputs", "M"))),
    ArchSpec("resnet", "Dense ResNet x -> x + U relu(V x), Q blocks (Sec 4.4).", resnet,
             (Arg("dim", "M"), Arg("width", "R"), Arg("blocks", "Q"))),
    ArchSpec("transformer", "Transformer of Ex 4.2: attention (eq. 23) and MLP (eq. 22) residual blocks, no "
             "normalization.", transformer,
             (Arg("tokens", "N"), Arg("dim", "E"), Arg("d1", "D1, rows of Q, K, V, O"),
              Arg("hidden", "R, hidden width of the MLP blocks"), Arg("layers", "attention + MLP pairs", default=1))),
)}


def build(name: str, values: dict | None = None, *, residual: bool = False,
          **kwargs: int | Sequence[int] | bool) -> Architecture:
    """The catalog architecture ``name`` built from argument values (optionally wrapped in a skip connection).

    Args:
        name: a key of :data:`ARCHITECTURES`.
        values: argument values keyed by name.
        residual: wrap the block as x + g(x) (Prop 3.2).
        **kwargs: more argument values.
    """
    if name not in ARCHITECTURES:
        raise ConslawError(f"unknown architecture {name!r}", f"use one of {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name].make({**(values or {}), **kwargs})
    return arch.residual() if residual else arch
