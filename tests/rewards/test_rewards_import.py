"""``rlvr_lightning.rewards`` imports without torch (its worker processes start with no torch import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    """
)


def test_rewards_import_and_score_without_torch():
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import rlvr_lightning.rewards as rewards
        from rlvr_lightning.rewards import ExactMatchReward, score_completions

        scores, info = score_completions(["x = 12", "13"], ["12", "12"], [ExactMatchReward()], weights=[2.0])
        assert scores == [2.0, 0.0], scores
        assert rewards.answer_classes(["7", " 7", "8", ""], equivalence="exact") == [0, 0, 1, -1]
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_blocker_blocks_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "blocked in this test" in out.stderr
