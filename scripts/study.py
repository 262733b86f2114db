"""The entropy study: every condition of ``configs/study/`` for several seeds, then ``docs/findings.md``.

    python scripts/study.py                   # full study: 3 seeds, writes docs/findings.md and docs/figures/
    python scripts/study.py --quick           # shorter runs, writes runs/study-quick/findings.md
    python scripts/study.py --report-only     # rebuild the report from finished runs

Each run is ``rlvr fit --config configs/study/<condition>.yaml --seed_everything S`` logging to
``<runs>/<condition>/seed<S>/``; a run that finished leaves ``done.json`` there and is skipped next time (an
unfinished one is started again from scratch). The report is regenerated from the runs' ``metrics.csv`` files,
never edited by hand: per finding of the paper a table (mean +- std over seeds of the final entropy, accuracy and
distinct correct answers, each the mean over the last fifth of the run), a verdict computed from those numbers
(see :func:`verdict`), curves against the rollout step and the entropy-accuracy frontier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rlvr_lightning.plotting import ema_smooth, read_metrics  # noqa: E402

# in the order they run (every seed of a condition before the next): the positive/negative split and PAR first
CONDITIONS = ("grpo", "positive_only", "negative_only", "par_entropy", "par_constant", "clip_higher", "clip_lower",
              "offpolicy_n4", "low_diversity")
METRICS = {"entropy": "train/entropy", "accuracy": "train/accuracy", "distinct": "train/distinct_correct"}
PROBE = ("train/entropy_change_measured", "train/entropy_change_predicted",
         "train/entropy_drive_pos", "train/entropy_drive_neg")

# (title, the paper's claim, conditions shown, pairs (a, b) the paper says end with entropy(a) > entropy(b))
FINDINGS = (
    ("Clip thresholds", "a higher upper clip (Clip-Higher, eps_high 0.28) keeps entropy higher, a higher lower "
     "clip (Clip-Lower, eps_low 0.28) lowers it", ("clip_lower", "grpo", "clip_higher"),
     (("clip_higher", "grpo"), ("grpo", "clip_lower"))),
    ("Off-policy updates", "more updates per rollout batch (N = 4 against N = 1) collapse entropy faster",
     ("grpo", "offpolicy_n4"), (("grpo", "offpolicy_n4"),)),
    ("Training-data diversity", "a narrow slice of the training prompts ends at lower entropy",
     ("grpo", "low_diversity"), (("grpo", "low_diversity"),)),
    ("Positive-advantage tokens drive the collapse", "training on positive-advantage tokens only collapses "
     "entropy, on negative-advantage tokens only keeps it high", ("positive_only", "grpo", "negative_only"),
     (("negative_only", "positive_only"),)),
    ("PAR controls entropy", "down-weighting positive-advantage tokens (constant or entropy-guided lambda) "
     "keeps entropy above GRPO's", ("grpo", "par_constant", "par_entropy"),
     (("par_constant", "grpo"), ("par_entropy", "grpo"))),
)


def config_steps(condition: str) -> int:
    """``trainer.max_steps`` of a study config."""
    with open(REPO / "configs" / "study" / f"{condition}.yaml") as f:
        return int(yaml.safe_load(f)["trainer"]["max_steps"])


def run_command(condition: str, seed: int, runs: Path, quick: bool) -> list[str]:
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", f"configs/study/{condition}.yaml",
           "--seed_everything", str(seed), "--trainer.logger.init_args.save_dir", str(runs / condition),
           "--trainer.logger.init_args.name", f"seed{seed}", "--trainer.logger.init_args.version", "0"]
    if quick:
        cmd += ["--trainer.max_steps", str(max(1, config_steps(condition) // 5))]
    return cmd


def final_values(run_dir: Path) -> dict[str, float]:
    """Mean of each study metric over the last fifth of a run's rollout steps."""
    series = read_metrics(run_dir)
    out = {}
    for name, key in METRICS.items():
        points = series.get(key, [])
        if points:
            tail = points[-max(1, len(points) // 5):]
            out[name] = statistics.fmean(v for _, v in tail)
    return out


def run_all(conditions: list[str], seeds: list[int], runs: Path, quick: bool, jobs: int) -> None:
    """Run every (condition, seed) not finished yet, ``jobs`` at a time, with a progress line per run."""
    todo = [(c, s) for c in conditions for s in seeds]
    total, pending, running = len(todo), [], []
    for i, (c, s) in enumerate(todo, 1):
        if (runs / c / f"seed{s}" / "done.json").exists():
            print(f"[{i}/{total}] {c} seed {s}: finished before, skipped", flush=True)
        else:
            pending.append((i, c, s))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < jobs:
            i, c, s = pending.pop(0)
            folder = runs / c / f"seed{s}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            log = open(folder / "fit.log", "w")
            proc = subprocess.Popen(run_command(c, s, runs, quick), cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            running.append((i, c, s, proc, log, time.time()))
        time.sleep(1.0)
        for item in [r for r in running if r[3].poll() is not None]:
            running.remove(item)
            i, c, s, proc, log, t0 = item
            log.close()
            folder = runs / c / f"seed{s}"
            if proc.returncode != 0:
                raise SystemExit(f"[{i}/{total}] {c} seed {s} failed (exit {proc.returncode}); see {folder}/fit.log")
            values = final_values(folder)
            (folder / "done.json").write_text(json.dumps({"seconds": time.time() - t0, **values}))
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            print(f"[{i}/{total}] {c} seed {s}: done in {time.time() - t0:.0f} s ({shown})", flush=True)


def matched_entropy(accuracies: list[float], seeds: list[int], runs: Path) -> str:
    """GRPO's entropy when its training accuracy (EMA 0.9 over rollout steps) first reaches the mean of
    ``accuracies``, mean +- std over GRPO's seeds: a condition that ends above it holds more entropy than GRPO at
    equal accuracy; "not reached" when some GRPO seed never gets there."""
    if not accuracies:
        return "-"
    target, found = statistics.fmean(accuracies), []
    for s in seeds:
        series = read_metrics(runs / "grpo" / f"seed{s}")
        acc = dict(zip((x for x, _ in series.get(METRICS["accuracy"], [])),
                       ema_smooth([v for _, v in series.get(METRICS["accuracy"], [])], 0.9)))
        ent = dict(zip((x for x, _ in series.get(METRICS["entropy"], [])),
                       ema_smooth([v for _, v in series.get(METRICS["entropy"], [])], 0.9)))
        hit = next((x for x in sorted(acc) if acc[x] >= target and x in ent), None)
        if hit is None:
            return "not reached"
        found.append(ent[hit])
    return _cell(found)


def verdict(stats: dict[str, dict[str, list[float]]], pairs: tuple[tuple[str, str], ...]) -> str:
    """Reproduced when, for every pair (a, b), mean entropy(a) - mean entropy(b) exceeds the sum of their seed
    standard deviations; partly when every difference has the paper's sign, or some but not all pass; not
    reproduced otherwise."""
    gaps = []
    for a, b in pairs:
        ea, eb = stats[a]["entropy"], stats[b]["entropy"]
        gap = statistics.fmean(ea) - statistics.fmean(eb)
        gaps.append((gap, gap > _std(ea) + _std(eb)))
    if all(clear for _, clear in gaps):
        return "reproduced"
    if all(g > 0 for g, _ in gaps) or any(clear for _, clear in gaps):
        return "partly reproduced"
    return "not reproduced"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {_std(values):.3f}" if values else "-"


def collect(conditions: list[str], seeds: list[int], runs: Path) -> dict[str, dict[str, list[float]]]:
    """Per condition, per metric: the final values of the finished seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for c in conditions:
        out[c] = {name: [] for name in METRICS}
        for s in seeds:
            done = runs / c / f"seed{s}" / "done.json"
            if done.exists():
                values = json.loads(done.read_text())
                for name in METRICS:
                    if name in values:
                        out[c][name].append(values[name])
    return out


def plot_finding(title: str, conditions: tuple[str, ...], seeds: list[int], runs: Path, out: Path) -> None:
    """Seed-mean curves (EMA 0.6) of entropy, accuracy and distinct correct answers, seed range shaded."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.0 * len(METRICS), 3.4))
    for c in conditions:
        series = [read_metrics(runs / c / f"seed{s}") for s in seeds if (runs / c / f"seed{s}" / "done.json").exists()]
        for ax, (name, key) in zip(axes, METRICS.items()):
            curves = [dict(zip([x for x, _ in sr[key]], ema_smooth([v for _, v in sr[key]]))) for sr in series
                      if key in sr]
            if not curves:
                continue
            xs = sorted(set.intersection(*(set(cv) for cv in curves)))
            ys = [[cv[x] for cv in curves] for x in xs]
            line, = ax.plot(xs, [statistics.fmean(y) for y in ys], label=c)
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.15)
            ax.set_title(key)
            ax.set_xlabel("rollout step")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title} (mean over {len(seeds)} seeds, range shaded, EMA 0.6)", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_frontier(stats: dict[str, dict[str, list[float]]], out: Path) -> None:
    """Final entropy against final accuracy: one small dot per run, one large marker per condition's mean."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for c, values in stats.items():
        if not values["entropy"] or not values["accuracy"]:
            continue
        dots = ax.scatter(values["entropy"], values["accuracy"], s=12, alpha=0.5)
        ax.scatter([statistics.fmean(values["entropy"])], [statistics.fmean(values["accuracy"])], s=80,
                   color=dots.get_facecolor()[0], label=c, edgecolors="black")
    ax.set_xlabel("final token entropy (nats)")
    ax.set_ylabel("final training accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def probe_rows(conditions: list[str], seeds: list[int], runs: Path) -> list[str]:
    """Per condition, over the probed steps of all seeds: measured and predicted entropy change per rollout
    step, their correlation, and the entropy drive of positive- and negative-advantage tokens."""
    rows = []
    for c in conditions:
        cols: dict[str, list[float]] = {k: [] for k in (*PROBE, "train/accuracy")}
        t_probed, t_other = [], []
        for s in seeds:
            folder = runs / c / f"seed{s}"
            if not (folder / "done.json").exists():
                continue
            series = read_metrics(folder)
            steps = set.intersection(*(set(x for x, _ in series.get(k, [])) for k in PROBE))
            for k in cols:
                cols[k] += [v for x, v in series.get(k, []) if x in steps]
            # the probe runs inside the step's update phase: its cost shows in time/update
            for x, v in series.get("time/update", []):
                (t_probed if x in steps else t_other).append(v)
        measured, predicted, pos, neg, acc = (cols[k] for k in (*PROBE, "train/accuracy"))
        if len(measured) < 2:
            continue
        corr = statistics.correlation(predicted, measured) if _std(predicted) and _std(measured) else float("nan")
        down = "positive" if statistics.fmean(pos) < statistics.fmean(neg) else "negative"
        cost = statistics.median(t_probed) / statistics.median(t_other) if t_probed and t_other else float("nan")
        means = " | ".join(f"{statistics.fmean(v):+.2e}" for v in (measured, predicted))
        drives = " | ".join(f"{statistics.fmean(v):+.2e}" for v in (pos, neg))
        p = statistics.fmean(acc) if acc else float("nan")
        rows.append(f"| {c} | {len(measured)} | {p:.2f} | {means} | {corr:.2f} | {drives} | {down} | {cost:.1f}x |")
    return rows


def write_report(conditions: list[str], seeds: list[int], runs: Path, out: Path, command: str) -> None:
    figures = out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    stats = collect(conditions, seeds, runs)
    lines = ["# Findings of the entropy study", "",
             f"Generated by `{command}` from the runs in `{_shown(runs)}` "
             "(do not edit by hand). Each condition ran for the seeds listed; a value is the mean over the last "
             "fifth of a run's rollout steps, shown as mean ± standard deviation over seeds. Verdicts compare final "
             "entropy: reproduced when every gap the paper predicts exceeds the sum of the two seed standard "
             "deviations, partly when the gaps have the paper's sign but not all clear the spread (or only some "
             "do), not reproduced otherwise.", "", f"Seeds: {', '.join(map(str, seeds))}.", "",
             "The model starts from the 300-step warm-up (`make study-model`), whose training accuracy is about 0.1 "
             "and stays below one half: the regime where, by the identity in `docs/entropy-theory.md`, "
             "positive-advantage tokens carry most of GRPO's expected entropy drive. From a stronger warm-up "
             "(accuracy above one half) the split reverses: `docs/findings-high-accuracy.md`.", ""]
    for n, (title, claim, shown, pairs) in enumerate(FINDINGS, 1):
        if not all(stats.get(c, {}).get("entropy") for p in pairs for c in p):
            continue  # a finding is reported once every condition it compares has finished runs
        shown = tuple(c for c in shown if c in stats)
        fig = figures / f"finding{n}.png"
        plot_finding(title, shown, seeds, runs, fig)
        lines += [f"## {n}. {title}: {verdict(stats, pairs)}", "", f"The paper: {claim}.", "",
                  "| condition | seeds | entropy | accuracy | distinct correct | GRPO's entropy at this accuracy |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {len(stats[c]['entropy'])} | " + " | ".join(_cell(stats[c][m]) for m in METRICS)
                  + f" | {matched_entropy(stats[c]['accuracy'], seeds, runs)} |" for c in shown]
        lines += ["", f"![{title}](figures/{fig.name})", ""]
    plot_frontier(stats, figures / "frontier.png")
    lines += ["## Entropy against accuracy", "", "![frontier](figures/frontier.png)", ""]
    probe = probe_rows(conditions, seeds, runs)
    if probe:
        lines += ["## The entropy probe", "", "Per rollout step where the probe ran: the measured change of mean token "
                  "entropy on the step's batch, its first-order prediction from the actual parameter update, their "
                  "correlation, and the first-order entropy change along the policy-gradient direction of "
                  "positive- and negative-advantage tokens (the more negative one pushes entropy down); p is the "
                  "mean training accuracy of the probed batches (in expectation a prompt's drives split as "
                  "(1 - p) : p, `docs/entropy-theory.md`; single batches are noisy). The last "
                  "column is the probe's overhead: the median update time of probed steps over the other steps.", "",
                  "| condition | probed steps | p | measured | predicted | corr | drive pos | drive neg | "
                  "pushes down | update time |", "|---|---|---|---|---|---|---|---|---|---|", *probe, ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a fifth of each run's steps; report in runs/study-quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each on one thread)")
    p.add_argument("--runs", type=Path, default=None, help="run folder (default runs/study or runs/study-quick)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--out", type=Path, default=None,
                   help="the report (default docs/findings.md, or runs/study-quick/findings.md with --quick)")
    args = p.parse_args(argv)
    runs = args.runs or REPO / "runs" / ("study-quick" if args.quick else "study")
    if not args.report_only:
        run_all(args.conditions, args.seeds, runs, args.quick, args.jobs)
    out = args.out or (runs / "findings.md" if args.quick else REPO / "docs" / "findings.md")
    command = "python scripts/study.py" + (" --quick" if args.quick else "")
    command += f" --seeds {' '.join(map(str, args.seeds))}" + (f" --out {_shown(out)}" if args.out else "")
    write_report(args.conditions, args.seeds, runs, out, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
