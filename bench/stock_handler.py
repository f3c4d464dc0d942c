"""Baseline for the benchmarks: what TorchServe's Hugging Face text-classification example does.

One tokenizer call per request, padded to a fixed max_length of 150, the tensors joined with
torch.cat, eager fp32 PyTorch with torch's default threads, the argmax label per request.
(`encode_plus` is gone in transformers 5, so the per-request call is `tokenizer(...)`.)
Packed by `build_mar.py --handler bench/stock_handler.py --model-name bert_stock`.
"""

import os

import torch

from handler import layout  # packed in every archive by build_mar.py; importing it also sets the offline environment

MAX_LENGTH = 150


class StockStyleHandler:
    """Per-request tokenization, pad to max_length, torch.cat, eager fp32."""

    def initialize(self, context):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = os.path.join(context.system_properties["model_dir"], layout.CHECKPOINT_DIR)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
        self.labels = self.model.config.id2label
        self.max_length = min(MAX_LENGTH, self.model.config.max_position_embeddings)  # tiny test models have fewer positions
        self.initialized = True

    def preprocess(self, requests):
        input_ids, attention_masks = [], []
        for request in requests:
            text = request.get("data") or request.get("body")
            if isinstance(text, (bytes, bytearray)):
                text = text.decode("utf-8")
            encoded = self.tokenizer(text, max_length=self.max_length, padding="max_length", truncation=True, return_tensors="pt")
            input_ids.append(encoded["input_ids"])
            attention_masks.append(encoded["attention_mask"])
        return torch.cat(input_ids), torch.cat(attention_masks)

    def handle(self, data, context):
        input_ids, attention_mask = self.preprocess(data)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return [self.labels[int(i)] for i in logits.argmax(-1)]
