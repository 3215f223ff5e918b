import importlib.util

import torch

torch.set_default_dtype(torch.float64)

if importlib.util.find_spec("torchvision") is not None:
    # torchvision's PyPI wheel is a CUDA build; beside the CPU torch it imports only through the shim, and
    # transformers and timm import torchvision when it is installed
    from conslaw.vision import import_torchvision

    import_torchvision()
