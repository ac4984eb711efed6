"""Shared fixtures. The two reference models train once per test session (in parallel, one
process per core) and every test file reuses them. Set MEMAUDIT_TEST_CACHE to a directory to keep
them between sessions while developing."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("MEMAUDIT_NO_PROGRESS", "1")
# Nothing in the tests may use the network: hub names (tokenizers named by a checkpoint's config,
# hub ids) resolve from the local cache only. Set before huggingface_hub is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread for torch, here and in every subprocess a test starts (python -m memaudit,
# Ray workers), set before torch is first imported. The test models are tiny: a second thread buys
# little on an idle 2-core box, and on a shared CI box (or beside the session's own worker
# processes) OpenMP threads that wait for a busy core make a scan of a tiny network take ~9 s
# instead of ~0.3 s (measured). Thread count is no part of what any test checks.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def reference_root(tmp_path_factory) -> Path:
    cached = os.environ.get("MEMAUDIT_TEST_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("reference-models")


@pytest.fixture(scope="session")
def reference_checkpoints(reference_root) -> dict:
    from memaudit.reference import ensure_reference_models

    return ensure_reference_models(["memorizing", "generalizing"], root=reference_root)


@pytest.fixture(scope="session")
def memorizing_checkpoint(reference_checkpoints) -> Path:
    return reference_checkpoints["memorizing"]


@pytest.fixture(scope="session")
def generalizing_checkpoint(reference_checkpoints) -> Path:
    return reference_checkpoints["generalizing"]


@pytest.fixture()
def single_thread():
    """Nano models run faster on one thread (and a shared CI core makes two threads crawl)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
