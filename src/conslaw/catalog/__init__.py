"""The paper's building blocks, one file per family (Sec 3 and 4), and the registry of their constructors."""

from .attention import attention
from .base import Architecture
from .conv import conv
from .linear import linear
from .registry import ARCHITECTURES, ArchSpec, Arg, build
from .relu import relu
from .resnet import resnet
from .softmax import softmax
from .transformer import transformer

__all__ = [
           "ARCHITECTURES",
           "ArchSpec",
           "Architecture",
           "Arg",
           "attention",
           "build",
           "conv",
           "linear",
           "relu",
           "resnet",
           "softmax",
           "transformer",
]
