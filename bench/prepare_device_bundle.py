"""Pack what a GPU run on the lent device needs into .carry/ (git-ignored; 64 MiB travel limit).

* the default fine-tuned model laid out as a worker sees it (model/ + serving_spec.json), with the
  weights stored in fp16: the GPU backend runs fp16 anyway, so this changes nothing it computes
* the default test split, and the CPU fp32 reference probabilities for it, computed here by the
  handler's own torch_cpu backend from the full fp32 weights
* TorchServe's Python package without its Java frontend (the in-process driver uses its Context)

    python -m bench.prepare_device_bundle
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from handler.errors import run_cli

REPO = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/default/checkpoint")
    parser.add_argument("--export-dir", type=Path, default=REPO / "artifacts/default/export")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--out", type=Path, default=REPO / ".carry")
    return parser


def check_inputs(checkpoint: Path, export_dir: Path, test_csv: Path) -> None:
    """Raise `DataError` naming the command that makes whichever input is missing."""
    from handler import layout
    from handler.errors import DataError

    needs = [(checkpoint / "config.json", "train the default model with `make train` (or pass --checkpoint)"),
             (export_dir / layout.SPEC_FILE, "export it with `make export` (or pass --export-dir)"),
             (test_csv, "`make train` writes the default splits (or pass --test-csv a label,txt CSV)")]  # fmt: skip
    for path, fix in needs:
        if not path.is_file():
            raise DataError(f"{path} is missing: {fix}")


def main() -> None:
    args = build_parser().parse_args()
    check_inputs(args.checkpoint, args.export_dir, args.test_csv)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bench.gpu_inprocess import cpu_reference
    from handler import layout
    from training.data import read_labelled_csv
    from harness.models import model_dir_like_mar

    shutil.rmtree(args.out, ignore_errors=True)
    model_dir = args.out / "default_model_dir"
    model_dir_like_mar(args.checkpoint, args.export_dir, model_dir)
    for name in (layout.ONNX_FILE, layout.INT8_ONNX_FILE):
        (model_dir / name).unlink(missing_ok=True)

    _, texts = read_labelled_csv(args.test_csv)
    np.save(args.out / "reference_probs.npy", cpu_reference(model_dir, texts))
    shutil.copy2(args.test_csv, args.out / "test.csv")

    half = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, local_files_only=True).half()
    shutil.rmtree(model_dir / layout.CHECKPOINT_DIR)
    half.save_pretrained(model_dir / layout.CHECKPOINT_DIR)
    AutoTokenizer.from_pretrained(args.checkpoint, local_files_only=True).save_pretrained(model_dir / layout.CHECKPOINT_DIR)

    import ts

    shutil.copytree(Path(ts.__file__).parent, args.out / "site" / "ts", ignore=shutil.ignore_patterns("frontend", "__pycache__"))
    anchor = REPO.parent / "shared" / "tools" / "gpu_anchor.py"
    if anchor.is_file():
        shutil.copy2(anchor, args.out / "gpu_anchor.py")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB): {len(texts)} test texts with CPU fp32 reference probabilities")


if __name__ == "__main__":
    run_cli(main)
