"""How much memory a run's batches take, and the largest `--batch` a run accepts.

What grows with `--batch` is the pipeline's input ring (erudite_edge.inference.batch_buffer): one model input
per item queued ahead of the model (`queue_depth`), per item of the batch in hand and two spare, rounded up
to whole batches, plus a gather buffer of one batch. Queued items hold their model input only (their decoded
frames are let go once resized, unless an output draws on them), so at 224 x 224 that is 147 KiB per item
for a uint8 model input and 588 KiB for float32: about 4 x batch of them. Two bounds apply:

- the memory budget (`--max-memory`, RunOptions.max_memory; default a quarter of the memory the kernel calls
  available when the classifier loads): a batch whose ring would not fit stops the run before the model loads,
  with one line naming the largest batch that fits (exit 2). Stopping, not shrinking: a batch that cannot
  fit is a deployment's mistake to fix once, and a service that silently ran other batches than the ones it
  was measured with would hide it. The budget covers the buffers that grow with the batch; the model's own
  memory (weights, activations, TensorRT's device memory) and the frames being decoded (at most one per
  decode worker, each at most --max-pixels) are not in it.
- the model's batch profile (the TensorRT engine's or ONNX Runtime TensorRT EP's largest batch;
  Runner.max_batch): a larger batch was split into calls of that size anyway, so it is lowered to it with one
  warning. Lowering, not stopping: results are the same, and a static-batch engine (a DLA build) must not stop
  a service started with the default --batch 8.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import UsageError
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.run_options import RunOptions

BUDGET_SHARE = 4  # the default budget: 1/4 of the available memory
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def decode_workers(workers: int | None) -> int:
    """The decode/preprocess threads of a run: as asked, else up to 4."""
    return workers or min(4, os.cpu_count() or 1)


def queue_depth(batch: int, workers: int) -> int:
    """How many items the pipeline prepares ahead of the batch in hand."""
    return max(2 * batch, 2 * workers)


def pipeline_bytes(spec: PreprocessSpec, batch: int, workers: int | None = None) -> int:
    """Bytes of the input ring and gather buffer a pipeline of this batch allocates (InputRing)."""
    slots = InputRing.slots_for(batch, queue_depth(batch, decode_workers(workers)))
    return (slots + batch) * spec.bytes_per_image


def available_memory() -> int | None:
    """The memory the kernel says a new allocation can take without swapping (MemAvailable), in bytes;
    None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(max_memory: int | None) -> tuple[int, str] | None:
    """(bytes, where that figure comes from) of the budget; None where none is set and the available memory
    is not known."""
    if max_memory is not None:
        return max_memory, f"--max-memory {size_text(max_memory)}"
    available = available_memory()
    if available is None:
        return None
    return available // BUDGET_SHARE, (f"the default: a quarter of the {size_text(available)} available; "
                                       "--max-memory sets it")


def check_memory(options: RunOptions, spec: PreprocessSpec) -> None:
    """UsageError (exit 2) where `options.batch` needs more pipeline memory than the budget."""
    budget = memory_budget(options.max_memory)
    if budget is None:
        return
    limit, why = budget
    need = pipeline_bytes(spec, options.batch, options.workers)
    if need <= limit:
        return
    fits = largest_batch(spec, options.workers, limit, options.batch)
    per = size_text(spec.bytes_per_image)
    hint = (f"the largest batch within it is {fits}: lower --batch" if fits else
            "not even --batch 1 fits: raise --max-memory")
    raise UsageError(f"--batch {options.batch}: the pipeline's input buffers would take {size_text(need)} "
                     f"({need // spec.bytes_per_image} model inputs of {per}: the batch in hand, the items queued "
                     f"ahead of it, a gather buffer), over the memory budget of {size_text(limit)} ({why}); {hint}")


def largest_batch(spec: PreprocessSpec, workers: int | None, limit: int, below: int) -> int:
    """The largest batch under `below` whose pipeline fits `limit` bytes (0: none)."""
    lo, hi = 0, below - 1  # pipeline_bytes grows with the batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pipeline_bytes(spec, mid, workers) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def model_max_batch(model: Any) -> int | None:
    """The largest batch the model takes in one call (its batch profile), None: unbounded."""
    n = getattr(model, "max_batch", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def fit_to_model(options: RunOptions, model: Any, warn: Callable[[str], None]) -> RunOptions:
    """`options` with the batch lowered to the model's largest (one warning), or as they are."""
    most = model_max_batch(model)
    if most is None or options.batch <= most:
        return options
    backend = f"{getattr(model, 'backend', '?')} {getattr(model, 'precision', '')}".strip()
    warn(f"--batch {options.batch}: the {backend} model takes at most {most} images per call (its batch "
         f"profile); running batches of {most}")
    return options.replace(batch=most)


def parse_size(text: str) -> int:
    """`--max-memory`: bytes, or a number with K, M, G or T (powers of 1024; KB, KiB, ... also read)."""
    m = _SIZE.fullmatch(str(text))
    value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0.0
    if value < 1:
        raise UsageError(f"--max-memory {text}: give a size such as 512M, 2G or 1.5G (K, M, G, T: powers of 1024)")
    return int(value)


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


__all__ = ["available_memory", "check_memory", "decode_workers", "fit_to_model", "largest_batch", "memory_budget",
           "model_max_batch", "parse_size", "pipeline_bytes", "queue_depth", "size_text"]
