"""rlvr-lightning: reinforcement learning with verifiable rewards for reasoning LLMs, on PyTorch Lightning.

Public entry points: :class:`rlvr_lightning.module.RLVRModule`, :class:`rlvr_lightning.data.RolloutDataModule`,
the pure math in :mod:`rlvr_lightning.functional`, the loss components in :mod:`rlvr_lightning.components`, the
metrics in :mod:`rlvr_lightning.metrics` and the ``rlvr`` command (:mod:`rlvr_lightning.cli`).
"""

__version__ = "0.1.0"
