"""Records ``loss_reference.json``: one mini-batch update of ``RLVRModule._update`` per component combination.

Run from the repository root: ``python tests/components/_record_loss_reference.py``. It drives the module's own
update (two micro-batches, no optimizer step) on the tiny policy with a stand-in trainer, and keeps the loss, the
logged statistics, the gradient with respect to the log-probs and the entropy, and a summary of the parameter
gradient.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loss_inputs import (  # noqa: E402
    CASES, EPOCH, MEASURED_ENTROPY, MICRO, STEP, T, TINY, TIS_CAP, TOTAL_EPOCHS, TOTAL_STEPS, grad_summary,
    make_batch, make_components, side_inputs, tiny_policy,
)

from rlvr_lightning.module import RLVRModule  # noqa: E402


class _Null:
    def step(self) -> None: ...
    def zero_grad(self, set_to_none: bool = True) -> None: ...


class _Recorder(RLVRModule):
    """The module with backward and the optimizer replaced by recorders."""

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward()

    def sequence_logprobs(self, model, batch, *, with_entropy, grad):
        logp, ent = super().sequence_logprobs(model, batch, with_entropy=with_entropy, grad=grad)
        if grad:
            logp.retain_grad()
            ent.retain_grad()
            self.captured.append((logp, ent))
        return logp, ent

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        return _Null()

    def lr_schedulers(self) -> Any:
        return _Null()


def _round(x: float) -> float:
    return float(f"{x:.9g}")


def record(case: str) -> dict[str, Any]:
    comps = make_components(case)
    world = CASES[case].get("world", 1)
    module = _Recorder(TINY, from_scratch=True, micro_batch_size=MICRO, max_grad_norm=None,
                       tis_cap=TIS_CAP, **comps)
    module.policy = tiny_policy()
    module.captured = []
    module._trainer = SimpleNamespace(
        world_size=world, global_step=STEP, max_steps=TOTAL_STEPS, max_epochs=TOTAL_EPOCHS, global_rank=0,
        datamodule=SimpleNamespace(steps_per_epoch=2, sampling=SimpleNamespace(temperature=1.0)),
        strategy=SimpleNamespace(reduce=lambda x, reduce_op: x),
    )
    module._data_epoch = EPOCH
    batch = make_batch(module.policy.config.vocab_size)
    side = side_inputs(module.policy, batch)
    mask = batch.response_mask
    advantages = module.advantage(batch.scores, batch.group_ids, mask)
    ref = side["ref_logp"] if module.kl.needs_reference else None
    tis = side["tis"] if CASES[case].get("tis") else None
    sums = module._update(batch, torch.arange(len(batch)), side["old_logp"], advantages, ref, tis,
                          MEASURED_ENTROPY)
    grad_logp = torch.cat([lp.grad for lp, _ in module.captured])
    grad_ent = torch.cat([e.grad if e.grad is not None else torch.zeros_like(e) for _, e in module.captured])
    assert grad_logp.shape == (len(batch), T)
    return {
        "loss": _round(float(sums["loss"])),
        "stats": {k: _round(float(v)) for k, v in sorted(sums.items()) if k not in ("loss", "grad_norm")},
        "grad": [_round(x) for x in grad_summary(module.policy)],
        "grad_logp": [[_round(x) for x in row] for row in grad_logp.tolist()],
        "grad_entropy": [[_round(x) for x in row] for row in grad_ent.tolist()],
    }


def main() -> None:
    torch.set_num_threads(1)
    out = {
        "_doc": "Regression values recorded from the pre-refactor module (RLVRModule._update, before the loss "
                "moved to rlvr_lightning.components.loss), by tests/components/_record_loss_reference.py at "
                "commit 11e20b5 plus that script; inputs from tests/components/_loss_inputs.py. Per case: the "
                "mini-batch loss (sum over two micro-batches), the logged statistics, the policy gradient as "
                "[norm, two random projections], and d loss / d logp and d loss / d entropy, shape (B, T).",
        "cases": {case: record(case) for case in CASES},
    }
    path = Path(__file__).resolve().parent / "loss_reference.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({len(out['cases'])} cases)")


if __name__ == "__main__":
    main()
