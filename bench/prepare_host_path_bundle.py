"""Pack what `bench/gpu_host_path.py` needs on the lent GPU machine (no registry there, 64 MiB per call).

    python -m bench.prepare_host_path_bundle [--baseline COMMIT]

.carry/      (first call, ~55 MiB) the default model's tokenizer, the default test split, the code at
             --baseline (git archive: the archive and handler to compare with), TorchServe's and
             torch-model-archiver's Python packages, and the wheels of bench/requirements-device.txt
             (KServe's server, a JRE for TorchServe's frontend, the load generator's event loop)
.carry_jar/  (second call, 44 MiB) TorchServe's Java frontend, model-server.jar

Then on the device: `bash bench/gpu_host_path_run.sh install` carrying .carry, and
`bash bench/gpu_host_path_run.sh run STAGES` carrying .carry_jar (docs/gpu-and-tensorrt.md).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
#: the commit before issue 22's host-path work
DEFAULT_BASELINE = "e7a557f"
DEVICE_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/default/checkpoint", help="whose tokenizer the run uses")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit to compare with (git archive of it is carried)")
    parser.add_argument("--out", type=Path, default=REPO / ".carry")
    parser.add_argument("--jar-out", type=Path, default=REPO / ".carry_jar")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    import model_archiver
    import ts

    for folder in (args.out, args.jar_out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    tokenizer = args.out / "tokenizer"
    tokenizer.mkdir()
    for name in TOKENIZER_FILES:
        if (args.checkpoint / name).is_file():
            shutil.copy2(args.checkpoint / name, tokenizer / name)
    shutil.copy2(args.test_csv, args.out / "test.csv")
    baseline = args.out / "baseline"
    baseline.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "handler", "export", "harness", "training", "ops", "build_mar.py", "config.properties"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
    site = args.out / "site"
    shutil.copytree(Path(ts.__file__).parent, site / "ts", ignore=shutil.ignore_patterns("frontend", "__pycache__"))
    shutil.copytree(Path(model_archiver.__file__).parent, site / "model_archiver", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(Path(ts.__file__).parent / "frontend" / "model-server.jar", args.jar_out / "model-server.jar")
    platforms = [option for platform in DEVICE_PLATFORMS for option in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", *platforms,
                    "-r", str(REPO / "bench/requirements-device.txt"), "-d", str(args.out / "wheels")], check=True)  # fmt: skip
    for folder in (args.out, args.jar_out):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        print(f"wrote {folder} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
