"""The examples of docs/extending.md run as written: the ten-line reweighting (registered and selected by class
path) and the loss in a plain PyTorch loop."""

from __future__ import annotations

import functools
import re
import sys
import types

import torch
from toy_training import REPO, fit

from rlvr_lightning.components import Reweight, ReweightContext


@functools.cache
def _doc_module() -> types.ModuleType:
    text = (REPO / "docs" / "extending.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 16  # the promise: about ten lines
    module = types.ModuleType("my_reweights")
    exec(compile(code, "docs/extending.md", "exec"), module.__dict__)
    sys.modules["my_reweights"] = module
    return module


def test_doc_reweight_registers_and_weights_confident_positive_tokens():
    mod = _doc_module()
    cls = mod.DampConfidentPositive
    assert Reweight.get("damp_confident_positive") is cls
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    logp = torch.log(torch.tensor([[0.95, 0.5, 0.99, 0.99]]))
    mask = torch.tensor([[True, True, True, False]])
    ctx = ReweightContext(advantages=adv, logp=logp, old_logp=logp, entropy=torch.zeros_like(adv), mask=mask)
    w = cls(factor=0.3)(ctx)
    torch.testing.assert_close(w, torch.tensor([[0.3, 1.0, 1.0, 0.0]]))


def test_doc_reweight_is_used_from_the_command_line(tmp_path):
    mod = _doc_module()
    cli = fit(tmp_path, "--model.reweight", "my_reweights.DampConfidentPositive", "--model.reweight.factor", "0.3",
              "--trainer.max_steps", "1")
    assert isinstance(cli.model.reweight, mod.DampConfidentPositive) and cli.model.reweight.factor == 0.3


def test_doc_loss_in_a_plain_loop_runs_and_matches_the_module_composition():
    text = (REPO / "docs" / "extending.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "loss_fn(" in c)
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 12  # a few lines
    ns: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "docs/extending.md", "exec"), ns)
    loss, logp = ns["loss"], ns["logp"]
    assert loss.dim() == 0 and torch.isfinite(loss) and logp.grad is not None and "clip_frac" in ns["stats"]
    # the same number as composing the functional ops by hand
    from rlvr_lightning import functional as F

    adv = F.grpo_advantages(ns["scores"], ns["group_ids"])[:, None] * ns["mask"]
    tok, _ = F.clipped_surrogate(logp, ns["old_logp"], adv, ns["mask"], dual_clip=3.0)
    expected = F.aggregate(tok * F.par_weights(adv, ns["mask"], lam=0.5), ns["mask"], mode="token-mean")
    torch.testing.assert_close(loss, expected)
