"""Import torchvision beside a CPU-only torch whose matching CPU torchvision is unavailable.

The PyPI torchvision wheels for torch 2.13 (0.28.0) are CUDA builds. Their C extension
``torchvision/_C.so`` links ``libc10_cuda.so`` / ``libtorch_cuda.so``, which the CPU torch
does not ship, so ``torchvision.extension`` quietly marks the custom ops as unavailable.
Most of torchvision copes with that, but ``torchvision/_meta_registrations.py`` calls
``torch.library.register_fake("torchvision::nms")`` (and ``::qnms``) unconditionally, which raises

    RuntimeError: operator torchvision::nms does not exist

and aborts ``import torchvision`` (and therefore ``import timm``).

``import_torchvision()`` tries a plain import first. Only on that specific error does it
declare the missing operator schemas (no kernels) with ``torch.library`` and import again.
The pure-PyTorch parts (models, transforms on tensors/PIL, roi_align's Python fallback, ...)
then work; the C++ ops (nms, batched_nms, roi_pool, ps_roi_*, deform_conv2d, box_iou_rotated,
and the image/video decoders) raise ``RuntimeError: Couldn't load custom C++ ops`` when called.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

__all__ = ["import_torchvision", "torchvision_shimmed"]

# Schemas as torchvision declares them in torchvision/csrc/ops/*.cpp.
_KNOWN_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")

_lib = None  # torch.library.Library holding the declared schemas; must stay alive
_defined: list[str] = []


def torchvision_shimmed() -> list[str]:
    """Names of torchvision ops declared by the shim (empty if the plain import worked)."""
    return list(_defined)


def _purge_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _op_exists(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _declare(name: str) -> bool:
    global _lib
    import torch

    schema = _KNOWN_SCHEMAS.get(name)
    if schema is None or _op_exists(name):
        return False
    if _lib is None:
        _lib = torch.library.Library("torchvision", "FRAGMENT")
    _lib.define(schema)
    _defined.append(name)
    return True


def import_torchvision() -> ModuleType:
    """Return the torchvision module, applying the CPU-torch shim only if needed."""
    first_error = None
    for _ in range(len(_KNOWN_SCHEMAS) + 2):  # the plain import, then one retry per declarable op
        try:
            import torchvision

            return torchvision
        except RuntimeError as exc:
            match = _MISSING_OP.search(str(exc))
            if match is None:
                raise
            first_error = first_error or exc
        _purge_partial_import()
        if not _declare(match.group(1)):
            raise ImportError(f"torchvision import failed on op torchvision::{match.group(1)}, which the shim "
                              "cannot declare") from first_error
    raise ImportError("torchvision shim did not converge") from first_error
