"""Shared fixtures. The two reference models train once per test session (in parallel, one
process per core, in the background from the first test on: the files that need them run last)
and every test file reuses them. Set MEMAUDIT_TEST_CACHE to a directory to keep
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


REFERENCE_NAMES = ["memorizing", "generalizing"]
# Tests that use these run after the reference models are trained ("reference_training_done":
# tests that start many processes of their own, Ray, which should not compete with the training).
MODEL_FIXTURES = {"reference_checkpoints", "memorizing_checkpoint", "generalizing_checkpoint"}
REFERENCE_FIXTURES = MODEL_FIXTURES | {"reference_training_done"}


def _needs_reference_models(item, fixtures=REFERENCE_FIXTURES) -> bool:
    return not fixtures.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(session, config, items):
    """Test files that use the reference models run after the others (each file's tests stay
    together and in order), so that the models train in the background while the others run
    (see `_reference_training`). With MEMAUDIT_TESTS_NO_MODELS=1 the tests that need the
    reference models are deselected (benchmarks/mutation.py runs only tests that need none)."""
    if os.environ.get("MEMAUDIT_TESTS_NO_MODELS") == "1":
        keep = [item for item in items if not _needs_reference_models(item)]
        config.hook.pytest_deselected(items=[item for item in items if _needs_reference_models(item)])
        items[:] = keep
    needing = {item.module.__name__ for item in items if _needs_reference_models(item) and item.module}
    items.sort(key=lambda item: item.module.__name__ in needing if item.module else False)


@pytest.fixture(scope="session")
def reference_root(tmp_path_factory) -> Path:
    cached = os.environ.get("MEMAUDIT_TEST_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("reference-models")


class _BackgroundTraining:
    """The training processes of ensure_reference_models (one spawned single-threaded process per
    missing model, memaudit.reference._train_single_threaded), started here without waiting for
    them: the tests that do not need the models run meanwhile. The models are exactly those
    ensure_reference_models trains itself (same settings, same kind of process, same thread count).
    The processes are started in this thread before any test runs, so they inherit the session's
    environment, not a test's (sys.path, environment variables)."""

    def __init__(self, root: Path):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from memaudit.reference import _train_single_threaded, is_cached

        root = Path(root).absolute()
        missing = [n for n in REFERENCE_NAMES if not is_cached(n, root)]
        self.pool, self.futures = None, {}
        if missing:
            workers = min(len(missing), os.cpu_count() or 1)
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
            self.futures = {n: self.pool.submit(_train_single_threaded, n, root, {}) for n in missing}

    def wait(self) -> None:
        try:
            for future in self.futures.values():
                future.result()
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


@pytest.fixture(scope="session", autouse=True)
def _reference_training(request):
    """Starts training the reference models at the first test when any collected test needs them."""
    if not any(_needs_reference_models(item, MODEL_FIXTURES) for item in request.session.items):
        yield None
        return
    training = _BackgroundTraining(request.getfixturevalue("reference_root"))
    yield training
    training.close()            # never leave the training processes behind


@pytest.fixture(scope="session")
def reference_training_done(_reference_training) -> None:
    """Waits until the background training of the reference models (if any) has finished."""
    if _reference_training is not None:
        _reference_training.wait()


@pytest.fixture(scope="session")
def reference_checkpoints(reference_root, _reference_training) -> dict:
    from memaudit.reference import ensure_reference_models

    if _reference_training is not None:
        _reference_training.wait()
    return ensure_reference_models(REFERENCE_NAMES, root=reference_root)


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
