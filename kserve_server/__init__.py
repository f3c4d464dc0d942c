"""The KServe front door: the bert_trt classifier behind KServe's model server (v1 + Open Inference Protocol v2).

`python -m kserve_server --mar model_store/bert_trt.mar` (or `make kserve`). See kserve_server/model.py.
"""
