"""ONNX Runtime on the CPU, running the ONNX file packed in the .mar.

(The module shares its name with the `onnxruntime` package; `import onnxruntime` below is an
absolute import and finds the package, since this folder is never an import root.)
"""

from __future__ import annotations

from handler import layout
from handler.backends.base import CpuBackend
from handler.errors import BackendUnavailable
from handler.settings import OnnxRuntimeOptions, usable_cores


class OnnxRuntimeBackend(CpuBackend):
    """Runs ``model.onnx``, or ``model.int8.onnx`` (made by ``export.onnx_export --int8``) with ``int8``."""

    name = "onnxruntime"
    options: OnnxRuntimeOptions

    def _load_impl(self) -> None:
        file_name = layout.INT8_ONNX_FILE if self.options.int8 else layout.ONNX_FILE
        path = self.model_dir / file_name
        if not path.is_file():
            hint = "export.onnx_export --int8" if self.options.int8 else "build_mar.py --export-dir"
            raise BackendUnavailable(f"no {file_name} in the .mar (make it with {hint})")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed in the worker's environment") from None
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self.options.num_threads or usable_cores()
        session_options.inter_op_num_threads = 1
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.options.spinning else "0")
        self.session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        self.file_name = file_name

    def _infer_impl(self, inputs):
        (logits,) = self.session.run([self.spec.output_name], {name: inputs[name] for name in self.spec.input_names})
        return logits

    def describe(self):
        options = self.session.get_session_options()
        return {"backend": self.name, "model": self.file_name, "threads": options.intra_op_num_threads, "spinning": self.options.spinning}
