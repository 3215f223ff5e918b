"""Sources of vector fields on parameter space (the input of the Lie engine).

- :class:`ReparamFields`: chi_a(theta) = dphi(theta)^T a (eq. 9);
- :class:`ModelFields`: chi_{x,w}(theta) = d_theta g(theta, x)^T w (Cor 2.5);
- :class:`LossGradFields`: grad L_Z(theta) of a real model's loss (Sec 4.4);
- :class:`SignFields`: sign of another source's fields, the Adam flow (eq. 13);
- :class:`RestrictedFields` / :func:`restrict`: a block's fields, the rest resampled (Prop 4.3).
"""

from .base import FieldSource, Params
from .inputs import gaussian_inputs
from .loss_grad import LOSSES, LossGradFields
from .model import ModelFields
from .reparam import ReparamFields
from .restricted import RestrictedFields, restrict
from .sign import SignFields

__all__ = ["LOSSES", "FieldSource", "LossGradFields", "ModelFields", "Params", "ReparamFields", "RestrictedFields",
           "SignFields", "gaussian_inputs", "restrict"]
