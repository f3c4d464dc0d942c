"""Test-only handler entry: bert_trt's handler, except that a request whose text is ``sleep N`` makes
its batch take N more seconds (to exceed responseTimeout, or to hold the worker while the queue fills)."""

import re
import time

from handler.bert_trt_handler import BertTrtHandler

SLEEP = re.compile(rb"^sleep (\d+(?:\.\d+)?)$")


class SlowOnRequestHandler(BertTrtHandler):
    """BertTrtHandler that sleeps when asked to."""

    def handle(self, data, context):
        for request in data:
            body = request.get("body") or request.get("data") or b""
            match = SLEEP.match(body if isinstance(body, bytes) else str(body).encode())
            if match:
                time.sleep(float(match.group(1)))
        return super().handle(data, context)
