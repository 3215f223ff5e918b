"""Registry from module classes to law handlers, extensible by users, with no hidden global mutation.

A :class:`HandlerRegistry` maps module classes to :class:`~conslaw.nn.handlers.Handler`
objects; lookup follows the class's MRO. ``find_laws(..., handlers=registry)``
uses a registry for one call; :func:`register_handler` adds to the default
registry (refusing to overwrite unless asked). ``on_unknown`` says what to do
with parametric modules that no handler or family knows: ``warn`` (default),
``error`` or ``silent``.

>>> from conslaw.nn import Handler, HandlerRegistry
>>> class MyBlockHandler(Handler):
...     def laws(self, name, module, space, findings):
...         ...  # append Law objects to findings.laws
>>> registry = HandlerRegistry.default().with_handler(MyBlock, MyBlockHandler())   # doctest: +SKIP
"""

from __future__ import annotations

from torch import nn

from ..errors import ConslawError
from .handlers import Handler, MultiheadAttentionHandler, TransformerEncoderHandler, TransformerEncoderLayerHandler

ON_UNKNOWN = ("warn", "error", "silent")


class HandlerRegistry:
    """Module class -> handler, and the fail mode for parametric modules nobody knows.

    Args:
        handlers: the initial mapping.
        on_unknown: ``warn``, ``error`` or ``silent``.
    """

    def __init__(self, handlers: dict[type, Handler] | None = None, on_unknown: str = "warn") -> None:
        if on_unknown not in ON_UNKNOWN:
            raise ConslawError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}", "use 'warn'")
        self._handlers = dict(handlers or {})
        self.on_unknown = on_unknown

    @classmethod
    def default(cls) -> HandlerRegistry:
        """A copy of the default registry (built-in handlers and those added by :func:`register_handler`)."""
        return cls(DEFAULT_REGISTRY._handlers, DEFAULT_REGISTRY.on_unknown)

    def register(self, module_type: type, handler: Handler, overwrite: bool = False) -> None:
        """Analyse ``module_type`` as a leaf with ``handler``.

        Args:
            module_type: an nn.Module subclass.
            handler: a Handler instance.
            overwrite: replace an existing handler for that class (else an error).
        """
        if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
            raise ConslawError(f"register_handler needs an nn.Module subclass, got {module_type!r}",
                               "pass the class itself, e.g. register_handler(MyBlock, MyHandler())")
        if not isinstance(handler, Handler):
            raise ConslawError(f"the handler must be a conslaw.nn.Handler, got {type(handler).__name__}",
                               "subclass conslaw.nn.Handler and override laws() / output_carrier()")
        if module_type in self._handlers and not overwrite:
            raise ConslawError(f"{module_type.__name__} already has a handler "
                               f"({type(self._handlers[module_type]).__name__})", "pass overwrite=True to replace it")
        self._handlers[module_type] = handler

    def with_handler(self, module_type: type, handler: Handler) -> HandlerRegistry:
        """A copy with one more (or a replaced) handler; this registry is unchanged."""
        copy = HandlerRegistry(self._handlers, self.on_unknown)
        copy.register(module_type, handler, overwrite=True)
        return copy

    def handler_for(self, module: nn.Module) -> Handler | None:
        """The handler of the most derived registered class of ``module``, or None."""
        for cls in type(module).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        from .moe import SPARSE_MOE_HANDLER  # blocks recognised by their layout, any class
        from .moe_layout import is_sparse_moe

        return SPARSE_MOE_HANDLER if is_sparse_moe(module) else None

    def leaf_types(self, model: nn.Module | None = None) -> tuple[type, ...]:
        """The registered classes (treated as leaves by the tracer), and the classes of ``model``'s modules that a
        handler recognises by their layout (sparse MoE blocks)."""
        from .moe_layout import is_sparse_moe

        found = [] if model is None else [type(m) for m in model.modules() if is_sparse_moe(m)]
        return tuple(dict.fromkeys([*self._handlers, *found]))


DEFAULT_REGISTRY = HandlerRegistry({
    nn.MultiheadAttention: MultiheadAttentionHandler(),
    nn.TransformerEncoderLayer: TransformerEncoderLayerHandler(),
    nn.TransformerEncoder: TransformerEncoderHandler(),
})


def register_handler(module_type: type, handler: Handler, overwrite: bool = False) -> None:
    """Add a handler to the default registry (used by every later ``find_laws`` call without ``handlers``).

    Args:
        module_type: an nn.Module subclass.
        handler: a Handler instance.
        overwrite: replace an existing handler for that class.
    """
    DEFAULT_REGISTRY.register(module_type, handler, overwrite)
