"""The two-stage optimisation of paper section 4.4, one balanced batch at a time.

Stage I: every parameter except the attention parameters theta takes a step on Loss_all.
Stage II (variant "ours"): one data set of the batch, picked at random, is meta-test, the rest
meta-train; theta' = theta - alpha * grad_theta Loss_all(theta; meta-train) with the graph kept
(second order); L_meta = Loss_all(theta; meta-train) + Loss_all(theta'; meta-test); theta steps.
Variant "ours-pcgrad" replaces the meta step by PCGrad over the per-data-set losses.

alpha ("--meta-alpha"): by default theta's current learning rate, read from theta's optimiser at every
step, so it anneals with theta's cosine schedule (the paper: "alpha is the learning rate"; the released
code anneals it too); a number holds it constant.

Stage II's backbone features ("--meta-features"): by default ("fresh") the backbone runs again, without
a graph, on the batch after stage I stepped it, so L_meta is evaluated with the current network as the
paper's stage II is (theta sits on top of the backbone and the backbone takes no step in stage II, so no
gradient through it is needed). "reuse" takes the features stage I computed before its step: cheaper
by one backbone forward, but a step behind. Either way BatchNorm running statistics are left untouched.
How the head's BatchNorm normalises the meta passes ("--meta-bn": train | eval | frozen) is train.meta_bn's.
Under DDP, stage II runs on the unwrapped module and all-reduces theta's gradients by hand (DDP
cannot take a double backward); every rank draws the same meta-test data set. The inner gradient
(meta-train) is all-reduced inside the graph (a differentiable all-reduce), so theta' is the one a
single process holding every rank's rows would compute, and the averaged meta gradient equals the
single-process one wherever BatchNorm does not couple the rows (see `meta_objective`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol  # the differentiable collectives (torch.distributed.nn is deprecated)
import torch.nn.functional as F
from torch import nn

from train.losses import loss_all, pmg_losses
from train.meta_bn import META_BN, meta_bn
from train.model import EruditeNet, ZooModel
from train.model_spec import HeadOutput


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run BatchNorm layers on batch statistics as in training, then put their running statistics back."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    if not _distributed():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision where a dtype is set (CUDA runs), else nothing."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def backward_and_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


@contextlib.contextmanager
def own_rows_bn(module: nn.Module, group: object | None) -> Iterator[None]:
    """Point every SyncBatchNorm at a one-process group for a while: it then normalises over this rank's
    rows with plain batch_norm, which (unlike SyncBatchNorm's backward) can be differentiated twice."""
    if group is None:
        yield
        return
    syncs = [m for m in module.modules() if isinstance(m, nn.SyncBatchNorm)]
    saved = [m.process_group for m in syncs]
    for m in syncs:
        m.process_group = group
    try:
        yield
    finally:
        for m, g in zip(syncs, saved):
            m.process_group = g


def _rows(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero(as_tuple=True)[0]


def meta_objective(
    net: EruditeNet,
    feats: torch.Tensor,
    ids: torch.Tensor,
    joint: torch.Tensor,
    local: torch.Tensor,
    test_dataset: int,
    alpha: float,
    theta: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_meta (Eq. 10) as a differentiable function of theta; returns (L_meta, L_train, L_test).

    Under DDP (every rank calls it with the same test_dataset) the inner gradient is averaged over the
    ranks inside the graph; averaging the returned L_meta's gradient over the ranks then gives the
    gradient of the single-process L_meta over all rows, up to float error, as long as BatchNorm runs
    on fixed statistics (eval) -- in training mode each rank's BatchNorm sees only its own rows here."""
    if theta is None:
        theta = (net.attention.conv.weight, net.attention.conv.bias)  # type: ignore[union-attr]
    tr = _rows(ids != test_dataset)
    te = _rows(ids == test_dataset)

    def loss_on(rows: torch.Tensor, th: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out: HeadOutput = net.head(feats[rows], ids[rows], theta=th)
        return loss_all(out, joint[rows], local[rows])

    l_train = loss_on(tr, theta)
    grads = torch.autograd.grad(l_train, theta, create_graph=True)
    if _distributed():  # the inner step uses the gradient over every rank's meta-train rows (differentiably)
        world = dist.get_world_size()
        grads = tuple(funcol.all_reduce(g, "sum", dist.group.WORLD) / world for g in grads)
    adapted = (theta[0] - alpha * grads[0], theta[1] - alpha * grads[1])
    l_test = loss_on(te, adapted)
    return l_train + l_test, l_train, l_test


def pcgrad(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad (Yu et al. 2020): grads is (T, P), one flattened gradient per task. For each g_i, against
    the other tasks in random order, if g_i . g_j < 0 project g_i onto g_j's normal plane. Returns the
    sum of the projected gradients."""
    projected = grads.clone()
    t = grads.shape[0]
    for i in range(t):
        order = torch.randperm(t, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
    return projected.sum(0)


META_FEATURES = ("fresh", "reuse")


def meta_gradient(
    net: EruditeNet,
    feats: torch.Tensor,
    ids: torch.Tensor,
    joint: torch.Tensor,
    local: torch.Tensor,
    test_dataset: int,
    alpha: float,
    bn_mode: str = "train",
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """theta's gradient of L_meta (not yet averaged over DDP ranks) with the head's BatchNorm in `bn_mode`
    (train.meta_bn), and L_meta. Running statistics are the caller's to keep (frozen_bn_stats)."""
    theta = net.attention_parameters()
    with meta_bn(net, bn_mode, lambda: net.head(feats, ids)):
        l_meta, _, _ = meta_objective(net, feats, ids, joint, local, test_dataset, alpha)
        return list(torch.autograd.grad(l_meta, theta)), l_meta.detach()


@dataclass
class StepStats:
    loss: float
    correct: int
    count: int
    meta_loss: float | None = None


class TwoStageStep:
    """One optimisation step of an EruditeNet variant (DDP-wrapped or not)."""

    def __init__(
        self,
        model: nn.Module,
        main_opt: torch.optim.Optimizer,
        theta_opt: torch.optim.Optimizer | None,
        alpha: float | None = None,
        *,
        meta_features: str = "fresh",
        meta_bn: str = "train",
        amp_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
        seed: int = 0,
        local_bn_group: object | None = None,
        distill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        """alpha: the meta inner step size, or None to follow theta's scheduled learning rate.
        meta_features: "fresh" (stage II runs the stepped backbone again) or "reuse" (stage I's features).
        meta_bn: the head's BatchNorm in stage II's passes: "train", "eval" or "frozen" (train.meta_bn).
        distill: (images, joint logits) -> a loss added to stage I's Loss_all (train.distill.Distillation)."""
        self.model = model
        self.distill = distill
        # With SyncBatchNorm: a process group holding only this rank, used in stage II (see own_rows_bn)
        self.local_bn_group = local_bn_group
        self.net: EruditeNet = getattr(model, "module", model)
        self.main_opt, self.theta_opt = main_opt, theta_opt
        if meta_features not in META_FEATURES:
            raise ValueError(f"meta_features {meta_features!r}: one of {', '.join(META_FEATURES)}")
        if meta_bn not in META_BN:
            raise ValueError(f"meta_bn {meta_bn!r}: one of {', '.join(META_BN)}")
        self.alpha, self.meta_features, self.meta_bn = alpha, meta_features, meta_bn
        self.amp_dtype, self.scaler = amp_dtype, scaler
        self.mode = self.net.variant.theta_training
        # Same seed on every rank: every rank draws the same meta-test data set.
        self.generator = torch.Generator().manual_seed(seed)
        if self.mode in ("meta", "pcgrad") and theta_opt is None:
            raise ValueError(f"variant {self.net.variant.name} needs a theta optimiser")

    @property
    def current_alpha(self) -> float:
        """alpha for the next meta step: the constant, or theta's learning rate now (as its scheduler set it)."""
        if self.alpha is not None:
            return self.alpha
        if self.theta_opt is None:
            raise ValueError("alpha follows theta's learning rate, but this variant has no theta optimiser")
        return float(self.theta_opt.param_groups[0]["lr"])

    def meta_features_for(self, images: torch.Tensor, stage_one_features: torch.Tensor) -> torch.Tensor:
        """The backbone features stage II evaluates L_meta on (see the module docstring), detached."""
        if self.meta_features == "reuse" or self.mode not in ("meta", "pcgrad"):
            return stage_one_features.detach()
        with torch.no_grad(), frozen_bn_stats(self.net), own_rows_bn(self.net, self.local_bn_group):
            with autocast(images.device, self.amp_dtype):
                return self.net.meta_input(images)

    def stage_one(self, images: torch.Tensor, ids: torch.Tensor, joint: torch.Tensor, local: torch.Tensor) -> tuple[HeadOutput, torch.Tensor]:
        self.main_opt.zero_grad(set_to_none=True)
        if self.theta_opt is not None:  # stage II's gradient on theta must not mix into stage I's backward (DDP)
            self.theta_opt.zero_grad(set_to_none=True)
        with autocast(images.device, self.amp_dtype):
            out: HeadOutput = self.model(images, ids)
            loss = loss_all(out, joint, local)
            if self.distill is not None:
                loss = loss + self.distill(images, out.logits)
        backward_and_step(loss, self.main_opt, self.scaler)
        return out, loss.detach()

    def stage_two(self, feats: torch.Tensor, ids: torch.Tensor, joint: torch.Tensor, local: torch.Tensor) -> float | None:
        if self.mode not in ("meta", "pcgrad"):
            return None
        theta = self.net.attention_parameters()
        present = torch.unique(ids).tolist()
        if len(present) < 2:
            return None  # meta-train and meta-test both need data
        feats = feats.detach().float()
        with frozen_bn_stats(self.net), own_rows_bn(self.net, self.local_bn_group):
            if self.mode == "meta":
                test_dataset = present[int(torch.randint(len(present), (1,), generator=self.generator))]
                grads, l_meta = meta_gradient(self.net, feats, ids, joint, local, test_dataset, self.current_alpha, self.meta_bn)
                _all_reduce_mean(grads)
                value = float(l_meta)
            else:
                per_task = []
                with meta_bn(self.net, self.meta_bn, lambda: self.net.head(feats, ids)):
                    for n in present:
                        rows = _rows(ids == n)
                        l_n = loss_all(self.net.head(feats[rows], ids[rows]), joint[rows], local[rows])
                        per_task.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_n, theta)]))
                stacked = torch.stack(per_task)
                _all_reduce_mean([stacked])
                flat = pcgrad(stacked, self.generator)
                grads, offset = [], 0
                for p in theta:
                    grads.append(flat[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()
                value = None
        if not all(torch.isfinite(g).all() for g in grads):
            return None  # fp16 overflow upstream: skip theta's step (same decision on every rank: grads are reduced)
        self.theta_opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        for p, g in zip(theta, grads):
            p.grad = g.detach().to(p.dtype)
        self.theta_opt.step()  # type: ignore[union-attr]
        return value

    def __call__(self, images: torch.Tensor, ids: torch.Tensor, joint: torch.Tensor, local: torch.Tensor) -> StepStats:
        out, loss = self.stage_one(images, ids, joint, local)
        meta = None
        if self.mode in ("meta", "pcgrad"):
            meta = self.stage_two(self.meta_features_for(images, out.features), ids, joint, local)  # type: ignore[arg-type]
        correct = int((out.logits.detach().argmax(1) == joint).sum())
        return StepStats(float(loss), correct, int(joint.numel()), meta)


class ZooStep:
    """One step of the Single zoo: the coarse model on every image with the data-set label, each fine
    model on its own data set's images. Parameters are disjoint, so one summed loss gives each model
    exactly the gradient it would get trained alone."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, *, amp_dtype: torch.dtype | None = None,
                 scaler: torch.amp.GradScaler | None = None):
        self.model, self.opt, self.amp_dtype, self.scaler = model, opt, amp_dtype, scaler
        self.net: ZooModel = getattr(model, "module", model)

    def __call__(self, images: torch.Tensor, ids: torch.Tensor, joint: torch.Tensor, local: torch.Tensor) -> StepStats:
        self.opt.zero_grad(set_to_none=True)
        with autocast(images.device, self.amp_dtype):
            coarse, fine = self.model(images, ids)
            loss = F.cross_entropy(coarse.float(), ids) + sum(
                F.cross_entropy(logits.float(), local[rows]) for _, rows, logits in fine
            )
        backward_and_step(loss, self.opt, self.scaler)
        # Batch accuracy of the two-stage pipeline: right data set and right class.
        with torch.no_grad():
            picked = coarse.argmax(1)
            correct = 0
            for n, rows, logits in fine:
                correct += int(((picked[rows] == n) & (logits.argmax(1) == local[rows])).sum())
        return StepStats(float(loss.detach()), correct, int(ids.numel()))


class PMGStep(TwoStageStep):
    """One step of Ours_PMG (train.pmg): stage I is PMG's four progressive sub-steps (jigsaw 8, 4, 2, then the
    whole images through the concatenated classifier), each its own backward and step of the main optimiser;
    stage II is the meta step on theta over stage 3's map, as for `ours`. One process (no DDP)."""

    CONCAT_WEIGHT = 2.0  # PMG weighs the concatenated classifier's loss twice

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.jigsaw_generator = torch.Generator().manual_seed(int(self.generator.initial_seed()) + 1)

    def stage_one(self, images: torch.Tensor, ids: torch.Tensor, joint: torch.Tensor, local: torch.Tensor) -> tuple[HeadOutput, torch.Tensor]:
        from train.pmg import JIGSAW, jigsaw

        out: HeadOutput | None = None
        loss = images.new_zeros(())
        for index, n in enumerate((*JIGSAW, 1)):
            self.main_opt.zero_grad(set_to_none=True)
            if self.theta_opt is not None:
                self.theta_opt.zero_grad(set_to_none=True)
            x = jigsaw(images, n, self.jigsaw_generator)
            with autocast(images.device, self.amp_dtype):
                out = self.net.stage(x, index, ids)  # type: ignore[operator]
                if index == 3:
                    loss = F.cross_entropy(out.logits.float(), joint) * self.CONCAT_WEIGHT
                else:
                    loss = pmg_losses(out, index, joint, local)
            backward_and_step(loss, self.main_opt, self.scaler)
        assert out is not None
        return out, loss.detach()
