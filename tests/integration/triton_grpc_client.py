"""Run as a script: one OIP gRPC call with tritonclient (a client nobody in this project wrote), JSON in, JSON out.

A subprocess, because tritonclient and KServe compile the same `inference.*` protobuf messages: one
process cannot import both, and the test process imports KServe elsewhere.

stdin:  {"address": "host:port", "model": "...", "texts": [...], "more_inputs": {"text_pair": [...]}, "parameters": {...},
         "call": "infer"|"ready"|"metadata"}  (more_inputs: further BYTES inputs, optional)
stdout: {"outputs": {name: {"data": [...], "shape": [...], "parameters": {...}}}, "parameters": {...}}
        or {"error": {"status": "StatusCode.INVALID_ARGUMENT", "message": "..."}}
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def parameter_value(parameter):
    return getattr(parameter, parameter.WhichOneof("parameter_choice"))


def call(request: dict) -> dict:
    client = grpcclient.InferenceServerClient(request["address"])
    try:
        if request.get("call") == "ready":
            return {"server_ready": client.is_server_ready(), "model_ready": client.is_model_ready(request["model"])}
        if request.get("call") == "metadata":
            metadata = client.get_model_metadata(request["model"], as_json=True)
            return {"inputs": metadata["inputs"], "outputs": [output["name"] for output in metadata["outputs"]]}
        inputs = []
        for name, values in {"text": request["texts"], **(request.get("more_inputs") or {})}.items():
            tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array([value.encode() for value in values], dtype=object))
            inputs.append(tensor)
        result = client.infer(request["model"], inputs, parameters=request.get("parameters") or None)
        response = result.get_response()
        outputs = {}
        for output in response.outputs:
            array = result.as_numpy(output.name)
            data = [value.decode() if isinstance(value, bytes) else value for value in array.reshape(-1).tolist()]
            outputs[output.name] = {"data": data, "shape": list(array.shape), "parameters": {k: parameter_value(v) for k, v in output.parameters.items()}}
        return {"outputs": outputs, "parameters": {k: parameter_value(v) for k, v in response.parameters.items()}}
    except InferenceServerException as error:
        return {"error": {"status": error.status(), "message": error.message()}}
    finally:
        client.close()


def main() -> None:
    json.dump(call(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
    main()
