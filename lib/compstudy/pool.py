"""Worker processes that run a chapter's independent units side by side, one thread each.

On the 2-core machine two one-thread processes get more out of the CPU than one process on two
threads: PyTorch's small convolutions, ViT blocks and openTSNE's gradient steps scale poorly
across threads. Measured: training steps of chapter 2's CNNs 1.25-1.66x; chapter 3's
cache-filling phase about 1.17x (930 s against about 1,080 s). A unit's numbers do not depend
on how many workers run, because every worker computes on ``THREADS`` intra-op threads; the
chapters that cache models put ``THREADS`` in their cache keys.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch

from . import train

THREADS = 1
"""Intra-op threads of every worker."""
_STATE: Any = None  # in a worker process: what ``start`` returned


def _start(start: Callable, start_args: tuple) -> None:
    global _STATE
    _STATE = start(*start_args)


def _call(work: Callable, item: Any) -> Any:
    return work(_STATE, item)


def results(work: Callable[[Any], Any], items: Sequence, *, start: Callable, start_args: tuple,
            workers: int, cost: Callable[[Any], float], desc: str, progress: bool = True,
            provides: Callable[[Any], Hashable | None] = lambda item: None,
            needs: Callable[[Any], Hashable | None] = lambda item: None) -> Iterator[tuple[Any, Any]]:
    """``(item, work(state, item))`` for every item, yielded as each finishes, from ``workers``
    spawned processes whose ``state`` is what ``start(*start_args)`` returned there, once per
    process; with ``workers=0``, one after the other in this process, on ``THREADS`` threads
    too (no start-up: a spawned worker spends about 12 s importing torch and timm, which
    dominates runs of a few seconds, such as the smoke profile).

    ``work`` and ``start`` must be module-level functions (spawn pickles them by name). An item
    whose ``needs`` key is the ``provides`` key of another item waits until that item is done
    (chapter 2: a pruned model waits for its large model, which the worker caches). Among the
    items ready to start, the costliest goes first, so that no long item runs alone at the end.
    Interrupting the caller cancels what has not started.
    """
    if not items:
        return
    provided = {provides(item) for item in items} - {None}
    waiting: dict[Hashable, list] = defaultdict(list)
    ready = []
    for item in items:
        key = needs(item)
        (waiting[key] if key is not None and key in provided else ready).append(item)
    if workers == 0:
        yield from _in_process(work, ready, waiting, start, start_args, cost, provides, desc, progress)
        return
    main = sys.modules["__main__"]
    if not hasattr(main, "__spec__"):  # IPython's reset() leaves one without; spawn reads it
        main.__spec__ = None
    workers = max(1, min(workers, len(items)))
    bar = train.progress_bar(len(items), desc, progress)
    with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                             initializer=_start, initargs=(start, start_args)) as pool:
        running = {}
        try:
            while ready or running:
                ready.sort(key=cost)
                while ready and len(running) < workers:
                    item = ready.pop()
                    running[pool.submit(_call, work, item)] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    yield item, future.result()
                    bar.update()
                    ready += waiting.pop(provides(item), [])
        finally:
            pool.shutdown(cancel_futures=True)
            bar.close()


def _in_process(work, ready, waiting, start, start_args, cost, provides, desc, progress):
    threads = torch.get_num_threads()
    bar = train.progress_bar(len(ready) + sum(map(len, waiting.values())), desc, progress)
    try:
        state = start(*start_args)
        while ready:
            ready.sort(key=cost)
            item = ready.pop()
            yield item, work(state, item)
            bar.update()
            ready += waiting.pop(provides(item), [])
    finally:
        torch.set_num_threads(threads)
        bar.close()
