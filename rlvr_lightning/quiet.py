"""Third-party log noise, filtered in one place: :func:`quiet_third_party`.

The ``rlvr`` command and every reward worker process call it once at start. It drops only the messages listed
here, which say nothing about a run (everything else, a user's own warnings and logs included, is left alone):

- math-verify's "Timeout is disabled ..." warning: rlvr-lightning switches math-verify's ``signal``-based timeouts
  off on purpose and enforces its own limit in worker processes;
- Lightning's advice about the ``dataloader_iter`` step flavour, about ``ModelCheckpoint`` with manual
  optimization, about LightningCLI's ``args`` parameter, its litlogger tip, and a deprecation warning from its
  pytree helper: ``RLVRModule`` uses these on purpose.

This module imports only the standard library, so reward workers import it without torch.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["NOISY_LOGS", "NOISY_WARNINGS", "quiet_third_party"]

# logger name -> fragments of the messages dropped from it
NOISY_LOGS: dict[str, tuple[str, ...]] = {
    "math_verify.parser": ("Timeout is disabled",),
    "math_verify.grader": ("Timeout is disabled",),
    "lightning.pytorch.utilities.rank_zero": ("seamless cloud logging",),
    "pytorch_lightning.utilities.rank_zero": ("seamless cloud logging",),
}
# regular expressions matched against the start of warning messages
NOISY_WARNINGS: tuple[str, ...] = (
    r".*`dataloader_iter` argument in the `training_step`",
    r"You are using the `dataloader_iter` step flavor",
    r".*ModelCheckpoint with manual optimization",
    r".*LightningCLI.s args parameter is intended",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropMessages(logging.Filter):
    """Drops the records whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def quiet_third_party() -> None:
    """Install the filters of :data:`NOISY_LOGS` and :data:`NOISY_WARNINGS`; calling it again adds nothing."""
    for name, fragments in NOISY_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)  # an identical filter replaces the old one
