"""Inference backends: one interface (`base.Backend`), four implementations, chosen once at start.

`registry` lists them (name, class, options, needs a GPU, concurrency contract); `selection.choose_backend`
loads the first that runs here. Each backend class lives in the module named after it
(`handler.backends.onnxruntime.OnnxRuntimeBackend`, ...). This package imports nothing on its own,
so importing any part of it needs neither torch nor `tensorrt` nor `onnxruntime`.
"""
