"""Laws of real PyTorch models: ``find_laws(model, example_input, loss)``, handlers for custom modules."""

from .analysis import ModelAnalysis, analyse, analysis_copy
from .attention import MHALayout
from .find import ModelLaws, find_laws
from .handlers import Handler
from .registry import HandlerRegistry, register_handler
from .status import CheckedLaw

__all__ = ["CheckedLaw", "Handler", "HandlerRegistry", "MHALayout", "ModelAnalysis", "ModelLaws", "analyse",
           "analysis_copy", "find_laws", "register_handler"]
