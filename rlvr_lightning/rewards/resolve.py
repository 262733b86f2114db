"""Naming and calling reward functions: import a reward from its path, its name in logs, the keywords it takes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["accepts_keyword", "import_reward", "resolve_reward", "reward_name"]


def resolve_reward(spec: Callable[..., list[float]] | str) -> Callable[..., list[float]]:
    """A reward callable from itself or from an import path ``"pkg.module.name"`` (a class is instantiated)."""
    obj = import_reward(spec)
    return obj() if isinstance(obj, type) else obj


def import_reward(spec: Callable[..., list[float]] | str) -> Any:
    """What ``spec`` names (a class is returned as it is), checked to be callable; errors name the path."""
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str) or "." not in spec:
        raise ValueError(f"a reward must be a callable or an import path 'package.module.name', got {spec!r}")
    module_name, _, attr = spec.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward {spec!r}: {e}") from None
    if not callable(obj) or (isinstance(obj, type) and "__call__" not in dir(obj)):  # instances not callable
        raise ValueError(f"reward {spec!r} is not callable")
    return obj


def reward_name(fn: Callable[..., Any]) -> str:
    """A short name for logging: the function's or the class's name."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == name for p in params)
