"""One seed for a run: ``--seed_everything S`` alone seeds initialization, data order, sampling and shuffling."""

from __future__ import annotations

import os

import torch
from toy_training import fit, state

from rlvr_lightning.seeding import GLOBAL_SEED_ENV, resolve_seed


def _run(tmp_path, name, *extra):
    cli = fit(tmp_path, "--trainer.max_steps", "2", *extra, name=name)
    first_prompts = cli.datamodule.step_prompts(0)
    return state(cli.model.policy), [p.text for p in first_prompts], cli


def test_seed_everything_alone_seeds_the_whole_run(tmp_path):
    a, prompts_a, cli_a = _run(tmp_path, "a", "--seed_everything", "3")
    b, prompts_b, _ = _run(tmp_path, "b", "--seed_everything", "3")
    c, prompts_c, cli_c = _run(tmp_path, "c", "--seed_everything", "4")
    assert cli_a.model.seed == 3 and cli_a.datamodule.seed == 3 and cli_c.model.seed == 4
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: the same run, bit for bit
    assert prompts_a == prompts_b
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: another run
    assert prompts_a != prompts_c  # ... with another prompt order


def test_an_explicit_component_seed_wins(tmp_path):
    _, prompts, cli = _run(tmp_path, "explicit", "--seed_everything", "3", "--data.seed", "11",
                           "--model.reweight", "RandomPositiveDrop", "--model.reweight.init_args.seed", "5")
    assert cli.datamodule.seed == 11 and cli.model.seed == 3 and cli.model.reweight.seed == 5
    _, prompts_11, _ = _run(tmp_path, "explicit11", "--seed_everything", "11")
    assert prompts == prompts_11


def test_resolve_seed_reads_the_global_seed(monkeypatch):
    monkeypatch.setenv(GLOBAL_SEED_ENV, "42")
    assert resolve_seed(None) == 42 and resolve_seed(7) == 7
    monkeypatch.delenv(GLOBAL_SEED_ENV)
    assert resolve_seed(None) == 0
    assert GLOBAL_SEED_ENV not in os.environ
