"""The torch.export front end: a :class:`~conslaw.nn.trace.Graph` of models that torch.fx cannot trace.

Hugging Face transformers break torch.fx symbolic tracing (iteration over
proxies, control flow on traced values). ``torch.export.export(model, args,
kwargs, strict=False)`` runs the model on the example batch and records every
aten op with the module stack it ran in (``nn_module_stack``). From that
graph :func:`export_graph` builds an fx graph in the form the law families read:

- the ops recorded inside one call of a *leaf* module (a module without
  children, or a type a handler is registered for) become one ``call_module``
  node (target: the module's qualified name), as torch.fx would make them:
  ``nn.Linear`` (aten.linear), GPT-2's ``Conv1D`` (view, addmm with its weight of
  shape (in, out), view), ``nn.Embedding``, ``nn.LayerNorm``, ``LlamaRMSNorm``,
  ``nn.Conv2d``, activation and dropout modules. A call that has one output and
  reads at least one tensor from outside is collapsed; others (rotary
  embeddings returning (cos, sin)) stay as their ops;
- a leaf module with a *tied* parameter (GPT-2's ``lm_head``, whose weight is
  ``transformer.wte.weight``) is never collapsed: its ops stay, reading the
  parameter through a ``get_attr`` of the canonical name, so that no family
  looks up ``lm_head.weight`` as a parameter of its own;
- other ops become ``call_function`` / ``call_method`` nodes with the functions
  the op tables know (:data:`FUNCTIONS`, :data:`METHODS`: aten.relu -> torch.relu,
  aten.add -> operator.add, aten.view -> ``reshape``, aten._softmax ->
  torch.softmax, aten.scaled_dot_product_attention -> F.scaled_dot_product_attention,
  ...), else the aten op itself; casts and aliases that change nothing
  (same dtype and shape) are dropped, assertions too;
- parameters and buffers read directly are ``get_attr`` nodes of their
  qualified (canonical) names, from the export signature's ``inputs_to_parameters``;
- every node carries ``tensor_meta`` (shape, dtype) as fx ShapeProp gives it;
- the output is the one tensor the loss reads (the ``logits`` of a ``ModelOutput``).

The GraphModule's top-level children are the model's own modules, so
``graph.gm.get_submodule(name)`` returns the real module for every qualified
name (not only the call targets). The graph is run once on the example and
compared with the model's output (:func:`export_graph` raises when they differ).
"""

from __future__ import annotations

import inspect
import operator
import re
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.export.graph_signature import InputKind
from torch.fx.passes.shape_prop import _extract_tensor_metadata
from torch.utils._pytree import tree_flatten

from ..errors import ConslawError
from ..fields.model_io import keep_float64, model_output
from .ops import aten_softmax as _softmax
from .trace import Graph, parameter_aliases

aten = torch.ops.aten


def _embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return F.embedding(indices, weight)


#: aten op -> (function, argument adapter or None): functions the op tables of :mod:`conslaw.nn.ops` know
FUNCTIONS: dict = {
    aten.relu.default: torch.relu,
    aten.add.Tensor: operator.add,
    aten.sub.Tensor: operator.sub,
    aten.mul.Tensor: operator.mul,
    aten.div.Tensor: operator.truediv,
    aten.matmul.default: torch.matmul,
    aten.mm.default: torch.matmul,
    aten.bmm.default: torch.bmm,
    aten.mean.dim: torch.mean,
    aten.sum.dim_IntList: torch.sum,
    aten.linear.default: F.linear,
    aten.layer_norm.default: F.layer_norm,
    aten.scaled_dot_product_attention.default: F.scaled_dot_product_attention,
    aten.gelu.default: F.gelu,
    aten.silu.default: F.silu,
    aten.tanh.default: torch.tanh,
    aten.dropout.default: F.dropout,
    aten.flatten.using_ints: torch.flatten,
}
#: aten ops whose arguments differ from the torch function's: aten op -> a function with the aten signature
ADAPTED: dict = {
    aten._softmax.default: _softmax,
    aten.softmax.int: _softmax,
    aten.embedding.default: _embedding,
}
#: aten op -> tensor method (the op tables read reshapes and transposes as methods, as fx records them)
METHODS: dict = {
    aten.view.default: "reshape",
    aten.reshape.default: "reshape",
    aten._unsafe_view.default: "reshape",
    aten.transpose.int: "transpose",
    aten.permute.default: "permute",
    aten.unsqueeze.default: "unsqueeze",
    aten.squeeze.dim: "squeeze",
    aten.expand.default: "expand",
    aten.t.default: "t",
}
#: ops that return their input unchanged when dtype and shape stay (dropped from the graph)
IDENTITY_IF_SAME = {aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten._to_copy.default, aten.alias.default,
                    aten.clone.default, aten.contiguous.default, aten.lift_fresh_copy.default, aten.detach.default}


