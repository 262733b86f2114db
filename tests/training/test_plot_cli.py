"""`rlvr plot` on two real smoke runs writes a valid PNG with the standard panels."""

from __future__ import annotations

import matplotlib.image
from toy_training import fit

from rlvr_lightning.cli import main


def test_rlvr_plot_two_smoke_runs(tmp_path, capsys):
    fit(tmp_path, "--model.reweight", "PAR", name="par")
    fit(tmp_path, "--model.reweight", "EntropyGuidedPAR", name="guided")
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "par"), str(tmp_path / "guided"), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    report = capsys.readouterr().out
    for panel in ("entropy", "reward", "accuracy", "lambda", "clip", "length"):
        assert panel in report.lower(), (panel, report)
