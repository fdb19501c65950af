"""How the head's BatchNorm layers normalise during stage II's meta passes (`--meta-bn`, issue 27 item 4).

Stage II runs the head (everything after the backbone: attention, projections m_n, gate, classifiers) on the
meta-train rows and then on the meta-test rows alone -- one data set, `batch_per_dataset` rows (per rank under
DDP) -- a regime stage I (every data set in one batch) and inference (running statistics) never see. The paper
says nothing about it. The modes:

- ``train`` (the default, this project's behaviour before the option existed): the head's BatchNorm layers in
  training mode, each pass normalised with its own rows' batch statistics (the meta-test pass: one data set's),
  the gradient flowing through those statistics.
- ``eval``: the head's BatchNorm layers in evaluation mode: every row normalised with the running statistics,
  as at inference; no gradient through statistics.
- ``frozen``: every row normalised with the statistics of the WHOLE stage II batch (every data set, as stage I
  normalises), computed once with theta before the inner step and held fixed (no gradient through them) for the
  meta-train and meta-test passes. Under DDP they are averaged over the ranks (mean and mean square), so they
  are the statistics of the global batch.

In every mode stage II leaves the running statistics as they were (train.two_stage.frozen_bn_stats around it):
they stay the averages of stage I's batches, which is what evaluation and export use. The backbone's BatchNorm
(stage II's "fresh" features) is not affected by this option.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

META_BN = ("train", "eval", "frozen")

_BN = nn.modules.batchnorm._BatchNorm


def head_norms(net: nn.Module) -> list[_BN]:
    """The BatchNorm layers outside the backbone (the head's)."""
    backbone = getattr(net, "backbone", None)
    inside = {id(m) for m in backbone.modules()} if isinstance(backbone, nn.Module) else set()
    return [m for m in net.modules() if isinstance(m, _BN) and id(m) not in inside]


def _batch_moments(x: torch.Tensor) -> list[torch.Tensor]:
    """Per channel (dim 1): mean and mean square over every other dimension, as BatchNorm reduces."""
    dims = [d for d in range(x.dim()) if d != 1]
    x = x.detach().float()
    return [x.mean(dims), x.pow(2).mean(dims)]


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def install_whole_batch_statistics(norms: list[_BN], run_head: Callable[[], object]) -> None:
    """Run the head once (without a graph) with `norms` in eval mode, each layer's running statistics set, just before
    it runs, to the (mean, biased variance) of its input over the batch -- averaged over the ranks under DDP -- so each
    layer normalises as training mode does over the whole (global) batch and the next layer's input, hence its
    statistics, follow from that. The statistics stay in place; the caller restores the buffers."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        mean, square = _mean_over_ranks(torch.stack(_batch_moments(inputs[0])))
        module.running_mean = mean.to(module.running_mean.dtype)  # type: ignore[union-attr]
        module.running_var = (square - mean.pow(2)).clamp_min(0).to(module.running_var.dtype)  # type: ignore[union-attr]

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    try:
        with torch.no_grad():
            run_head()
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def meta_bn(net: nn.Module, mode: str, run_head: Callable[[], object] | None = None) -> Iterator[None]:
    """The head's BatchNorm regime for stage II's passes (see the module docstring). `run_head`: the head on the
    whole stage II batch with theta (needed by ``frozen``). Every layer's mode and buffers are put back after."""
    if mode not in META_BN:
        raise ValueError(f"meta_bn {mode!r}: one of {', '.join(META_BN)}")
    if mode == "train":
        yield
        return
    norms = head_norms(net)
    if mode == "frozen" and run_head is None:
        raise ValueError("meta_bn 'frozen' needs the head's pass over the whole batch (run_head)")
    saved = [(m, m.training, m.running_mean, m.running_var) for m in norms]
    try:
        for m in norms:
            m.eval()
        if mode == "frozen":  # normalised by the whole batch's statistics in place of the running ones
            install_whole_batch_statistics(norms, run_head)  # type: ignore[arg-type]
        yield
    finally:
        for m, training, mean, var in saved:
            m.train(training)
            m.running_mean, m.running_var = mean, var