def _fqn(path: str) -> str:
    """``L['self'].layers[0].attn`` or ``layers.0.attn`` -> ``layers.0.attn``."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']+)'\]", r".\1", path)
    return path.strip(".")


def _val(node: fx.Node):
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _set_meta(new: fx.Node, old: fx.Node) -> None:
    val = _val(old)
    if isinstance(val, torch.Tensor):
        try:
            new.meta["tensor_meta"] = _extract_tensor_metadata(val)
        except Exception:  # fake tensors of unusual layouts: shape only is what the families read
            new.meta["tensor_meta"] = None
    new.meta["val"] = val


def _is_assert(node: fx.Node) -> bool:
    name = str(node.target)
    return node.op == "call_function" and ("_assert" in name or "sym_constrain_range" in name)


class _Builder:
    """Walks the exported graph and writes the new one (see the module docstring)."""

    def __init__(self, model: nn.Module, ep: torch.export.ExportedProgram, is_leaf: Callable[[nn.Module], bool]):
        self.model, self.ep, self.is_leaf = model, ep, is_leaf
        self.aliases = parameter_aliases(model)
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.attrs: dict[str, str] = {}  # placeholder name -> attribute (canonical parameter, buffer, constant)
        self.constants: dict[str, torch.Tensor] = {}
        self.collapsed: list[str] = []
        self.inlined: list[str] = []
        own: dict[str, set[int]] = {}
        for name, m in model.named_modules():
            own[name] = {id(p) for p in m.parameters(recurse=False)}
        self.own_params = own
        buffers = dict(model.named_buffers())
        for spec in ep.graph_signature.input_specs:
            if spec.kind == InputKind.PARAMETER:
                self.attrs[spec.arg.name] = self.aliases.get(spec.target, spec.target)
            elif spec.kind == InputKind.BUFFER:
                if spec.target in buffers:
                    self.attrs[spec.arg.name] = spec.target
                else:  # non-persistent buffers are in the program's constants
                    self._constant(spec.arg.name, ep.constants[spec.target])
            elif spec.kind == InputKind.CONSTANT_TENSOR:
                self._constant(spec.arg.name, ep.constants[spec.target])

    def _constant(self, placeholder: str, value) -> None:
        name = f"_conslaw_constant_{len(self.constants)}"
        self.constants[name] = value
        self.attrs[placeholder] = name

    def region(self, node: fx.Node) -> tuple[str, str] | None:
        """(stack key, module name) of the outermost leaf module the node ran in, or None."""
        stack = node.meta.get("nn_module_stack") or {}
        for key, (path, _) in stack.items():
            name = _fqn(path)
            if not name:
                continue
            try:
                m = self.model.get_submodule(name)
            except AttributeError:
                return None
            if self.is_leaf(m):
                return key, name
        return None

    def tied(self, module: str) -> bool:
        """A parameter of the module is an alias of another module's parameter."""
        m = self.model.get_submodule(module)
        return any(self.aliases.get(f"{module}.{p}", f"{module}.{p}") != f"{module}.{p}"
                   for p, _ in m.named_parameters(recurse=False))

    def value(self, node):
        """The new node of an old argument (get_attr for parameters, buffers and constants)."""
        if node in self.env:
            return self.env[node]
        if node.op == "placeholder" and node.name in self.attrs:
            new = self.graph.get_attr(self.attrs[node.name])
            _set_meta(new, node)
            self.env[node] = new
            return new
        raise ConslawError(f"export front end: node {node.name} is used before it is defined",
                           "report this with the model (conslaw.nn.export)")

    def args(self, args):
        """Arguments with every old node replaced by its new one."""
        return fx.map_arg(args, self.value)

    def simplify(self) -> None:
        """Drop assertions, and casts / aliases that change nothing (their users read the input instead).

        A cast that returns its input keeps the same tensor object, which export may then record under the
        cast's name in later uses (Llama's residual reads the RMSNorm's float32 cast): dropping them first keeps
        every leaf-module call with one output.
        """
        graph = self.ep.graph
        for node in list(graph.nodes):
            if node.op != "call_function":
                continue
            if _is_assert(node) and not node.users:
                graph.erase_node(node)
            elif node.target in IDENTITY_IF_SAME and isinstance(node.args[0], fx.Node):
                val, sval = _val(node), _val(node.args[0])
                if isinstance(val, torch.Tensor) and isinstance(sval, torch.Tensor) and val.dtype == sval.dtype \
                        and val.shape == sval.shape and val.device == sval.device:
                    node.replace_all_uses_with(node.args[0])
                    graph.erase_node(node)

    def inline(self, node: fx.Node) -> None:
        """One op: a known function or method, else the aten op itself."""
        target = node.target
        args, kwargs = self.args(node.args), self.args(node.kwargs)
        if target in FUNCTIONS:
            new = self.graph.call_function(FUNCTIONS[target], args, kwargs)
        elif target in ADAPTED:
            new = self.graph.call_function(ADAPTED[target], args, kwargs)
        elif target in METHODS:
            new = self.graph.call_method(METHODS[target], args, kwargs)
        else:
            new = self.graph.call_function(target, args, kwargs)
        _set_meta(new, node)
        self.env[node] = new

    def segment(self, nodes: list[fx.Node], module: str) -> None:
        """The ops of one call of a leaf module: one call_module node when possible, else inlined."""
        inside = set(nodes)
        own = self.own_params.get(module, set())
        inputs: list[fx.Node] = []

        def visit(a):
            if a in inside or a in inputs:
                return a
            if a.op == "placeholder" and a.name in self.attrs:
                attr = self.attrs[a.name]
                try:
                    if id(self.model.get_parameter(attr)) in own:
                        return a
                except AttributeError:
                    return a  # buffers and constants of the module stay inside
            inputs.append(a)
            return a

        for n in nodes:
            fx.map_arg((n.args, n.kwargs), visit)
        outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        if len(outputs) == 1 and inputs and not self.tied(module) and all(
                isinstance(_val(i), torch.Tensor) for i in inputs):
            new = self.graph.call_module(module, tuple(self.value(i) for i in inputs))
            _set_meta(new, outputs[0])
            self.env[outputs[0]] = new
            self.collapsed.append(module)
            return
        self.inlined.append(module)
        for n in nodes:
            if not _is_assert(n):
                self.inline(n)

    def build(self, output_index: int) -> fx.Graph:
        """The new graph; ``output_index``: which user output is the tensor the loss reads."""
        user_inputs = [s.arg.name for s in self.ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        self.simplify()
        nodes = list(self.ep.graph.nodes)
        for node in nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                new = self.graph.placeholder(node.name)
                _set_meta(new, node)
                self.env[node] = new
        pending: list[fx.Node] = []
        current = None
        out_node = None
        for node in nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                out_node = node
                continue
            reg = self.region(node) if node.op == "call_function" else None
            if reg != current and pending:
                self.segment(pending, current[1])
                pending = []
            current = reg
            if reg is None:
                if not _is_assert(node):
                    self.inline(node)
            else:
                pending.append(node)
        if pending:
            self.segment(pending, current[1])
        flat = out_node.args[0]
        n_user = len(self.ep.graph_signature.user_outputs)
        user_outputs = list(flat)[len(flat) - n_user:]
        self.graph.output(self.value(user_outputs[output_index]))
        return self.graph


def export_graph(model: nn.Module, args: tuple, kwargs: dict, leaf_types: tuple[type, ...] = ()) -> Graph:
    """Export ``model`` on the example call (``args``, ``kwargs``) and build its :class:`Graph` (module docstring).

    Args:
        model: the (float64 analysis copy of the) model.
        args: positional example inputs.
        kwargs: keyword example inputs (Hugging Face ``input_ids``, ``attention_mask``, ...).
        leaf_types: module types kept whole (those a handler is registered for), besides modules without children.
    """
    def is_leaf(m: nn.Module) -> bool:
        return isinstance(m, leaf_types) or not list(m.children())

    if "use_cache" not in kwargs and "use_cache" in inspect.signature(model.forward).parameters:
        kwargs = {**kwargs, "use_cache": False}  # T5's decoder stack returns a cache object export cannot flatten

    try:
        with torch.no_grad(), keep_float64():
            reference, same_shape = _reference_run(model, args, kwargs, leaf_types)
            try:
                ep = torch.export.export(model, tuple(args), dict(kwargs), strict=False)
            except Exception:
                if not same_shape:
                    raise
                with opaque_leaves(same_shape):  # data-dependent handler leaves (MoE routing) as one op each
                    ep = torch.export.export(model, tuple(args), dict(kwargs), strict=False)
    except Exception as exc:
        raise ConslawError(f"torch.export could not capture {type(model).__name__}: {type(exc).__name__}: "
                           f"{exc}".splitlines()[0][:500],
                           "register a handler for the module that cannot be captured "
                           "(conslaw.nn.register_handler), or simplify its forward") from exc
    target = model_output(reference)
    leaves, _ = tree_flatten(reference)
    index = next((i for i, leaf in enumerate(leaves) if leaf is target), None)
    if index is None:
        raise ConslawError(f"export front end: the output of {type(model).__name__} is not among its flattened "
                           "outputs", "return the logits as a tensor, a tuple or a ModelOutput")
    builder = _Builder(model, ep, is_leaf)
    fx_graph = builder.build(index)
    gm = fx.GraphModule(model, fx_graph)
    gm.graph.eliminate_dead_code()  # what the loss does not read (masks of unused outputs, ...)
    gm.recompile()
    for name, child in model.named_children():  # the real modules under every name, not fx's empty stand-ins
        setattr(gm, name, child)
    for name, value in builder.constants.items():
        gm.register_buffer(name, value)
    _check(gm, builder, args, kwargs, target, model)
    notes = [f"torch.export front end: {len(builder.collapsed)} leaf-module calls as call_module nodes"]
    if builder.inlined:
        notes.append(f"torch.export front end: kept as ops (several outputs, no input, or a tied parameter): "
                     f"{', '.join(dict.fromkeys(builder.inlined))}")
    tied = {a: c for a, c in builder.aliases.items() if a != c}
    if tied:
        notes.append("tied parameters (one parameter, its canonical name): "
                     + ", ".join(f"{a} = {c}" for a, c in tied.items()))
    return Graph(module=model, gm=gm, nodes=list(gm.graph.nodes), aliases=builder.aliases, front_end="torch.export",
                 notes=notes)


def _reference_run(model: nn.Module, args: tuple, kwargs: dict, leaf_types: tuple[type, ...]):
    """The model's output on the example, and its handler-leaf modules called with one tensor that they return
    in the same shape (those that :func:`opaque_leaves` may stand in for)."""
    candidates = [m for m in model.modules() if m is not model and leaf_types and isinstance(m, leaf_types)]
    seen: dict[int, bool] = {}

    def hook(m, inputs, output):
        ok = (len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor)
              and output.shape == inputs[0].shape)
        seen[id(m)] = seen.get(id(m), True) and ok

    handles = [m.register_forward_hook(hook) for m in candidates]
    try:
        reference = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return reference, [m for m in candidates if seen.get(id(m))]


