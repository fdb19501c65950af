"""Run a function as several torch.distributed ranks (spawned processes, gloo on 127.0.0.1) and collect
what each rank puts on the queue. Shared by the DDP tests.

    results = run_ranks(worker, data, out)   # worker(rank, world, port, data, out, queue)
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(target: Callable[..., None], *args: Any, world: int = 2, timeout: float = 240) -> dict[Any, Any]:
    """Start `world` processes running target(rank, world, port, *args, queue); each puts one (key, value)
    pair on the queue. Returns them as a dict once every process has exited with code 0."""
    # ERUDITE_RANKS_TIMEOUT shortens the wait where a hang is the expected failure (tools/mutation.py's mutants)
    timeout = float(os.environ.get("ERUDITE_RANKS_TIMEOUT", timeout))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, q)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = dict(q.get(timeout=timeout) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:  # a rank stuck in a collective must not outlive the test
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return results
