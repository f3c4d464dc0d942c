"""The KServe door's scheduling on the GPU: the micro-batcher with 2 and 4 batches in flight over one
torch_cuda service (CUDA graphs, the default) answers every request as the same request alone does
(batch invariance, |dp| <= 2e-3 in float16), and every batch as the same batch run one after the other."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handler import layout  # noqa: E402
from handler.payload import ParsedRequest  # noqa: E402
from handler.service import load_service  # noqa: E402
from handler.settings import HandlerSettings  # noqa: E402
from handler.spec import ModelSpec  # noqa: E402
from harness.models import LABELS, random_family_checkpoint  # noqa: E402
from kserve_server.batcher import MicroBatcher  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu_service(tmp_path_factory):
    """The service over torch_cuda (server defaults: float16, fused BERT, CUDA graphs) on a seeded random BERT."""
    model_dir = tmp_path_factory.mktemp("door_gpu")
    random_family_checkpoint("bert", model_dir / layout.CHECKPOINT_DIR)
    ModelSpec(id2label=dict(enumerate(LABELS)), max_length=64).save(model_dir)
    service, _ = load_service(model_dir, HandlerSettings(backend="torch_cuda", response_cache_size=0), gpu_id=0)  # every answer computed
    assert service.backend_name == "torch_cuda" and service.classifier.backend.use_graphs
    yield service
    service.close()


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join("".join(rng.choices("abcdefghij", k=rng.randint(1, 6))) for _ in range(rng.randint(1, 14))) for _ in range(count)]


def probabilities(service, requests: list[ParsedRequest]) -> np.ndarray:
    return np.array([prediction.probabilities for answered in service.run(requests) for prediction in answered.predictions])


@pytest.mark.parametrize("threads", [2, 4])
def test_batches_in_flight_get_the_answers_they_get_one_at_a_time(gpu_service, threads):
    batches = [[ParsedRequest([text], wants_list=False) for text in random_texts(random.Random(i).randint(1, 40), i)] for i in range(120)]
    sequential = [probabilities(gpu_service, batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        concurrent = list(pool.map(lambda batch: probabilities(gpu_service, batch), batches))
    wrong = [i for i, (a, b) in enumerate(zip(sequential, concurrent)) if np.abs(a - b).max() > 2e-3]
    assert wrong == [], f"{len(wrong)} of {len(batches)} batches differ with {threads} in flight"


@pytest.mark.parametrize("max_in_flight", [2, 4])
def test_the_micro_batcher_answers_each_request_as_it_is_answered_alone(gpu_service, max_in_flight):
    texts = random_texts(400, 99)
    alone = {text: probabilities(gpu_service, [ParsedRequest([text], wants_list=False)])[0] for text in texts}

    async def scenario():
        batcher = MicroBatcher(gpu_service.run, max_batch_texts=64, max_in_flight=max_in_flight, weight=lambda request: len(request.texts))
        results = await asyncio.gather(*(batcher.submit([ParsedRequest([text], wants_list=False)]) for text in texts))
        await batcher.close()
        return [result[0].predictions[0].probabilities for result in results]

    answers = asyncio.run(scenario())
    worst = max(float(np.abs(answer - alone[text]).max()) for text, answer in zip(texts, answers))
    assert worst <= 2e-3, f"max |dp| {worst:.2e} between a request in a batch and alone"
