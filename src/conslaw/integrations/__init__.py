"""Training-framework integrations: each submodule imports its framework only when imported itself.

- :mod:`conslaw.integrations.lightning`: ``LawMonitorCallback`` for PyTorch Lightning
  (``pip install conslaw[lightning]``);
- :mod:`conslaw.integrations.hf`: ``LawMonitorCallback`` for the Hugging Face ``Trainer`` (``pip install conslaw[hf]``).

Both wrap a :class:`conslaw.LawMonitor` (``callback.monitor``) and expose its results.
"""
