"""Multi-process training is the single-process recipe, split: gloo on the CPU, two real processes.

The guarantee (README, "multi-GPU"): the same recipe on 1 GPU x 16 images per data set or 2 GPUs x 8
gives the same gradients up to float error, with SyncBatchNorm. SyncBatchNorm runs on CUDA only, so
here BatchNorm runs on fixed statistics (eval) for the comparison -- everything else (DDP's gradient
average, the meta step's in-graph all-reduce of the inner gradient, the meta-test draw) is the real
code. Also here: AMP dtype selection, SyncBatchNorm selection, per-rank DataLoader seeds, all-reduced
training metrics and sharded validation.
"""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ranks import run_ranks
from train.loop import amp_settings, loader_generator, use_sync_bn
from train.losses import loss_all
from train.model import build_model
from train.model_spec import ModelConfig
from train.two_stage import _all_reduce_mean, meta_objective

COUNTS = [3, 4]
PER = 16  # images of each data set in the global batch
ALPHA = 500.0  # a large inner step makes the second-order term (where the inner all-reduce matters) visible


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig(variant="ours", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16))
    net.train()
    for m in net.modules():  # fixed statistics: the part SyncBatchNorm would do cannot run on the CPU
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            with torch.no_grad():  # non-trivial statistics
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


def _global_batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.arange(len(COUNTS)).repeat_interleave(PER)
    local = torch.cat([torch.randint(k, (PER,), generator=g) for k in COUNTS])
    joint = torch.tensor([0, COUNTS[0]])[ids] + local
    images = torch.randn(len(ids), 3, 32, 32, generator=g)
    return images, ids, joint, local


def _rows_of_rank(rank: int, world: int) -> torch.Tensor:
    """The rows a rank holds: its slice of every data set's part, as BalancedBatchSampler cuts them."""
    per_rank = PER // world
    return torch.cat([torch.arange(d * PER + rank * per_rank, d * PER + (rank + 1) * per_rank) for d in range(len(COUNTS))])


