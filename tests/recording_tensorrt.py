"""A recording stand-in for the `tensorrt` module — NOT TensorRT.

It implements just the named-tensor runtime calls our backend makes (deserialize, I/O
introspection, set_input_shape / set_tensor_address / execute_async_v3) so that tests can
check *our* logic: dtype handling, shape and profile checks, buffer binding, batch splitting
and fallback decisions. Its "engine" is a JSON description, and "execution" reads the bound
input buffers through their addresses and writes logits computed from them:
    logits[row] = [sum(input_ids * mask), sum(mask), sum(token_type_ids)]
which shows that each buffer reached the right name with the right dtype and shape.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
import types

import numpy as np

VERSION = "10.99.0+recording-stand-in"
_NP = {"INT32": np.int32, "INT64": np.int64, "FLOAT": np.float32, "HALF": np.float16}


class _Enum:
    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def __str__(self):
        return f"{self.kind}.{self.name}"

    def __eq__(self, other):
        return str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


def engine_bytes(input_dtype="INT32", profile=((1, 1), (8, 32), (16, 64)), num_labels=3, output_dtype="FLOAT") -> bytes:
    """The stand-in's serialized "engine": a JSON description of I/O and the one profile."""
    return json.dumps({"input_dtype": input_dtype, "profile": profile, "num_labels": num_labels, "output_dtype": output_dtype}).encode()


class RecordingContext:
    """One execution context; `threads` holds, per call in `calls`, the thread that made it, and
    `execute_delay_s` widens the window in which a second thread could interleave its calls."""

    def __init__(self, engine):
        self.engine = engine
        self.shapes, self.addresses, self.calls, self.threads = {}, {}, [], []
        self.execute_delay_s = 0.0

    def record(self, *call):
        self.calls.append(call)
        self.threads.append(threading.get_ident())

    def set_input_shape(self, name, shape):
        (lo, _, hi) = self.engine.profile
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise AssertionError(f"{name} shape {shape} outside the profile {lo}..{hi}")
        self.record("set_input_shape", name, tuple(shape))
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.record("set_tensor_address", name)
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name):
        batch = self.shapes["input_ids"][0]
        return (batch, self.engine.num_labels)

    def _read(self, name):
        dtype = _NP[self.engine.input_dtype]
        count = int(np.prod(self.shapes[name]))
        buffer = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.addresses[name])
        return np.frombuffer(buffer, dtype=dtype).reshape(self.shapes[name]).astype(np.int64)

    def execute_async_v3(self, stream_handle):
        self.record("execute_async_v3", stream_handle)
        time.sleep(self.execute_delay_s)
        ids, mask, types_ = (self._read(n) for n in ("input_ids", "attention_mask", "token_type_ids"))
        logits = np.stack([(ids * mask).sum(1), mask.sum(1), types_.sum(1)], axis=1).astype(_NP[self.engine.output_dtype])
        ctypes.memmove(self.addresses["logits"], logits.ctypes.data, logits.nbytes)
        return True


class RecordingEngine:
    def __init__(self, description):
        self.input_dtype = description["input_dtype"]
        self.output_dtype = description["output_dtype"]
        self.profile = [tuple(shape) for shape in description["profile"]]
        self.num_labels = description["num_labels"]
        self.names = ["input_ids", "attention_mask", "token_type_ids", "logits"]
        self.num_io_tensors = len(self.names)
        self.contexts = []

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return _Enum("TensorIOMode", "OUTPUT" if name == "logits" else "INPUT")

    def get_tensor_dtype(self, name):
        return _Enum("DataType", self.output_dtype if name == "logits" else self.input_dtype)

    def get_tensor_profile_shape(self, name, profile_index):
        assert profile_index == 0
        return self.profile

    def create_execution_context(self):
        self.contexts.append(RecordingContext(self))
        return self.contexts[-1]


def make_module() -> types.ModuleType:
    """A module object to put in sys.modules["tensorrt"] for the duration of a test."""
    module = types.ModuleType("tensorrt")
    module.__version__ = VERSION

    class Logger:
        WARNING = 2

        def __init__(self, level=None):
            self.level = level

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            return RecordingEngine(json.loads(bytes(data)))

    module.Logger = Logger
    module.Runtime = Runtime
    module.TensorIOMode = types.SimpleNamespace(INPUT=_Enum("TensorIOMode", "INPUT"), OUTPUT=_Enum("TensorIOMode", "OUTPUT"))
    return module
