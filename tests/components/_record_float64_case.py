"""Re-record cases of ``loss_reference.json`` from a float64 run of the same loss.

``python tests/components/_record_float64_case.py everything`` runs the loop of
``test_loss.py::test_loss_matches_the_pre_refactor_module`` for the named cases with the tiny policy in float64 and
the log-probs and entropy from a float64 ``log_softmax`` (not ``logprobs_and_entropy``), so the recorded numbers
carry no float32 rounding: the float32 test then measures how far the production path is from the exact values.
The side inputs (old, reference and rollout log-probs) are the float32 ones the test uses, cast to float64.
It prints, per quantity, the largest deviation of the previously recorded value and of today's float32 run from
the float64 one, and rewrites only the named cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _loss_inputs import (  # noqa: E402
    CASES, EPOCH, MEASURED_ENTROPY, MICRO, STEP, TOTAL_EPOCHS, TOTAL_STEPS, T, grad_summary, make_batch,
    make_components, policy_logprobs, side_inputs, tiny_policy,
)
from rlvr_lightning.components import Loss  # noqa: E402

FIXTURE = Path(__file__).with_name("loss_reference.json")
CONTEXT = dict(step=STEP, total_steps=TOTAL_STEPS, epoch=EPOCH, total_epochs=TOTAL_EPOCHS,
               measured_entropy=MEASURED_ENTROPY)


def _float64_logprobs(policy: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, attention_mask, position_ids = batch.model_inputs()
    out = policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                 logits_to_keep=T + 1)
    logsm = torch.log_softmax(out.logits[:, -(T + 1):-1].double(), dim=-1)
    return logsm.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


def run_case(case: str, dtype: torch.dtype) -> dict[str, Any]:
    """The test's two-micro-batch loop for ``case`` with the policy in ``dtype`` (float64: log_softmax log-probs)."""
    torch.manual_seed(0)
    base = tiny_policy()
    batch = make_batch(base.config.vocab_size)
    side = side_inputs(base, batch)
    policy = base.to(dtype)
    loss_fn = Loss(**make_components(case))
    world = CASES[case].get("world", 1)
    mask = batch.response_mask
    advantages = loss_fn.advantages(batch.scores.to(dtype), batch.group_ids, mask)
    norms = loss_fn.normalizers(mask)
    total, sums, g_logp, g_ent = 0.0, {}, [], []
    for micro, idx in enumerate(torch.arange(len(batch)).split(MICRO)):
        scorer = _float64_logprobs if dtype == torch.float64 else policy_logprobs
        logp, ent = scorer(policy, batch.select(idx))
        logp.retain_grad()
        ent.retain_grad()
        loss, stats = loss_fn(
            logp, side["old_logp"][idx].to(dtype), advantages[idx], mask[idx], ent,
            ref_logp=side["ref_logp"][idx].to(dtype),
            tis=side["tis"][idx].to(dtype) if CASES[case].get("tis") else None,
            sample_key=micro, world_size=world, **norms, **CONTEXT,
        )
        loss.backward()
        total += float(loss.detach()) / world
        share = float(mask[idx].sum()) / float(norms["num_tokens"])
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v) * share
        g_logp.append(logp.grad)
        g_ent.append(ent.grad if ent.grad is not None else torch.zeros_like(ent))
    return {"loss": total, "stats": sums, "grad": grad_summary(policy),
            "grad_logp": torch.cat(g_logp).tolist(), "grad_entropy": torch.cat(g_ent).tolist()}


def _round(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return float(f"{x:.9g}")


def _max_dev(a: Any, b: Any) -> float:
    return float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max())


def main(cases: list[str]) -> None:
    data = json.loads(FIXTURE.read_text())
    for case in cases:
        exact, f32 = run_case(case, torch.float64), run_case(case, torch.float32)
        old = data["cases"][case]
        for key in ("loss", "grad", "grad_logp", "grad_entropy"):
            print(f"{case} {key}: recorded - float64 {_max_dev(old[key], exact[key]):.3g}, "
                  f"float32 today - float64 {_max_dev(f32[key], exact[key]):.3g}")
        data["cases"][case] = _round(exact)
    FIXTURE.write_text(json.dumps(data, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["everything"])
