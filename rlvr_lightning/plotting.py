"""Plots of training runs (entropy, reward, accuracy, lambda, clip fractions, length) and reliability
diagrams.

``plot_runs`` reads the ``metrics.csv`` files Lightning's ``CSVLogger`` writes under each run directory
(``<run_dir>/<name>/version_<n>/metrics.csv``: a ``step`` column and one column per logged metric, with empty
cells where a row did not log that metric) and draws one panel per metric key and one line per run, smoothed
by an exponential moving average as in the paper's entropy curves. matplotlib is imported when a plot is drawn
(``pip install 'rlvr-lightning[plot]'``) and always with the non-interactive Agg backend.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DEFAULT_KEYS", "ema_smooth", "plot_reliability", "plot_runs", "read_metrics"]

DEFAULT_KEYS: tuple[str, ...] = (
    "train/entropy",
    "train/reward_mean",
    "train/accuracy",
    "train/lambda",
    "train/clip_frac*",
    "train/response_length_mean",
)
"""Panels of :func:`plot_runs`; a key ending in ``*`` draws every column with that prefix in one panel."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (or pip install 'rlvr-lightning[plot]')"
        ) from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def ema_smooth(values: Sequence[float], alpha: float = 0.6) -> list[float]:
    r"""Exponential moving average :math:`s_0 = x_0,\; s_t = \alpha s_{t-1} + (1 - \alpha) x_t`.

    ``alpha = 0`` returns the values unchanged; larger ``alpha`` smooths more. No bias correction is applied
    (the first value starts the average).

    Args:
        values: the series, in step order.
        alpha: smoothing weight in [0, 1).

    Returns:
        The smoothed series, same length.

    Example:
        >>> ema_smooth([1.0, 0.0, 0.0], alpha=0.5)
        [1.0, 0.5, 0.25]
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha!r}")
    out: list[float] = []
    for x in values:
        out.append(x if not out else alpha * out[-1] + (1.0 - alpha) * x)
    return out


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, list[tuple[float, float]]]:
    """Every ``metrics.csv`` under ``run_dir`` (searched recursively) as ``{column: [(step, value), ...]}``.

    The x value is the row's ``rollout_step`` (rollout batches trained on, logged by ``RLVRModule``) when present,
    else Lightning's ``step``; a column has one point per x (a repeated row, such as a step logged again after a
    resume, or the copy of the last training row that ``self.log`` left at a data epoch's end, keeps its last
    value). Empty and non-numeric cells are skipped (Lightning writes sparse rows); so are NaN and infinite
    values. Points are sorted by x; files are read in sorted path order, so a resumed run's later versions win.

    Raises:
        FileNotFoundError: if ``run_dir`` holds no ``metrics.csv``.
    """
    root = Path(run_dir)
    files = sorted(root.rglob("metrics.csv")) if root.is_dir() else ([root] if root.is_file() else [])
    if not files:
        raise FileNotFoundError(f"no metrics.csv found under run directory {str(run_dir)!r}")
    points: dict[str, dict[float, float]] = {}
    for path in files:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row_no, row in enumerate(reader):
                step_cell = row.get("rollout_step") or row.get("step")
                try:
                    step = float(step_cell) if step_cell not in (None, "") else float(row_no)
                except ValueError:
                    step = float(row_no)
                for key, cell in row.items():
                    if key in (None, "step", "epoch", "rollout_step") or cell in (None, ""):
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        continue
                    if math.isfinite(value):
                        points.setdefault(key, {})[step] = value
    return {key: sorted(pts.items()) for key, pts in points.items()}


def _columns_for(key: str, series: dict[str, list[tuple[float, float]]]) -> list[str]:
    if key.endswith("*"):
        return sorted(c for c in series if c.startswith(key[:-1]))
    return [key] if key in series else []


def plot_runs(
    run_dirs: list[str],
    out: str,
    *,
    ema: float = 0.6,
    keys: list[str] | None = None,
) -> list[str]:
    """Draw training curves of several runs, one panel per metric key and one line per run, to an image file.

    Each series is smoothed with :func:`ema_smooth` (``s_t = ema * s_{t-1} + (1 - ema) * x_t``; the paper
    smooths its entropy curves with 0.6) and drawn against ``step``. A key no run has is left out; a key
    ending in ``*`` draws every matching column (e.g. ``train/clip_frac*`` for low and high clip fractions)
    with the column's suffix in the legend.

    Args:
        run_dirs: run directories (each searched recursively for ``metrics.csv``); the legend uses their
        names. out: output image path (the format follows the extension, e.g. ``.png`` or ``.pdf``).
        ema: smoothing weight in [0, 1); 0 draws the raw values.
        keys: metric columns to draw; default :data:`DEFAULT_KEYS`.

    Returns:
        The titles of the panels drawn, in order (the metric keys).

    Raises:
        FileNotFoundError: a run directory without ``metrics.csv``.
        ValueError: no run has any of ``keys``.
    """
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must lie in [0, 1), got {ema!r}")
    keys = list(DEFAULT_KEYS if keys is None else keys)
    runs = [(Path(d).resolve().name or str(d), read_metrics(d)) for d in run_dirs]
    panels = [k for k in keys if any(_columns_for(k, s) for _, s in runs)]
    if not panels:
        known = sorted({c for _, s in runs for c in s})
        raise ValueError(f"none of the keys {keys} is in the runs' metrics; columns found: {known}")

    plt = _pyplot()
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.6 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    styles = ["-", "--", ":", "-."]
    for ax, key in zip(axes.flat, panels):
        for r, (name, series) in enumerate(runs):
            cols = _columns_for(key, series)
            for j, col in enumerate(cols):
                steps = [p[0] for p in series[col]]
                values = ema_smooth([p[1] for p in series[col]], alpha=ema)
                label = f"{name} {col.rsplit('/', 1)[-1]}" if key.endswith("*") else name
                ax.plot(steps, values, styles[j % len(styles)], color=colors[r % len(colors)], label=label)
        ax.set_title(key)
        ax.set_xlabel("rollout step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if ema > 0:
        fig.suptitle(f"EMA smoothing {ema}", fontsize="small")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return panels


def plot_reliability(confidences: Any, correct: Any, out: str, n_bins: int = 15) -> list[str]:
    """Reliability diagram: accuracy against mean confidence per equal-width bin, with the bin counts.

    Bins are those of :func:`rlvr_lightning.functional.expected_calibration_error`, whose value is shown in
    the title. Bars below the diagonal mean over-confidence.

    Args:
        confidences: confidence of each response in [0, 1], shape ``(N,)`` (tensor, array or list).
        correct: whether each response is correct, shape ``(N,)``.
        out: output image path.
        n_bins: number of equal-width bins.

    Returns:
        The titles of the panels drawn.
    """
    import torch

    from rlvr_lightning.functional.calibration import calibration_bins, expected_calibration_error

    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    ok = torch.as_tensor(correct).flatten()
    ece = float(expected_calibration_error(conf, ok, n_bins=n_bins))
    bins = calibration_bins(conf, ok, n_bins=n_bins)
    bins[:, n_bins - 1] += bins[
        :, n_bins
    ]  # draw confidence 1.0 with the last bin; the ECE above is unchanged
    counts, conf_sum, acc_sum = bins[0, :n_bins], bins[1, :n_bins], bins[2, :n_bins]
    nonempty = counts > 0
    width = 1.0 / n_bins
    lefts = torch.arange(n_bins, dtype=torch.float64) * width
    acc = torch.where(nonempty, acc_sum / counts.clamp(min=1), torch.zeros_like(acc_sum))
    mean_conf = torch.where(nonempty, conf_sum / counts.clamp(min=1), lefts + width / 2)

    plt = _pyplot()
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(5.0, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    titles = [f"reliability (ECE {ece:.3f})", "responses per bin"]
    ax.bar(lefts.tolist(), acc.tolist(), width=width, align="edge", edgecolor="black", label="accuracy")
    ax.plot(
        mean_conf[nonempty].tolist(),
        acc[nonempty].tolist(),
        "o",
        color="C3",
        label="bin (mean confidence, accuracy)",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(titles[0])
    ax.legend(fontsize="small", loc="upper left")
    ax_n.bar(lefts.tolist(), counts.tolist(), width=width, align="edge", edgecolor="black")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("confidence")
    ax_n.set_title(titles[1])
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return titles
