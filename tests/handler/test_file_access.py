"""The handler reads only its own model directory (and the Python installation): checked with an audit hook.

The hook sees files opened from Python; native libraries opening files themselves (ONNX Runtime reading
model.onnx) are not seen, but their paths come from the same model directory in the backends' code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from harness.models import model_dir_like_mar

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import handler.bert_trt_handler, handler.backends.onnxruntime, handler.backends.torch_cpu, onnxruntime, torch, transformers  # code imported before recording
    from harness.inprocess import handle_batch, started_handler
    model_dir = sys.argv[1]
    opened = []
    sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" and isinstance(args[0], str) else None)
    handler, context = started_handler(model_dir, model_yaml={"handler": {"onnx_int8": False}})
    handle_batch(handler, context, [b"hello there", b'{"text": "a json request"}'])
    allowed = [os.path.realpath(p) for p in (model_dir, sys.prefix, sys.base_prefix, "/proc", "/sys", "/dev")]
    real = {os.path.realpath(path) for path in opened}
    print(json.dumps({"outside": sorted(p for p in real if not any(p.startswith(root) for root in allowed)),
                      "inside": sorted(p for p in real if p.startswith(allowed[0]))}))
    """
)


def test_worker_opens_no_file_outside_its_model_directory(tiny_checkpoint, tiny_export, tmp_path):
    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path / "unpacked_mar")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outside"] == []
    assert any(path.endswith("serving_spec.json") for path in report["inside"]) and any("tokenizer" in path for path in report["inside"])
