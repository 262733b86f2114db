"""A NaN or inf loss or gradient skips that update (counted, logged); too many in a row stop the run with a clear
message and a checkpoint of the last finite state."""

from __future__ import annotations

import pytest
import torch
from reliability_helpers import REPO, BadValueReweight, metrics, run_cli

from rlvr_lightning.models import load_causal_lm
from rlvr_lightning.module import NonFiniteLossError

BAD = ("--model.reweight", "reliability_helpers.BadValueReweight")


def test_nonfinite_updates_are_skipped_counted_and_logged(tmp_path):
    BadValueReweight.calls = 0
    with pytest.warns(UserWarning, match="skipped an update with a non-finite loss or gradient") as caught:
        cli, _ = run_cli(
            tmp_path, *BAD, "--model.reweight.values", "[.nan, .inf]", "--trainer.max_steps", "2"
        )
    assert sum("skipped an update" in str(w.message) for w in caught) == 2
    model = cli.model
    assert cli.trainer.global_step == 2  # two real updates, after two skipped ones
    assert model.rollout_step == 4 and model.nonfinite_total == 2
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    skipped = [
        float(r["train/nonfinite_skipped"])
        for r in metrics(tmp_path / "run")
        if r.get("train/nonfinite_skipped")
    ]
    assert skipped == [1.0, 2.0, 2.0, 2.0]


def test_consecutive_nonfinite_updates_stop_with_a_checkpoint(tmp_path):
    BadValueReweight.calls = 0
    with pytest.raises(NonFiniteLossError) as info:
        run_cli(
            tmp_path,
            *BAD,
            "--model.reweight.values",
            "[.nan, .nan, .nan, .nan]",
            "--model.max_consecutive_nonfinite",
            "2",
            "--trainer.max_steps",
            "3",
        )
    message = str(info.value)
    assert "2 consecutive updates had a non-finite loss or gradient" in message
    assert "model.max_consecutive_nonfinite" in message
    ckpts = list(tmp_path.rglob("nonfinite.ckpt"))
    assert len(ckpts) == 1 and str(ckpts[0]) in message
    ckpt = torch.load(ckpts[0], weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 0 and ckpt["rlvr"]["nonfinite_total"] == 2
    assert BadValueReweight.calls == 2
    # no update went through, so the saved policy is exactly the initial one (and finite)
    initial = load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, seed=0).state_dict()
    saved = {k.removeprefix("policy."): v for k, v in ckpt["state_dict"].items() if k.startswith("policy.")}
    assert saved.keys() == initial.keys()
    for k, v in saved.items():
        assert torch.isfinite(v).all() and torch.equal(v, initial[k]), k
