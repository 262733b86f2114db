"""Sample a policy on the study task: accuracy, entropy and distinct correct answers per prompt.

    python scripts/study_eval.py runs/study-model [--ckpt RUN/checkpoints/last.ckpt] [--k 16] [--json out.json]

With ``--ckpt`` the Lightning checkpoint's policy weights (``policy.*``) are loaded into the warm-up model. For
each of the 161 prompts, ``--k`` samples at temperature 1 (6 new tokens at most); reports, as JSON:
  sampled_acc, acc_borrow / acc_no_borrow  (split by whether the sampled a needs a borrow)
  mean_token_entropy                       nats, over the sampled response tokens incl. EOS
  entropy_by_position                      mean entropy at response positions 0..5 (a1 a2 + b1 b2 EOS)
  distinct_correct                         mean over prompts of #distinct correct answers among the k samples
  borrow_share                             share of the samples whose a (when parsed) needs a borrow
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from prepare_demo_model import sample  # noqa: E402
from rlvr_lightning.models import load_causal_lm, load_tokenizer  # noqa: E402
from rlvr_lightning.study_task import N_MAX, N_MIN, is_correct, needs_borrow  # noqa: E402


def load_policy(model_dir: str, ckpt: str | None) -> torch.nn.Module:
    model = load_causal_lm(model_dir)
    if ckpt:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        state = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
        model.tie_weights()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--ckpt")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = load_tokenizer(args.model)
    model = load_policy(args.model, args.ckpt)
    ns = list(range(N_MIN, N_MAX + 1))
    prompts = [tok(f"{n}=")["input_ids"] for n in ns]
    gen = torch.Generator().manual_seed(args.seed)
    eos = tok.eos_token_id
    drawn, entropies = sample(model, prompts * args.k, temperature=1.0, max_new_tokens=6, eos_id=eos,
                              pad_id=tok.pad_token_id, generator=gen)
    by_pos: dict[int, list[float]] = {}
    it = iter(entropies)  # sample() lists them step by step, over the sequences still running
    for t in range(max(len(r) for r in drawn)):
        for r in drawn:
            if len(r) > t:
                by_pos.setdefault(t, []).append(next(it))
    correct = {n: set() for n in ns}
    n_ok = 0
    split = {True: [0, 0], False: [0, 0]}
    for i, r in enumerate(drawn):
        n = ns[i % len(ns)]
        text = tok.decode(r[:-1]) if r and r[-1] == eos else None
        ok = text is not None and is_correct(text, n)
        n_ok += ok
        if ok:
            correct[n].add(text.strip())
        if text is not None and len(text) >= 2 and text[:2].isdigit() and int(text[:2]) >= 10:
            b = needs_borrow(n, int(text[:2]))
            split[b][0] += ok
            split[b][1] += 1
    res = {
        "sampled_acc": n_ok / len(drawn),
        "acc_borrow": split[True][0] / max(1, split[True][1]),
        "acc_no_borrow": split[False][0] / max(1, split[False][1]),
        "borrow_share": split[True][1] / max(1, split[True][1] + split[False][1]),
        "mean_token_entropy": sum(entropies) / len(entropies),
        "entropy_by_position": [round(sum(v) / len(v), 3) for _, v in sorted(by_pos.items())],
        "distinct_correct": sum(len(s) for s in correct.values()) / len(ns),
        "k": args.k,
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