def _gradients(net: nn.Module, model: nn.Module, rows: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Stage I's gradient of every parameter (through `model`, DDP or not) and stage II's meta gradient on theta."""
    x, ids, joint, local = (t[rows] for t in _global_batch())
    out = model(x, ids)
    loss_all(out, joint, local).backward()
    stage_one = [p.grad.detach().clone() for p in net.parameters()]
    theta = net.attention_parameters()
    l_meta, _, _ = meta_objective(net, out.features.detach(), ids, joint, local, test_dataset=1, alpha=ALPHA)
    meta = [g.detach().clone() for g in torch.autograd.grad(l_meta, theta)]
    _all_reduce_mean(meta)
    return stage_one, meta


def _worker(rank: int, world: int, port: int, q) -> None:  # noqa: ANN001
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net = _model()
    ddp = nn.parallel.DistributedDataParallel(net)
    stage_one, meta = _gradients(net, ddp, _rows_of_rank(rank, world))
    q.put((rank, ([g.numpy() for g in stage_one], [g.numpy() for g in meta])))  # numpy: no shared memory to outlive
    dist.destroy_process_group()


@pytest.mark.slow  # DDP ranks in child processes
def test_two_processes_x8_give_the_gradients_of_one_process_x16():
    single_net = _model()
    single = _gradients(single_net, single_net, torch.arange(len(COUNTS) * PER))
    results = run_ranks(_worker)
    for rank in (0, 1):
        stage_one, meta = results[rank]
        for a, b in zip(stage_one, single[0]):
            torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-6)
        for a, b in zip(meta, single[1]):  # theta's gradients are ~1e-4: compare relative to their scale
            torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert any(g.abs().sum() > 0 for g in single[1])  # theta's meta gradient is not trivially zero


def test_fp16_with_grad_scaler_where_bf16_is_only_emulated(monkeypatch):
    """bf16 only where the GPU computes it natively; fp16 with a GradScaler elsewhere (a T4). The
    CUDA queries are replaced (no GPU here): this checks our selection, not the GPU."""
    asked = {}

    def fake_bf16(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return including_emulation  # an emulating GPU: "supported" only when emulation counts

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_bf16)
    dtype, scaler = amp_settings(torch.device("cuda"), True)
    assert asked == {"including_emulation": False}
    assert dtype == torch.float16 and isinstance(scaler, torch.amp.GradScaler)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_settings(torch.device("cuda"), True) == (torch.bfloat16, None)
    assert amp_settings(torch.device("cuda"), False) == (None, None)
    assert amp_settings(torch.device("cpu"), True) == (None, None)


def test_sync_bn_selection():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert use_sync_bn(None, cuda, 2) and use_sync_bn(True, cuda, 8)
    assert not use_sync_bn(False, cuda, 2)
    assert not use_sync_bn(None, cuda, 1) and not use_sync_bn(True, cuda, 1)
    assert not use_sync_bn(True, cpu, 2)  # torch's SyncBatchNorm needs a GPU: warned, not converted


def test_dataloader_seeds_differ_between_ranks_and_epochs_and_repeat():
    seeds = {(r, e): loader_generator(0, r, e).initial_seed() for r in range(2) for e in range(3)}
    assert len(set(seeds.values())) == 6
    assert loader_generator(0, 1, 2).initial_seed() == seeds[(1, 2)]


def _trainer_worker(rank: int, world: int, port: int, data: list[str], out: str, q) -> None:  # noqa: ANN001
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from train.config import TrainConfig
    from train.evaluate import evaluate
    from train.loop import Trainer

    cfg = TrainConfig(data=data, out=out, variant="ours", backbone="tiny", pretrained=False, epochs=1, batch_per_dataset=4,
                      input_size=32, embed_dim=16, hidden=16, workers=2, lr=0.05, backbone_lr=0.05, device="cpu",
                      steps_per_epoch=2, val_fraction=0.5)
    trainer = Trainer(cfg, progress=False)
    first = [next(iter(trainer.loader))["image"] for _ in range(1)][0]
    metrics = trainer.train_epoch(0)
    val = evaluate(trainer.model, trainer.val_loader, trainer.labels, trainer.device, sharded=True)
    shard = len(list(trainer.val_loader.sampler))
    q.put((rank, {"metrics": {k: v for k, v in metrics.items() if k != "seconds"}, "val": val, "shard": shard,
                  "val_size": len(trainer.val_set), "first": first.numpy()}))
    dist.destroy_process_group()


@pytest.mark.slow  # DDP ranks in child processes
def test_metrics_are_all_reduced_and_validation_is_sharded(tmp_path):
    from tiny_data import make_mixture

    data = make_mixture(tmp_path / "mix")
    res = run_ranks(_trainer_worker, data, str(tmp_path / "run"))
    assert res[0]["metrics"] == res[1]["metrics"]
    assert res[0]["metrics"]["train_top1"] * 16 == pytest.approx(round(res[0]["metrics"]["train_top1"] * 16))
    assert res[0]["val"] == res[1]["val"]  # every rank gets the metrics over every image
    assert res[0]["val"]["images"] == res[0]["val_size"] == res[0]["shard"] + res[1]["shard"]
    assert 0 < res[0]["shard"] < res[0]["val_size"]
    # two ranks (with 2 DataLoader workers each) draw different augmentations of their images
    assert not (res[0]["first"] == res[1]["first"]).all()


def test_stage_two_points_sync_batchnorm_at_the_own_rank_group_and_back():
    """Stage II needs a double backward through BatchNorm, which SyncBatchNorm lacks: own_rows_bn points
    every SyncBatchNorm at a one-process group for the while (plain batch_norm then) and restores it.
    Only the switching is checked here: SyncBatchNorm's forward needs a GPU."""
    from train.two_stage import own_rows_bn

    net = nn.SyncBatchNorm.convert_sync_batchnorm(_model())
    syncs = [m for m in net.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert syncs and all(m.process_group is None for m in syncs)
    own = object()
    with own_rows_bn(net, own):
        assert all(m.process_group is own for m in syncs)
    assert all(m.process_group is None for m in syncs)
    with own_rows_bn(net, None):  # no SyncBatchNorm in use: nothing changes
        assert all(m.process_group is None for m in syncs)
