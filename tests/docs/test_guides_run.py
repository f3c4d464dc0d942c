"""The user guides' shell blocks, executed as written: a renamed flag or a broken recipe fails here.

`docs/serve-your-own-model.md` runs end to end on the tests' tiny model (fine-tune → export + int8 →
both archives → TorchServe with `--models` → key renewer → curl → stop) in a scratch folder that looks
like the repository root (`.venv`, `build_mar.py`, `config.properties`). The only edits made to the
text are the ports: the guide's 8080/8081/8082/7070/7071 become free loopback ports, so the test never
collides with a server already running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.torchserve import PORT_KEYS, free_port

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "serve-your-own-model.md"
SHIPPED_PORTS = {"inference_address": "8080", "management_address": "8081", "metrics_address": "8082",
                 "grpc_inference_port": "7070", "grpc_management_port": "7071"}  # fmt: skip
TRAINING_ROWS = [("positive", "great value, would buy again"), ("negative", "broken on arrival, refund please"),
                 ("neutral", "it arrived on monday"), ("positive", "质量很好，非常满意"), ("negative", "质量太差了，用了两天就坏了"),
                 ("neutral", "the box is blue and weighs two kilos")]  # fmt: skip


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash fenced blocks of a markdown text, in order (```text / ```console blocks are not run)."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def test_bash_blocks_are_found_in_order():
    text = "intro\n```bash\necho one\n```\n```text\nnot run\n```\n```bash\necho two\n```\n"
    assert bash_blocks(text) == ["echo one\n", "echo two\n"]


def json_line(line: str):
    """The JSON value a whole output line holds (a curl answer), else None."""
    try:
        return json.loads(line) if line.startswith(("{", "[")) else None
    except ValueError:
        return None


def write_splits(folder: Path) -> Path:
    """train/dev/test CSVs (label,txt) of a few repeated texts: enough for the tiny model to learn them."""
    import csv

    folder.mkdir(parents=True)
    for split, repeat in (("train", 12), ("dev", 2), ("test", 2)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("label", "txt"), *TRAINING_ROWS * repeat])
    return folder


def scratch_repository(root: Path) -> dict[str, str]:
    """A folder the guide can run in as if it were the repository root; returns the guide's port → free port."""
    root.mkdir(parents=True)
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "build_mar.py").symlink_to(REPO / "build_mar.py")
    ports = {shipped: str(free_port()) for shipped in SHIPPED_PORTS.values()}
    lines = []
    for line in (REPO / "config.properties").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in SHIPPED_PORTS:
            line = line.replace(SHIPPED_PORTS[key], ports[SHIPPED_PORTS[key]])
        lines.append(line)
    lines.append(f"initial_worker_port={free_port()}")
    assert "initial_worker_port" in PORT_KEYS  # the harness isolates the same keys
    (root / "config.properties").write_text("\n".join(lines) + "\n")
    return ports


@pytest.mark.slow
@pytest.mark.integration
def test_serve_your_own_model_guide_runs_as_written(tiny_checkpoint, tmp_path):
    blocks = bash_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "the guide lost its runnable blocks"
    root = tmp_path / "repo"
    ports = scratch_repository(root)
    script = "\n".join(blocks)
    for shipped, free in ports.items():
        script = script.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{free}")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "BASE": str(tiny_checkpoint), "DATA": str(write_splits(tmp_path / "data")), "NAME": "guide_model",
           "STEPS": "150", "TMPDIR": str(tmp_path / "tmp"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("CHECKPOINT", None)
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        subprocess.run([str(REPO / ".venv/bin/torchserve"), "--stop"], cwd=root, env=env, capture_output=True, timeout=120)
    assert process.returncode == 0, f"the guide's commands failed:\n{output[-6000:]}"
    answers = [answer for line in output.splitlines() if (answer := json_line(line)) is not None]
    single = [a for a in answers if isinstance(a, dict) and "label" in a]
    batched = [a for a in answers if isinstance(a, list)]
    assert len(single) == 2 and all(a["label"] in {"positive", "negative", "neutral"} for a in single), output[-3000:]
    assert "top_k" in single[1] and len(single[1]["top_k"]) == 2, single[1]
    assert batched and len(batched[0]) == 2 and all(len(a["probabilities"]) >= 2 for a in batched[0]), output[-3000:]
    assert (root / "model_store" / "guide_model.mar").is_file() and (root / "model_store" / "gpu" / "guide_model.mar").is_file()
    assert (root / "artifacts" / "guide_model" / "export" / "model.int8.onnx").is_file(), "int8 was refused: the guide's recipe lost accuracy"
    print(output[-2500:], file=sys.stderr)