#: modules run by the opaque op below, by key (only while :func:`opaque_leaves` is active)
_OPAQUE: dict[int, nn.Module] = {}


@torch.library.custom_op("conslaw::opaque_leaf", mutates_args=())
def _opaque_leaf(x: torch.Tensor, key: int) -> torch.Tensor:
    """The module of ``key`` on x (its real forward), as one op that export does not enter."""
    out = type(_OPAQUE[key]).forward(_OPAQUE[key], x)
    return out.clone() if out.data_ptr() == x.data_ptr() else out


@_opaque_leaf.register_fake
def _opaque_leaf_fake(x: torch.Tensor, key: int) -> torch.Tensor:
    return torch.empty_like(x)


def _opaque_forward(key: int):
    """The forward that stands in for module ``key``: one opaque op."""
    return lambda x: torch.ops.conslaw.opaque_leaf(x, key)


class opaque_leaves:
    """While active, each module's forward is one ``conslaw::opaque_leaf`` op (output shaped like the input):
    torch.export records the call (under the module, so the builder collapses it into a call_module node)
    without tracing the data-dependent control flow inside (a MoE block's routing)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules

    def __enter__(self) -> None:
        for m in self.modules:
            _OPAQUE[id(m)] = m
            m.forward = _opaque_forward(id(m))  # type: ignore[method-assign]

    def __exit__(self, *exc) -> None:
        for m in self.modules:
            del m.forward
            _OPAQUE.pop(id(m), None)


def _check(gm: fx.GraphModule, builder: _Builder, args: tuple, kwargs: dict, target: torch.Tensor,
           model: nn.Module) -> None:
    """Run the built graph on the example: it must give the model's output."""
    flat_inputs, _ = tree_flatten((tuple(args), dict(kwargs)))
    names = [s.arg.name for s in builder.ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    values = [v for v in flat_inputs if isinstance(v, torch.Tensor)]
    try:
        with torch.no_grad(), keep_float64():
            got = gm(*values) if len(values) == len(names) else None
    except Exception as exc:
        raise ConslawError(f"export front end: the graph built for {type(model).__name__} does not run: "
                           f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                           "report this with the model (conslaw.nn.export)") from exc
    if got is not None and (got.shape != target.shape or not torch.allclose(got, target, rtol=1e-9, atol=1e-12)):
        diff = (got - target).abs().max().item() if got.shape == target.shape else float("nan")
        raise ConslawError(f"export front end: the graph built for {type(model).__name__} computes another output "
                           f"(max difference {diff:.2e})", "report this with the model (conslaw.nn.export)")
