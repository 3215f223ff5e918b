"""Laws of real PyTorch models: ``find_laws(model, example_input, loss)``."""

from .find import ModelLaws, find_laws
from .laws_nn import ModuleLaw
from .registry import Handler, register_handler
from .verify import LossGradFields

__all__ = ["Handler", "LossGradFields", "ModelLaws", "ModuleLaw", "find_laws", "register_handler"]
