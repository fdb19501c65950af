"""`--meta-bn`: how the head's BatchNorm normalises stage II's meta passes (train.meta_bn): what each mode
changes, that none moves the running statistics, that the default is the step as it was, and the option's way
from the command line into the run's config."""

import json

import pytest
import torch
import yaml

from erudite_edge.cli.app import main
from erudite_edge.errors import UsageError
from tiny_data import make_mixture
from train.config import TrainConfig
from train.meta_bn import META_BN, head_norms, meta_bn
from train.model import build_model
from train.model_spec import ModelConfig
from train.optim import OptimConfig, build_optimizers
from train.two_stage import TwoStageStep, frozen_bn_stats, meta_gradient, meta_objective

SIZE = 32
COUNTS = [3, 4]


def make_net(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(variant="ours", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16))


def batch(per=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(len(COUNTS)).repeat_interleave(per)
    local = torch.cat([torch.randint(k, (per,), generator=g) for k in COUNTS])
    joint = torch.tensor([0, COUNTS[0]])[ids] + local
    images = torch.randn(len(ids), 3, SIZE, SIZE, generator=g) * 0.5
    images[:, 0] += joint.float().view(-1, 1, 1) / 4
    return images, ids, joint, local


def trained_a_little(steps=3):
    """A net whose running statistics are no longer BatchNorm's initial ones (so eval differs from train)."""
    net = make_net()
    main_opt, theta_opt = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    step = TwoStageStep(net, main_opt, theta_opt, alpha=0.1, seed=0)
    for s in range(steps):
        step(*batch(seed=s))
    return net


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.slow  # over 1 s
def test_default_is_train_and_is_the_meta_gradient_without_the_option():
    assert TrainConfig().meta_bn == "train" and META_BN == ("train", "eval", "frozen")
    net = trained_a_little()
    x, ids, joint, local = batch(seed=7)
    feats = net.meta_input(x).detach()
    theta = net.attention_parameters()
    with frozen_bn_stats(net):
        l_meta, _, _ = meta_objective(net, feats, ids, joint, local, 1, 0.1)
        plain = flat(torch.autograd.grad(l_meta, theta))
        ours, _ = meta_gradient(net, feats, ids, joint, local, 1, 0.1)  # bn_mode's default
    assert torch.equal(flat(ours), plain)


def test_eval_normalises_with_running_statistics():
    net = trained_a_little()
    x, ids, joint, local = batch(seed=7)
    feats = net.meta_input(x).detach()
    theta = net.attention_parameters()
    with frozen_bn_stats(net):
        for m in head_norms(net):  # the reference: the head's BatchNorm layers put in eval mode by hand
            m.eval()
        l_meta, _, _ = meta_objective(net, feats, ids, joint, local, 1, 0.1)
        reference = flat(torch.autograd.grad(l_meta, theta))
        for m in head_norms(net):
            m.train()
        got, _ = meta_gradient(net, feats, ids, joint, local, 1, 0.1, "eval")
        train, _ = meta_gradient(net, feats, ids, joint, local, 1, 0.1, "train")
    assert torch.allclose(flat(got), reference, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(flat(got), flat(train), rtol=1e-3)


def test_frozen_normalises_every_row_with_the_whole_batchs_statistics():
    """The defining property: under `frozen`, the head's output on one data set's rows alone is what those rows
    get inside the whole batch in training mode (stage I's normalisation); under `train` it is not."""
    net = trained_a_little()
    x, ids, _, _ = batch(seed=7)
    feats = net.meta_input(x).detach()
    te = (ids == 1).nonzero(as_tuple=True)[0]
    with torch.no_grad(), frozen_bn_stats(net):
        whole = net.head(feats, ids).logits[te]
        alone_train = net.head(feats[te], ids[te]).logits
        with meta_bn(net, "frozen", lambda: net.head(feats, ids)):
            alone_frozen = net.head(feats[te], ids[te]).logits
    assert torch.allclose(alone_frozen, whole, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(alone_train, whole, rtol=1e-2, atol=1e-3)


def test_the_three_modes_give_three_gradients():
    net = trained_a_little()
    x, ids, joint, local = batch(seed=7)
    feats = net.meta_input(x).detach()
    with frozen_bn_stats(net):
        g = {m: flat(meta_gradient(net, feats, ids, joint, local, 1, 0.1, m)[0]) for m in META_BN}
    for a, b in (("train", "eval"), ("train", "frozen"), ("eval", "frozen")):
        assert not torch.allclose(g[a], g[b], rtol=1e-3), (a, b)


@pytest.mark.parametrize("mode", META_BN)
def test_no_mode_moves_running_statistics_or_leaves_a_layer_in_eval(mode):
    net = trained_a_little()
    main_opt, theta_opt = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    step = TwoStageStep(net, main_opt, theta_opt, alpha=0.1, seed=0, meta_bn=mode)
    x, ids, joint, local = batch(seed=3)
    step.stage_one(x, ids, joint, local)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    theta_before = [p.detach().clone() for p in net.attention_parameters()]
    assert step.stage_two(step.meta_features_for(x, x), ids, joint, local) is not None
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in net.modules())
    assert any(not torch.equal(p, q) for p, q in zip(net.attention_parameters(), theta_before))  # theta did step


def test_pcgrad_takes_the_mode_too():
    net = build_model(ModelConfig(variant="ours-pcgrad", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16))
    main_opt, theta_opt = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    x, ids, joint, local = batch(seed=3)
    thetas = {}
    for mode in ("train", "eval"):
        torch.manual_seed(0)
        net2 = build_model(ModelConfig(variant="ours-pcgrad", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16))
        net2.load_state_dict(net.state_dict())
        m_opt, t_opt = build_optimizers(net2, OptimConfig(lr=0.05, backbone_lr=0.05))
        step = TwoStageStep(net2, m_opt, t_opt, alpha=0.1, seed=0, meta_bn=mode)
        step(x, ids, joint, local)
        thetas[mode] = flat(net2.attention_parameters()).detach()
    assert not torch.allclose(thetas["train"], thetas["eval"])


def test_unknown_mode_is_refused():
    net = make_net()
    main_opt, theta_opt = build_optimizers(net, OptimConfig())
    with pytest.raises(ValueError, match="meta_bn 'batch': one of train, eval, frozen"):
        TwoStageStep(net, main_opt, theta_opt, meta_bn="batch")
    with pytest.raises(UsageError, match="--meta-bn batch: one of train, eval, frozen"):
        TrainConfig(meta_bn="batch").validate()


def test_meta_bn_flag_reaches_config_yaml_and_run_json(tmp_path):
    data = make_mixture(tmp_path / "mix", per_class=(4, 2), size=16)
    run = tmp_path / "run"
    args = ["train", "--backbone", "tiny", "--weights", "none", "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-per-dataset", "2", "--input-size", "16", "--embed-dim", "8", "--hidden", "8", "--workers", "0",
            "--no-progress", "--val-fraction", "0", "--meta-bn", "frozen", "--out", str(run)]
    for d in data:
        args += ["--data", d]
    assert main(args) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["meta_bn"] == "frozen"
    assert json.loads((run / "run.json").read_text())["train_config"]["meta_bn"] == "frozen"


def test_bad_meta_bn_flag_is_exit_2_with_one_line(tmp_path, capsys):
    data = make_mixture(tmp_path / "mix", per_class=(2, 1), size=16)
    args = ["train", "--backbone", "tiny", "--meta-bn", "batch", "--epochs", "1", "--workers", "0", "--out", str(tmp_path / "r")]
    for d in data:
        args += ["--data", d]
    assert main(args) == 2
    assert "--meta-bn batch: one of train, eval, frozen" in capsys.readouterr().err


# -- DDP: frozen statistics are the global batch's ----------------------------------------------------------
PER = 8  # rows of each data set in the global batch


def _global_meta_batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.arange(len(COUNTS)).repeat_interleave(PER)
    local = torch.cat([torch.randint(k, (PER,), generator=g) for k in COUNTS])
    joint = torch.tensor([0, COUNTS[0]])[ids] + local
    net = make_net()
    feats = torch.randn(len(ids), net.backbone.out_channels, 2, 2, generator=g).relu()  # what a backbone hands the head
    return feats, ids, joint, local


def _meta_gradients(rows):
    from train.two_stage import _all_reduce_mean

    net = make_net()
    net.train()
    feats, ids, joint, local = (t[rows] for t in _global_meta_batch())
    out = {}
    for mode in ("frozen", "train"):
        with frozen_bn_stats(net):
            grads, _ = meta_gradient(net, feats, ids, joint, local, 1, 50.0, mode)
        _all_reduce_mean(grads)
        out[mode] = flat(grads).detach()
    return out


def _rank_worker(rank, world, port, q):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    per_rank = PER // world
    rows = torch.cat([torch.arange(d * PER + rank * per_rank, d * PER + (rank + 1) * per_rank) for d in range(len(COUNTS))])
    q.put((rank, {k: v.numpy() for k, v in _meta_gradients(rows).items()}))
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo ranks
def test_frozen_under_two_ranks_gives_the_one_process_meta_gradient():
    from ranks import run_ranks

    single = _meta_gradients(torch.arange(len(COUNTS) * PER))
    results = run_ranks(_rank_worker)
    for rank in (0, 1):
        got = {k: torch.from_numpy(v) for k, v in results[rank].items()}
        scale = float(single["frozen"].abs().max())
        torch.testing.assert_close(got["frozen"], single["frozen"], rtol=1e-4, atol=1e-4 * scale)
        # train: each rank normalises over its own rows, so it is not the one-process gradient
        assert not torch.allclose(got["train"], single["train"], rtol=1e-3, atol=1e-4 * scale)
