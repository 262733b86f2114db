"""``VLLMEngine``: rollouts with a colocated vLLM ``LLM`` (the optional ``rlvr-lightning[vllm]`` extra).

The engine lives in the trainer's process: the ``LLM`` runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set by
the engine unless the environment already says otherwise), so new weights reach vLLM's model by reference, with no
serialization, through the worker's ``reload_weights`` (reached with ``LLM.collective_rpc``).

* **Sampling.** Prompts go in as token ids; each prompt gets its own ``SamplingParams`` seeded from ``seed`` so the
  result does not depend on the batch it runs in (vLLM gives the ``n`` samples of a request seeds ``s, s+1, ...``).
* **Log-probs.** The ``LLM`` is started with ``logprobs_mode="processed_logprobs"``: the returned log-prob of a token
  is taken from the distribution it was sampled from, i.e. ``log_softmax`` of the logits divided by the temperature
  and renormalised over the top-k / top-p support (greedy: the plain ``log_softmax``). With ``top_p=1`` and
  ``top_k=-1`` this equals the trainer's ``log_softmax(logits / temperature)``; vLLM's default ``raw_logprobs``
  would ignore the temperature.
* **Weight sync.** :meth:`VLLMEngine.update_weights` streams the policy's ``state_dict`` one tensor at a time
  (a DTensor of an FSDP2 model is gathered with ``full_tensor()`` when its turn comes, so the full model is never
  materialised), in buckets of about ``weight_sync_bucket_mb``; a LoRA policy's adapters are merged into their base
  weights on the way (vLLM gets a plain model). vLLM's layer-wise reload buffers a layer's tensors
  until the layer is complete, then repacks it into its kernel format, so quantised / repacked layouts and the
  fused ``qkv_proj`` / ``gate_up_proj`` parameters all receive the HF-named tensors.
* **Sleep mode.** With ``enable_sleep_mode`` (honoured only where vLLM supports it: CUDA, ROCm, XPU; it is off on
  CPU) :meth:`sleep` offloads the weights and drops the KV cache (``LLM.sleep(level=1)``); :meth:`update_weights`
  wakes the weights first, and :meth:`wake_up` restores the KV cache.
* **Ranks.** Under ``torch.distributed`` every rank hosts one vLLM worker on its own device (vLLM's
  ``external_launcher`` executor, chosen automatically). With ``tensor_parallel_size=1`` each rank is a whole
  engine and samples its own prompts. With ``tensor_parallel_size=T > 1`` ranks ``[kT, (k+1)T)`` form one
  tensor-parallel engine: :meth:`VLLMEngine.generate` gathers the prompts (and seeds) of the group's ranks, the
  group samples them all together, and each rank gets back the samples of its own prompts. For weight sync every
  rank hands vLLM the full (gathered) tensors and vLLM's weight loaders keep the rank's shard. See
  ``docs/scaling.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rlvr_lightning.data.types import Sample, SamplingConfig
from rlvr_lightning.seeding import resolve_seed

__all__ = ["VLLMEngine"]

INSTALL_HINT = (
    "VLLMEngine needs vLLM: `pip install rlvr-lightning[vllm]` on a GPU machine "
    "(on a CPU-only machine, see scripts/setup_vllm_cpu.sh)"
)
# Wrapper segments that torch.compile, activation checkpointing, FSDP1 and DDP add to parameter names.
_WRAPPER_SEGMENTS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")
_DTYPES = ("auto", "bfloat16", "float16", "float32")
# A per-prompt seed is mixed from the call's seed and the prompt index; vLLM adds the sample index to it.
_SEED_MIX = 1_000_003
_SEED_MOD = 2**31 - 1


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:  # pragma: no cover - exercised only without vllm
        raise ImportError(INSTALL_HINT) from err
    return vllm


def _vllm_name(name: str) -> str:
    """``name`` without the wrapper segments that wrapped modules add (what vLLM's ``load_weights`` expects)."""
    for seg in _WRAPPER_SEGMENTS:
        name = name.replace(seg, "")
    return name.removeprefix("module.")


def _distributed_world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _consecutive_gloo_group(size: int) -> Any:
    """This rank's group among ``[0, size), [size, 2 size), ...`` (gloo: it carries Python objects on CPU).

    Every rank must call this together (each ``new_group`` is collective over the whole world).
    """
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    mine = None
    for first in range(0, world, size):
        group = dist.new_group(list(range(first, first + size)), backend="gloo")
        if first <= rank < first + size:
            mine = group
    return mine


def _reload_weights(worker: Any, weights: Iterator[tuple[str, Tensor]]) -> None:
    """Run on vLLM's worker: load HF-named ``weights`` in place (layer-wise, then repacked for the kernels)."""
    worker.reload_weights(weights_iterator=weights)


class VLLMEngine:
    """Rollouts with vLLM, colocated with the trainer.

    Args:
        model: local directory (or hub name) the ``LLM`` is started from; the policy's initial weights and its
            tokenizer files. Later weights come from :meth:`update_weights`. None (the default): the path of the
            tokenizer given to :meth:`setup`, i.e. the policy's path (``--model.model``) under the CLI.
        dtype: vLLM's compute dtype.
        gpu_memory_utilization: fraction of the accelerator's memory vLLM may take (weights, activations, KV
            cache); leave room for the trainer. Ignored on CPU, where ``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the
            KV cache.
        tensor_parallel_size: vLLM tensor-parallel degree ``T``. Above 1 the trainer must run under
            ``torch.distributed`` with a world size divisible by ``T`` (one rank per device): every ``T``
            consecutive ranks form one engine. (In a single process vLLM would start ``T`` worker processes of its
            own, which can generate but cannot receive weights.)
        enable_sleep_mode: free the accelerator memory between rollouts (:meth:`sleep`); turned off where the
            platform has no sleep mode (CPU).
        max_model_len: longest prompt + response (None: the model config's).
        enforce_eager: no CUDA graphs / compilation (faster start, slower decode).
        seed: vLLM's global seed (used by requests that get no ``seed``).
        weight_sync_bucket_mb: gathered tensors handed to vLLM at a time during :meth:`update_weights`, in MiB
            (0: one tensor at a time).
        engine_kwargs: further keyword arguments of ``vllm.LLM`` (e.g. ``enable_prefix_caching``).
    """

    logprobs_by_default = True  # vLLM's numerics differ from the trainer's: correct with TIS (RLVRModule.tis_cap)

    @property
    def owns_weights(self) -> bool:
        """Whether vLLM can generate while the trainer updates (``data.background_rollouts``): it holds its own
        weights, but with ``tensor_parallel_size > 1`` its ranks' collectives would interleave with the trainer's."""
        return self.tensor_parallel_size == 1

    def __init__(
        self,
        model: str | None = None,
        dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16",
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool = True,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int | None = None,
        weight_sync_bucket_mb: int = 512,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1 or None, got {max_model_len}")
        if weight_sync_bucket_mb < 0:
            raise ValueError(f"weight_sync_bucket_mb must be >= 0, got {weight_sync_bucket_mb}")
        self.model = None if model is None else str(model)
        self.dtype = dtype
        self.gpu_memory_utilization = float(gpu_memory_utilization)
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.enable_sleep_mode = bool(enable_sleep_mode)
        self.max_model_len = max_model_len
        self.enforce_eager = bool(enforce_eager)
        self.seed = resolve_seed(seed)
        self.weight_sync_bucket_mb = int(weight_sync_bucket_mb)
        self.engine_kwargs = dict(engine_kwargs or {})
        self.stop_token_ids: list[int] = []
        self.last_sync_seconds: float | None = None
        self.sleep_mode_active = False
        self._llm: Any = None
        self._in_process = False
        self._tp_group: Any = None  # gloo group of this rank's tensor-parallel engine (T > 1 under torch.distributed)
        self._asleep: set[str] = set()

    # -- RolloutEngine protocol ---------------------------------------------------------------------------------
    def setup(self, tokenizer: Any) -> None:
        """Stop responses at ``tokenizer``'s EOS (besides the model's ``generation_config`` EOS ids); without a
        ``model``, start from the tokenizer's path (``name_or_path``)."""
        if self.model is None:
            self.model = getattr(tokenizer, "name_or_path", None) or None
            if self.model is None:
                raise ValueError("VLLMEngine has no model path: give model=..., or a tokenizer loaded from a path")
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; VLLMEngine needs one to end responses")
        self.stop_token_ids = [int(eos)]

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM``, started on first use."""
        if self._llm is None:
            self._llm = self._start()
        return self._llm

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        *,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``sampling.n`` samples for each prompt (see :class:`~rlvr_lightning.data.types.RolloutEngine`)."""
        if sampling.n < 1 or sampling.max_new_tokens < 1:
            raise ValueError(f"sampling.n and sampling.max_new_tokens must be >= 1, got {sampling}")
        if sampling.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {sampling.temperature}")
        prompts = [[int(t) for t in p] for p in prompt_token_ids]
        llm = self.llm
        # one entry per rank of this engine: (prompts, seed); tensor-parallel ranks must all submit every prompt
        parts = self._gather_tp_group(prompts, sampling, seed) if self._tp_group is not None else [(prompts, seed)]
        if any(len(p) == 0 for ps, _ in parts for p in ps):
            raise ValueError("every prompt needs at least one token")
        all_prompts = [p for ps, _ in parts for p in ps]
        if not all_prompts:
            return []
        if self._asleep:
            self.wake_up()
        params = [sp for ps, s in parts for sp in self._sampling_params(sampling, len(ps), s)]
        outputs = llm.generate([{"prompt_token_ids": p} for p in all_prompts], params, use_tqdm=False)
        start = sum(len(ps) for ps, _ in parts[: self._tp_rank()])
        mine = outputs[start : start + len(prompts)]
        return [[self._to_sample(c, sampling.logprobs) for c in out.outputs] for out in mine]

    def update_weights(self, policy: nn.Module) -> None:
        """Load ``policy``'s current weights into vLLM (time taken in :attr:`last_sync_seconds`).

        Every rank of a sharded (FSDP2) policy must call this together: each DTensor is gathered collectively.
        """
        t0 = time.perf_counter()
        llm = self.llm
        if not self._in_process:
            raise RuntimeError(
                "VLLMEngine.update_weights needs vLLM's worker in this process: set "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 (or leave it unset), and with tensor_parallel_size > 1 run the "
                "trainer on that many ranks (e.g. --trainer.devices), one vLLM worker per rank"
            )
        if "weights" in self._asleep:
            llm.wake_up(tags=["weights"])
            self._asleep.discard("weights")
        dtype = getattr(getattr(llm.llm_engine, "model_config", None), "dtype", None)
        llm.collective_rpc(_reload_weights, args=(self._stream(policy, dtype),))
        llm.reset_prefix_cache()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.last_sync_seconds = time.perf_counter() - t0

    def sleep(self) -> None:
        """Offload the weights and drop the KV cache (``LLM.sleep(level=1)``); a no-op without sleep mode."""
        if self.sleep_mode_active and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def wake_up(self) -> None:
        """Bring back what :meth:`sleep` released; a no-op without sleep mode or when awake."""
        if self._asleep:
            self.llm.wake_up()
            self._asleep = set()

    # -- internals -----------------------------------------------------------------------------------------------
    def _start(self) -> Any:
        if self.model is None:
            raise ValueError("VLLMEngine has no model path yet: give model=..., or call setup(tokenizer) first")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = _import_vllm()
        from vllm import envs
        from vllm.platforms import current_platform

        self.sleep_mode_active = self.enable_sleep_mode and current_platform.is_sleep_mode_available()
        kwargs: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_sleep_mode": self.sleep_mode_active,
            "max_model_len": self.max_model_len,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "logprobs_mode": "processed_logprobs",
        }
        world = _distributed_world_size()
        tp = self.tensor_parallel_size
        if world > 1:
            if world % tp:
                raise ValueError(
                    f"tensor_parallel_size={tp} does not divide the world size {world}: every "
                    f"{tp} consecutive ranks form one vLLM engine"
                )
            # one vLLM worker inside every trainer rank, on that rank's device (vLLM's "uni" executor would put
            # every rank's worker on device 0); ranks [kT, (k+1)T) form engine k (vLLM's own rank layout)
            kwargs["distributed_executor_backend"] = "external_launcher"
            os.environ.setdefault("RANK", str(torch.distributed.get_rank()))
            os.environ.setdefault(
                "LOCAL_RANK", str(torch.cuda.current_device() if torch.cuda.is_available() else 0)
            )
            if tp > 1:
                self._tp_group = _consecutive_gloo_group(tp)
        kwargs.update(self.engine_kwargs)
        llm = vllm.LLM(**kwargs)
        external = kwargs.get("distributed_executor_backend") == "external_launcher"
        self._in_process = external or (not envs.VLLM_ENABLE_V1_MULTIPROCESSING and tp == 1)
        return llm

    def _tp_rank(self) -> int:
        return torch.distributed.get_rank(self._tp_group) if self._tp_group is not None else 0

    def _gather_tp_group(
        self, prompts: list[list[int]], sampling: SamplingConfig, seed: int | Sequence[int] | None
    ) -> list[tuple[list[list[int]], int | list[int] | None]]:
        """Every rank's ``(prompts, seed)`` in this rank's tensor-parallel group, in rank order."""
        seed = seed if seed is None or isinstance(seed, int) else [int(s) for s in seed]
        gathered: list[Any] = [None] * self.tensor_parallel_size
        torch.distributed.all_gather_object(gathered, (prompts, seed, sampling), group=self._tp_group)
        if any(g[2] != sampling for g in gathered):
            raise ValueError(
                "the ranks of a tensor-parallel vLLM engine were given different sampling settings: "
                f"{sorted({str(g[2]) for g in gathered})}"
            )
        return [(g[0], g[1]) for g in gathered]

    def _sampling_params(
        self, sampling: SamplingConfig, num_prompts: int, seed: int | Sequence[int] | None
    ) -> list[Any]:
        from vllm import SamplingParams

        common = {
            "n": int(sampling.n),
            "temperature": float(sampling.temperature),
            "top_p": float(sampling.top_p),
            "top_k": int(sampling.top_k) if sampling.top_k > 0 else 0,
            "max_tokens": int(sampling.max_new_tokens),
            "logprobs": 0 if sampling.logprobs else None,
            "stop_token_ids": list(self.stop_token_ids),
            "detokenize": False,
        }
        if seed is None:
            return [SamplingParams(**common)] * num_prompts
        if not isinstance(seed, int):  # one seed per prompt
            seeds = list(seed)
            if len(seeds) != num_prompts:
                raise ValueError(f"got {len(seeds)} seeds for {num_prompts} prompts")
            return [SamplingParams(**common, seed=(int(s) * _SEED_MIX) % _SEED_MOD) for s in seeds]
        base = (int(seed) * _SEED_MIX) % _SEED_MOD
        # prompt i's samples get seeds base + i*n + j: distinct for every (prompt, sample) of the call
        return [SamplingParams(**common, seed=base + i * sampling.n) for i in range(num_prompts)]

    @staticmethod
    def _to_sample(completion: Any, want_logprobs: bool) -> Sample:
        token_ids = [int(t) for t in completion.token_ids]
        logprobs = None
        if want_logprobs:
            per_pos = completion.logprobs
            if per_pos is None or len(per_pos) != len(token_ids):
                raise RuntimeError("vLLM returned no log-prob for some generated tokens")
            logprobs = [float(per_pos[i][t].logprob) for i, t in enumerate(token_ids)]
        return Sample(
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason="length" if completion.finish_reason == "length" else "stop",
        )

    def _stream(self, policy: nn.Module, dtype: torch.dtype | None) -> Iterator[tuple[str, Tensor]]:
        """``(vLLM name, full tensor)`` pairs of ``policy``'s state, gathered ``weight_sync_bucket_mb`` at a time; a
        LoRA policy's adapters are merged into the base weights (:func:`rlvr_lightning.lora.merged_weights`)."""
        from rlvr_lightning.lora import merged_weights

        limit = self.weight_sync_bucket_mb * 2**20
        bucket: list[tuple[str, Tensor]] = []
        size = 0
        for name, full in merged_weights(policy):
            if dtype is not None and full.is_floating_point() and full.dtype != dtype:
                full = full.to(dtype)
            bucket.append((_vllm_name(name), full))
            size += full.numel() * full.element_size()
            if size >= limit:
                yield from bucket
                bucket, size = [], 0
        yield from bucket
