"""The two-stage optimiser: what each stage may change, the second-order meta gradient against an
independent torch.func reference, PCGrad, and that every variant learns."""

import copy

import pytest
import torch
from torch.func import functional_call, grad

from train.losses import loss_all
from train.model import ModelConfig, build_model
from train.optim import OptimConfig, build_optimizers
from train.two_stage import TwoStageStep, ZooStep, meta_objective, pcgrad

SIZE = 32
COUNTS = [3, 4]


def make(variant, counts=COUNTS, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(variant=variant, backbone="tiny", class_counts=counts, embed_dim=16, hidden=16, **kw))


def batch(counts=COUNTS, per=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(len(counts)).repeat_interleave(per)
    local = torch.cat([torch.randint(k, (per,), generator=g) for k in counts])
    offsets = torch.tensor([0] + list(torch.tensor(counts).cumsum(0)[:-1]))
    joint = offsets[ids] + local
    # images carry their class so the task is learnable
    images = torch.randn(len(ids), 3, SIZE, SIZE, generator=g) * 0.5
    images[:, 0] += joint.float().view(-1, 1, 1) / 4
    return images, ids, joint, local


def stepper(net, variant_lr=0.05):
    main, theta = build_optimizers(net, OptimConfig(lr=variant_lr, backbone_lr=variant_lr))
    return TwoStageStep(net, main, theta, alpha=0.1, seed=0)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_stage_one_never_changes_theta():
    net = make("ours")
    step = stepper(net)
    theta_before = [p.detach().clone() for p in net.attention_parameters()]
    before = snapshot(net)
    x, ids, joint, local = batch()
    step.stage_one(x, ids, joint, local)
    for p, q in zip(net.attention_parameters(), theta_before):
        assert torch.equal(p, q)
    after = snapshot(net)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone") for k in changed) and any(k.startswith("classifier") for k in changed)


@pytest.mark.parametrize("variant", ["ours", "ours-pcgrad"])
def test_stage_two_changes_only_theta_and_leaves_bn_stats(variant):
    net = make(variant)
    step = stepper(net)
    x, ids, joint, local = batch()
    out, _ = step.stage_one(x, ids, joint, local)
    before = snapshot(net)
    step.stage_two(out.features, ids, joint, local)
    after = snapshot(net)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"attention.conv.weight", "attention.conv.bias"}
    # running statistics included in the snapshot: untouched
    assert all("running" not in k and "num_batches" not in k for k in changed)


def test_stage_two_does_not_run_the_backbone():
    net = make("ours")
    step = stepper(net)
    x, ids, joint, local = batch()
    out, _ = step.stage_one(x, ids, joint, local)
    calls = []
    handle = net.backbone.register_forward_hook(lambda *a: calls.append(1))
    step.stage_two(out.features, ids, joint, local)
    handle.remove()
    assert calls == []


def test_meta_gradient_matches_torch_func_second_order_reference():
    torch.manual_seed(0)
    net = make("ours", counts=[3, 4, 2]).double()
    x, ids, joint, local = batch(counts=[3, 4, 2], per=3)
    x = x.double()
    with torch.no_grad():
        feats = net.backbone(x)
    alpha, test_dataset = 0.3, 1
    # ours: autograd with create_graph through the head's explicit-theta path; BN stats restored by the step.
    ref_net = copy.deepcopy(net)
    theta = net.attention_parameters()
    l_meta, _, _ = meta_objective(net, feats, ids, joint, local, test_dataset, alpha)
    ours = torch.autograd.grad(l_meta, theta)

    # reference: torch.func transforms over functional_call of a head-only module, theta swapped in as
    # module parameters (not through the explicit-theta argument); BN uses batch statistics throughout.
    torch.func.replace_all_batch_norm_modules_(ref_net)

    class Head(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, f, d):
            return self.n.head(f, d)

    head = Head(ref_net)
    params = {k: v.detach() for k, v in head.named_parameters()}
    wk, bk = "n.attention.conv.weight", "n.attention.conv.bias"

    def loss(th, rows):
        p = dict(params)
        p[wk], p[bk] = th
        out = functional_call(head, p, (feats[rows], ids[rows]))
        return loss_all(out, joint[rows], local[rows])

    tr = (ids != test_dataset).nonzero(as_tuple=True)[0]
    te = (ids == test_dataset).nonzero(as_tuple=True)[0]

    def l_meta_ref(th):
        g = grad(loss)(th, tr)
        adapted = tuple(t - alpha * gi for t, gi in zip(th, g))
        return loss(th, tr) + loss(adapted, te)

    th0 = (params[wk], params[bk])
    ref = grad(l_meta_ref)(th0)
    first_order_only = grad(lambda th: loss(th, tr) + loss(tuple(t - alpha * gi.detach() for t, gi in zip(th, grad(loss)(th, tr))), te))(th0)
    for a, b, c in zip(ours, ref, first_order_only):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    # the second-order term is really there (else the comparison proves little)
    assert any((b - c).abs().max() > 1e-8 for b, c in zip(ref, first_order_only))


def test_pcgrad_projects_conflicts():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    out = pcgrad(g, torch.Generator().manual_seed(0))
    # g0 projected off g1: [1,0] - (-1/2)[-1,1] = [0.5, 0.5]; g1 projected off g0: [-1,1] - (-1)[1,0] = [0, 1]
    assert torch.allclose(out, torch.tensor([0.5, 1.5]))
    agree = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(pcgrad(agree), agree.sum(0))


@pytest.mark.parametrize("variant", ["baseline", "baseline+", "baseline++", "ours", "ours-pcgrad", "single"])
def test_every_variant_learns(variant):
    net = make(variant)
    net.train()
    if variant == "single":
        opt, _ = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
        step = ZooStep(net, opt)
    else:
        step = stepper(net)
    x, ids, joint, local = batch(per=4)
    losses = [step(x, ids, joint, local).loss for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_baseline_plus_plus_trains_theta_in_stage_one():
    net = make("baseline++")
    step = stepper(net)
    before = [p.detach().clone() for p in net.attention_parameters()]
    step(*batch())
    assert not all(torch.equal(p, q) for p, q in zip(net.attention_parameters(), before))


def test_meta_test_data_set_is_drawn_from_the_seeded_generator(monkeypatch):
    """Each step's meta-test data set is the next draw of torch.Generator(seed) over the data sets present:
    a seeded, exact check (not a noisy accuracy threshold) that catches a meta-test set that never changes."""
    import train.two_stage as ts

    counts = [3, 4, 2]
    net = make("ours", counts=counts)
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    step = TwoStageStep(net, main, theta, alpha=0.1, seed=7)
    drawn = []
    real = ts.meta_objective

    def spy(net, feats, ids, joint, local, test_dataset, alpha, theta=None):  # noqa: ANN001
        drawn.append(test_dataset)
        return real(net, feats, ids, joint, local, test_dataset, alpha, theta)

    monkeypatch.setattr(ts, "meta_objective", spy)
    x, ids, joint, local = batch(counts=counts)
    for _ in range(12):
        step(x, ids, joint, local)
    g = torch.Generator().manual_seed(7)
    assert drawn == [int(torch.randint(3, (1,), generator=g)) for _ in range(12)]
    assert set(drawn) == {0, 1, 2}


def test_stage_one_starts_from_cleared_theta_gradient():
    """Stage II leaves its gradient on theta; stage I must not add its own to it (under DDP the reducer
    would accumulate into it)."""
    net = make("ours")
    step = stepper(net)
    x, ids, joint, local = batch()
    step(x, ids, joint, local)
    assert all(p.grad is not None for p in net.attention_parameters())  # left by stage II
    seen = []
    hooks = [p.register_hook(lambda g, p=p: seen.append(p.grad)) for p in net.attention_parameters()]
    step.stage_one(x, ids, joint, local)
    for h in hooks:
        h.remove()
    assert seen and all(g is None for g in seen)
