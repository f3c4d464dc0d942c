"""TensorRT backend: runs the engine packed in the .mar on torch's CUDA stream.

No pycuda: the I/O buffers are torch CUDA tensors and the engine is enqueued with
``execute_async_v3`` on torch's current stream, so TensorRT and torch share one CUDA context
and one stream; nothing fights over contexts and only the logits come back to the host.

`tensorrt` is imported only inside `load`: TorchServe reports an ImportError in a handler
module misleadingly, and a worker without TensorRT must still start (and fall back). (The module
shares its name with the `tensorrt` package; `import tensorrt` is absolute and finds the package.)
"""

from __future__ import annotations

import json

import torch

from handler import layout
from handler.backends.base import Backend
from handler.backends.torch_io import as_tensors
from handler.errors import BackendUnavailable


_TORCH_DTYPES = {"INT32": torch.int32, "INT64": torch.int64, "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16}


def engine_mismatch(sidecar: dict, tensorrt_version: str, compute_capability: tuple[int, int]) -> str | None:
    """Why an engine built as described by `sidecar` cannot run here, or None if it can."""
    built_with = sidecar.get("tensorrt_version")
    if built_with != tensorrt_version:
        return f"engine was built with TensorRT {built_with}, this worker has {tensorrt_version}: rebuild it here with export.trt_engine"
    here = f"{compute_capability[0]}.{compute_capability[1]}"
    if sidecar.get("compute_capability") != here:
        return (
            f"engine was built for compute capability {sidecar.get('compute_capability')} ({sidecar.get('gpu_name')}), "
            f"this GPU is {here}: rebuild it on the serving GPU"
        )
    return None


def torch_dtype_of(trt_dtype) -> torch.dtype:
    """torch dtype for a `tensorrt.DataType` (by name, so any TensorRT version maps the same)."""
    name = str(trt_dtype).split(".")[-1].upper()
    if name not in _TORCH_DTYPES:
        raise BackendUnavailable(f"engine uses I/O dtype {name}, which this handler does not feed")
    return _TORCH_DTYPES[name]


class TensorRTBackend(Backend):
    """Deserializes ``model.plan`` and runs it with named tensors on torch's current CUDA stream."""

    name = "tensorrt"

    def _load_impl(self) -> None:
        engine_path = self.model_dir / layout.ENGINE_FILE
        if not engine_path.is_file():
            raise BackendUnavailable("no TensorRT engine in the .mar (build one with export.trt_engine and pass --engine to build_mar.py)")
        if not self._cuda_available():
            raise BackendUnavailable("no CUDA device visible to this worker")
        try:
            import tensorrt as trt
        except ImportError as error:
            raise BackendUnavailable(f"python package tensorrt is not importable in the worker ({error}); install NVIDIA's tensorrt wheel") from None
        sidecar_path = layout.sidecar_path(engine_path)
        if not sidecar_path.is_file():
            raise BackendUnavailable(f"{sidecar_path.name} is missing next to the engine: rebuild with export.trt_engine")
        sidecar = json.loads(sidecar_path.read_text())

        self.device = self._select_device(self.gpu_id)
        reason = engine_mismatch(sidecar, trt.__version__, self._compute_capability(self.gpu_id))
        if reason:
            raise BackendUnavailable(reason)

        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendUnavailable("TensorRT could not deserialize the engine (see the TensorRT log above): rebuild it on this machine")
        self.context = self.engine.create_execution_context()

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if sorted(inputs) != sorted(self.spec.input_names) or self.spec.output_name not in names:
            raise BackendUnavailable(f"engine I/O {names} does not match the spec's {list(self.spec.input_names)} -> {self.spec.output_name}")
        self.input_dtypes = {name: torch_dtype_of(self.engine.get_tensor_dtype(name)) for name in inputs}
        self.output_dtype = torch_dtype_of(self.engine.get_tensor_dtype(self.spec.output_name))
        low, _, high = (tuple(shape) for shape in self.engine.get_tensor_profile_shape(inputs[0], 0))
        self.min_batch_size, self.min_sequence_length = int(low[0]), int(low[1])
        self.max_batch_size, self.max_sequence_length = int(high[0]), int(high[1])

    def _infer_impl(self, inputs):
        inputs = as_tensors(inputs, self.input_dtypes)
        batch, length = inputs["input_ids"].shape
        if batch > self.max_batch_size or length > self.max_sequence_length:
            raise ValueError(f"batch {batch}x{length} exceeds the engine profile's max {self.max_batch_size}x{self.max_sequence_length}")
        rows = max(batch, self.min_batch_size)
        columns = max(length, self.min_sequence_length)
        bound = {}
        for name, dtype in self.input_dtypes.items():
            tensor = inputs[name]
            if (rows, columns) != (batch, length):  # pad up to the profile's minimum with [PAD]=0, mask 0
                tensor = torch.nn.functional.pad(tensor, (0, columns - length, 0, rows - batch))
            bound[name] = tensor.to(self.device, dtype=dtype, non_blocking=True).contiguous()
            self.context.set_input_shape(name, tuple(bound[name].shape))
            self.context.set_tensor_address(name, bound[name].data_ptr())
        output_shape = tuple(self.context.get_tensor_shape(self.spec.output_name))
        logits = torch.empty(output_shape, dtype=self.output_dtype, device=self.device)
        self.context.set_tensor_address(self.spec.output_name, logits.data_ptr())
        if not self.context.execute_async_v3(self._stream_handle()):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return logits[:batch].float().cpu().numpy()  # .cpu() waits for the stream; `bound` lives until then

    def _close_impl(self) -> None:
        self.context = None
        self.engine = None

    def describe(self):
        return {
            "backend": self.name,
            "profile_max": [self.max_batch_size, self.max_sequence_length],
            "input_dtypes": {k: str(v) for k, v in self.input_dtypes.items()},
        }

    # The four device hooks below are the only CUDA-specific calls; tests that use a recording
    # stand-in for tensorrt override them to run the binding logic on the CPU.
    def _cuda_available(self) -> bool:
        return torch.cuda.is_available()

    def _select_device(self, gpu_id: int) -> torch.device:
        torch.cuda.set_device(gpu_id)  # before deserializing: the engine lives on this worker's GPU
        return torch.device("cuda", gpu_id)

    def _compute_capability(self, gpu_id: int) -> tuple[int, int]:
        return torch.cuda.get_device_capability(gpu_id)

    def _stream_handle(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream
