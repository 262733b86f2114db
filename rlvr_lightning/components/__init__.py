"""Loss components of rlvr-lightning: one abstract base and registry per axis, and the built-in strategies.

Importing this package registers every built-in, so YAML configs can name them by short class name
(``class_path: PAR``) and code can look them up by registry name (``Reweight.get("par")``). :class:`Loss` composes
one component per axis into the loss of a micro-batch. See ``docs/components.md``.
"""

from rlvr_lightning.components.advantages import GRPO, RLOO, DrGRPO, ReinforcePPBaseline, SignedReward
from rlvr_lightning.components.aggregation import (
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
    TokenMean,
)
from rlvr_lightning.components.base import (
    Advantage,
    Aggregation,
    Clip,
    Component,
    EntropyBonus,
    KLPenalty,
    Reweight,
    ReweightContext,
)
from rlvr_lightning.components.clip import CISPO, GSPO, NoClip, PPOClip
from rlvr_lightning.components.entropy import AdaptiveEntropyBonus, ConstantEntropyBonus, NoEntropyBonus
from rlvr_lightning.components.kl import KL, NoKL
from rlvr_lightning.components.loss import Loss
from rlvr_lightning.components.reweight import (
    PAR,
    ClipCov,
    EntropyGuidedPAR,
    EpochPAR,
    HighEntropyTokens,
    KLCov,
    NegativeOnly,
    PositiveOnly,
    RandomPositiveDrop,
    StagePAR,
    Uniform,
)

AXES: tuple[type[Component], ...] = (Advantage, Clip, Reweight, Aggregation, KLPenalty, EntropyBonus)
"""The six loss axes, in the order a training step applies them."""

__all__ = [
    "AXES",
    "CISPO",
    "GRPO",
    "GSPO",
    "KL",
    "PAR",
    "RLOO",
    "AdaptiveEntropyBonus",
    "Advantage",
    "Aggregation",
    "Clip",
    "ClipCov",
    "Component",
    "ConstantEntropyBonus",
    "DrGRPO",
    "SignedReward",
    "EntropyBonus",
    "EntropyGuidedPAR",
    "EpochPAR",
    "HighEntropyTokens",
    "KLCov",
    "KLPenalty",
    "Loss",
    "NegativeOnly",
    "NoClip",
    "NoEntropyBonus",
    "NoKL",
    "PPOClip",
    "PositiveOnly",
    "RandomPositiveDrop",
    "ReinforcePPBaseline",
    "Reweight",
    "ReweightContext",
    "SeqMeanTokenMean",
    "SeqMeanTokenSum",
    "SeqMeanTokenSumNorm",
    "StagePAR",
    "TokenMean",
    "Uniform",
]
