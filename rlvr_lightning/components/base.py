"""Abstract bases of the six loss axes, each with its own registry.

An axis is one replaceable piece of the RLVR loss: :class:`Advantage`, :class:`Clip`, :class:`Reweight`,
:class:`Aggregation`, :class:`KLPenalty` and :class:`EntropyBonus`. Built-ins and user classes join an axis's
registry with a decorator::

    @Reweight.register("my_reweight")
    class MyReweight(Reweight):
        def __call__(self, ctx): ...

``Reweight.get("my_reweight")`` returns the class; an unknown name raises a ``KeyError`` that lists the valid
names. YAML configs select a class by ``class_path`` (a short class name works once its module is imported).

Components are plain Python objects holding hyper-parameters; their ``__call__`` calls ``rlvr_lightning.functional``.
A component with state that must survive a checkpoint (an adaptive lambda or coefficient) overrides
``state_dict`` / ``load_state_dict``; the module saves it. ``update(measured_entropy)`` is called once per rollout
batch, after its N updates, with the mean token entropy of that batch (a Python float), for stateful controllers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

from torch import Tensor

T = TypeVar("T", bound=type)


class Component(ABC):
    """Shared behaviour of every axis: a registry, checkpointable state, a step hook and loggable values."""

    _registry: ClassVar[dict[str, type]]
    axis: ClassVar[str] = "component"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if Component in cls.__bases__:  # a new axis: give it its own registry
            cls._registry = {}
            cls.axis = cls.__name__

    @classmethod
    def register(cls, name: str) -> Callable[[T], T]:
        """Class decorator adding a subclass to this axis's registry under ``name`` (a duplicate is refused)."""

        def deco(sub: T) -> T:
            if not (isinstance(sub, type) and issubclass(sub, cls)):
                raise TypeError(f"{sub!r} must be a subclass of {cls.__name__} to join the {cls.axis} registry")
            if name in cls._registry and cls._registry[name] is not sub:
                raise ValueError(
                    f"{cls.axis} name {name!r} is already registered to {cls._registry[name].__qualname__}; "
                    f"choose another name"
                )
            cls._registry[name] = sub
            sub.registry_name = name  # type: ignore[attr-defined]
            return sub

        return deco

    @classmethod
    def get(cls, name: str) -> type:
        """The class registered under ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
        try:
            return cls._registry[name]
        except KeyError:
            valid = ", ".join(sorted(cls._registry))
            raise KeyError(f"unknown {cls.axis} {name!r}; valid names: {valid}") from None

    @classmethod
    def create(cls, name: str, **kwargs: Any) -> Any:
        """Instantiate the class registered under ``name`` with ``kwargs``."""
        return cls.get(name)(**kwargs)

    @classmethod
    def names(cls) -> list[str]:
        """Sorted registered names of this axis."""
        return sorted(cls._registry)

    # -- state and hooks (no-ops for stateless components) -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State to save in a checkpoint (empty for stateless components)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def update(self, measured_entropy: float) -> None:
        """Called once per rollout batch, after its updates, with the batch's mean token entropy under the
        policy that sampled it (the same value on every rank)."""

    def log_values(self) -> dict[str, float]:
        """Scalars worth logging every step (e.g. ``{"lambda": 0.3}``)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


@dataclass
class ReweightContext:
    """What a :class:`Reweight` may look at. Tensors are detached; B sequences, T response tokens.

    Attributes:
        advantages: per-token advantages, shape ``(B, T)``.
        logp: current policy log-probs of the sampled tokens, shape ``(B, T)``.
        old_logp: log-probs under the policy that sampled the batch, shape ``(B, T)``.
        entropy: current policy token entropy, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        step: optimizer steps taken so far (0-based).
        total_steps: planned optimizer steps of the run (``-1`` if unknown).
        epoch: current data epoch (1-based).
        total_epochs: planned data epochs (``-1`` if unknown).
        measured_entropy: mean token entropy of the current rollout batch under the policy that sampled it, over
            all ranks (``None`` outside training).
        sample_key: differs between the micro-batches of a step and between ranks; random reweightings mix it
            into their seed so that no two micro-batches or ranks draw the same pattern.
        selection: the tokens a :attr:`Reweight.selects_tokens` reweighting chose over the whole mini-batch (all its
            micro-batches and ranks, see :mod:`rlvr_lightning.token_selection`), restricted to this context's
            tokens, bool, shape ``(B, T)``; None: the reweighting selects among this context's tokens.
        progress: fraction of training done, in ``[0, 1]`` (from steps, else epochs; 0 if neither is known).
    """

    advantages: Tensor
    logp: Tensor
    old_logp: Tensor
    entropy: Tensor
    mask: Tensor
    step: int = 0
    total_steps: int = -1
    epoch: int = 1
    total_epochs: int = -1
    measured_entropy: float | None = None
    sample_key: int = 0
    selection: Tensor | None = None

    @property
    def progress(self) -> float:
        if self.total_steps > 0:
            return min(max(self.step / self.total_steps, 0.0), 1.0)
        if self.total_epochs > 0:
            return min(max((self.epoch - 1) / self.total_epochs, 0.0), 1.0)
        return 0.0


