"""``quiet_third_party`` drops the listed third-party messages once, and nothing else."""

from __future__ import annotations

import logging
import warnings

import math_verify.parser

from rlvr_lightning.quiet import NOISY_WARNINGS, quiet_third_party


def test_math_verify_timeout_notice_is_dropped_and_other_logs_are_kept(caplog, monkeypatch):
    monkeypatch.setattr(math_verify.parser, "TIMEOUT_WARNING_SHOWN", False)  # math-verify warns once a process
    quiet_third_party()
    quiet_third_party()  # a second call adds no second filter
    logger = logging.getLogger("math_verify.parser")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING):
        assert math_verify.parser.parse("\\boxed{3}", parsing_timeout=None)
        logger.warning("a real parser problem")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["a real parser problem"]
    assert math_verify.parser.TIMEOUT_WARNING_SHOWN  # the notice was issued, and dropped


def test_listed_warnings_are_ignored_and_others_still_show():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        quiet_third_party()
        warnings.warn("You are using the `dataloader_iter` step flavor. If you consume ...", UserWarning)
        warnings.warn("your reward returned NaN", UserWarning)
        ours = [f for f in warnings.filters if f[1] is not None and f[1].pattern in NOISY_WARNINGS]
    assert [str(w.message) for w in caught] == ["your reward returned NaN"]
    assert len(ours) == len(NOISY_WARNINGS)  # each filter once
