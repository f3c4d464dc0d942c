"""bert_trt's handler package: it ships inside the .mar and imports nothing else of the repository.

Importing it sets the offline defaults every part of the project relies on (the one place they
are set): the Hugging Face hub is never contacted, and the fast tokenizer does not fork threads
inside TorchServe's worker. Values already in the environment win.
"""

import os

OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