class Advantage(Component):
    """Turns sequence scores into per-token advantages: ``(scores (B,), group_ids (B,), mask (B,T)) -> (B,T)``."""

    needs_groups: ClassVar[bool] = True  # group-normalized estimators need group size >= 2

    @abstractmethod
    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor: ...


class Clip(Component):
    """Per-token surrogate loss: ``(logp, old_logp, advantages, mask) -> (loss (B,T), stats)``.

    ``loss`` is already negated (minimize it); ``stats`` holds detached scalar tensors such as ``clip_frac``,
    ``clip_frac_low``, ``clip_frac_high``, ``dual_clip_frac`` and ``approx_kl``.
    """

    @abstractmethod
    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


class Reweight(Component):
    """Per-token loss weights ``(ctx) -> (B,T)``, 0 on padding. PAR lives on this axis.

    A reweighting that also adds a penalty (KL-Cov) overrides :meth:`extra_loss`, which returns a per-token loss
    ``(B, T)`` built from the differentiable ``logp``; it is aggregated with the main loss.

    A reweighting that picks a fraction of the mini-batch's tokens (Clip-Cov, KL-Cov) sets ``selects_tokens`` and
    implements :meth:`select`: the training loop then calls it once per mini-batch on every token of it, gathered
    over micro-batches and ranks, and passes each micro-batch its part as ``ctx.selection``.
    """

    selects_tokens: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, ctx: ReweightContext) -> Tensor: ...

    def select(self, ctx: ReweightContext) -> Tensor:
        """The selected tokens among ``ctx``'s, bool, shape ``(B, T)`` (only when ``selects_tokens``)."""
        raise NotImplementedError(f"{type(self).__name__} selects no tokens (selects_tokens is False)")

    def extra_loss(self, ctx: ReweightContext, logp: Tensor) -> Tensor | None:
        """Optional per-token penalty, shape ``(B, T)``; ``logp`` carries gradients. Default: none."""
        return None


class Aggregation(Component):
    """Reduces a per-token loss to a scalar with explicit normalizers.

    ``num_tokens`` / ``num_seqs`` are the global counts of the whole mini-batch (over micro-batches and ranks);
    left as ``None`` they are counted from ``mask`` (one big batch on one rank). ``normalizers`` names the counts
    a class divides by (``"tokens"``, ``"seqs"``) so the training loop computes only those, once per mini-batch.
    """

    normalizers: ClassVar[tuple[str, ...]] = ("tokens", "seqs")

    @abstractmethod
    def __call__(
        self,
        loss: Tensor,
        mask: Tensor,
        *,
        num_tokens: Tensor | float | None = None,
        num_seqs: Tensor | float | None = None,
    ) -> Tensor: ...


class KLPenalty(Component):
    """Per-token KL penalty toward the reference, already scaled by its coefficient: ``-> (B,T)``.

    ``needs_reference`` False (the paper's default, no KL) means no reference model is loaded at all.
    """

    needs_reference: ClassVar[bool] = True
    coef: float = 1.0
    """The coefficient the per-token penalty is scaled by; the loss divides it out to log the plain KL estimate
    (``kl_ref``). A subclass with a coefficient sets it; 1.0 means the penalty is the estimate itself."""

    @abstractmethod
    def __call__(self, logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor: ...


class EntropyBonus(Component):
    """Per-token entropy term added to the loss, ``-alpha * entropy`` for a bonus alpha: ``-> (B,T)``.

    ``enabled`` False means entropy is computed for logging only, without gradients.
    """

    enabled: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, entropy: Tensor, mask: Tensor) -> Tensor: ...
