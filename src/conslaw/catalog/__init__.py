"""The paper's building blocks, one file per family (Sec 3 and 4)."""

from .attention import attention
from .base import Architecture
from .conv import conv
from .linear import linear
from .relu import relu
from .resnet import resnet
from .softmax import softmax
from .transformer import transformer

ARCHITECTURES = {
    "linear": linear,
    "relu": relu,
    "conv": conv,
    "attention": attention,
    "softmax": softmax,
    "resnet": resnet,
    "transformer": transformer,
}

__all__ = ["ARCHITECTURES", "Architecture", "attention", "conv", "linear", "relu", "resnet", "softmax", "transformer"]
