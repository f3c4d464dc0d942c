"""Test-only handler entry: bert_trt's handler, except that loading first sleeps SLOW_START_S seconds (longer
than the test archive's responseTimeout, shorter than its startupTimeout) and logs that it did."""

import logging
import time

from handler.bert_trt_handler import BertTrtHandler

SLOW_START_S = 6
logger = logging.getLogger(__name__)


class SlowStartHandler(BertTrtHandler):
    """BertTrtHandler whose initialize takes SLOW_START_S seconds longer."""

    def initialize(self, context):
        logger.info("slow start: loading for %s s more", SLOW_START_S)
        time.sleep(SLOW_START_S)
        super().initialize(context)
