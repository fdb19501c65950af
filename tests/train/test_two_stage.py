"""The two-stage optimiser: what each stage may change, the second-order meta gradient against an
independent torch.func reference, PCGrad, and that every variant learns."""

import copy

import pytest
import torch
from torch.func import functional_call, grad

from train.losses import loss_all
from train.model import build_model
from train.model_spec import ModelConfig
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


@pytest.mark.slow  # trains a model
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


@pytest.mark.slow  # trains a model
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


# -- exact checks of each part of a step (the mutation run, tools/mutation.py, showed these unguarded) ----------

def test_pcgrad_three_tasks_exact_in_any_order():
    """g0 and g1 conflict (|g1|^2 = 0.5 < 1), g2 agrees with both (g2 . g0 = 0.5 < 1): each projection is single,
    so every task order gives g0 -> [0.5, 0.5], g1 -> [0, 0.5], g2 unchanged; the sum is over tasks (4 values)."""
    g = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-0.5, 0.5, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0]])
    for seed in range(6):
        out = pcgrad(g, torch.Generator().manual_seed(seed))
        assert out.shape == (4,) and torch.allclose(out, torch.tensor([1.0, 2.0, 0.0, 0.0])), (seed, out)
    assert torch.equal(g, torch.tensor([[1.0, 0.0, 0.0, 0.0], [-0.5, 0.5, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0]]))  # input kept


def _count_zoo():
    """A stand-in zoo with chosen logits (ZooStep's model contract: coarse logits on every row, each present data
    set's fine logits on its own rows), to check the step's arithmetic exactly. Rows: (data set, local label,
    routed to, fine prediction) -- right pipeline answers only at rows 0, 4 and 7."""
    rows = [(0, 0, 0, 0), (0, 1, 0, 2), (0, 2, 1, 2), (1, 3, 1, 1), (1, 1, 1, 1), (1, 3, 0, 3), (1, 0, 2, 0),
            (2, 1, 2, 1), (2, 0, 2, 1)]
    counts = [3, 4, 2]
    ids = torch.tensor([r[0] for r in rows])
    local = torch.tensor([r[1] for r in rows])
    coarse = torch.nn.functional.one_hot(torch.tensor([r[2] for r in rows]), 3).float() * 2.0
    fine = [torch.nn.functional.one_hot(torch.tensor([r[3] for r in rows if r[0] == n]), k).float() * 2.0
            for n, k in enumerate(counts)]

    class ChosenLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, images, ids):
            return coarse * self.scale, [(n, (ids == n).nonzero(as_tuple=True)[0], f * self.scale) for n, f in enumerate(fine)]

    return ChosenLogits(), ids, local, coarse, fine


def test_zoo_step_counts_right_data_set_and_right_class_and_sums_the_losses():
    net, ids, local, coarse, fine = _count_zoo()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    stats = ZooStep(net, opt)(torch.zeros(len(ids), 3, 4, 4), ids, local, local)
    assert (stats.correct, stats.count) == (3, 9)
    want = torch.nn.functional.cross_entropy(coarse, ids) + sum(
        torch.nn.functional.cross_entropy(f, local[ids == n]) for n, f in enumerate(fine))
    assert stats.loss == pytest.approx(float(want), rel=1e-6)


def test_a_data_set_missing_from_a_batch_leaves_its_own_parts_still():
    """Gradients are cleared to None, not zero: with momentum and weight decay a zero gradient would still move
    the auxiliary classifier (or the zoo's fine model) of a data set that is not in the batch."""
    x, ids, joint, local = batch()
    only0 = ids == 0
    for variant in ("ours", "single"):
        net = make(variant)
        if variant == "single":
            step = ZooStep(net, build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))[0])
            part = net.fine[1]
        else:
            step, part = stepper(net), net.aux_classifiers[1]
        step(x, ids, joint, local)  # momentum everywhere
        before = snapshot(part)
        step(x[only0], ids[only0], joint[only0], local[only0])
        assert all(torch.equal(before[k], v) for k, v in snapshot(part).items()), variant


def test_step_counts_right_answers_and_reports_the_stage_one_loss():
    net = make("ours")
    x, ids, joint, local = batch()
    ref = copy.deepcopy(net)
    out = ref(x, ids)  # the same forward the step runs before its first update (batch statistics)
    stats = stepper(net)(x, ids, joint, local)
    pred = out.logits.argmax(1)
    assert 0 < int((pred == joint).sum()) < len(joint)  # a mix of right and wrong: the count means something
    assert (stats.correct, stats.count) == (int((pred == joint).sum()), len(joint))
    assert stats.loss == pytest.approx(float(loss_all(out, joint, local).detach()), rel=1e-5)
    assert isinstance(stats.meta_loss, float)


@pytest.mark.slow  # trains a model
def test_autocast_only_with_a_dtype():
    x, ids, joint, local = batch()
    net = make("ours")
    out, _ = stepper(net).stage_one(x, ids, joint, local)
    assert out.logits.dtype == torch.float32
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    out, _ = TwoStageStep(net, main, theta, alpha=0.1, amp_dtype=torch.bfloat16).stage_one(x, ids, joint, local)
    assert out.logits.dtype == torch.bfloat16


def test_meta_features_fresh_runs_the_stepped_backbone_reuse_takes_stage_ones():
    x, ids, joint, local = batch()
    net = make("ours")
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    stale = torch.randn(len(ids), net.backbone.out_channels, 2, 2, requires_grad=True)
    reuse = TwoStageStep(net, main, theta, alpha=0.1, meta_features="".join(["re", "use"])).meta_features_for(x, stale)  # as read from a config
    assert torch.equal(reuse, stale) and not reuse.requires_grad
    bn = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    fresh = TwoStageStep(net, main, theta, alpha=0.1).meta_features_for(x, stale)
    assert torch.allclose(fresh, copy.deepcopy(net).meta_input(x), atol=1e-6) and not fresh.requires_grad
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in bn.items())  # BatchNorm statistics untouched
    base = make("baseline")
    bmain, _ = build_optimizers(base, OptimConfig(lr=0.05, backbone_lr=0.05))
    assert torch.equal(TwoStageStep(base, bmain, None).meta_features_for(x, stale), stale)  # no stage II: nothing to run
    with pytest.raises(ValueError, match="meta_features 'stale': one of fresh, reuse"):
        TwoStageStep(net, main, theta, meta_features="stale")


def test_theta_optimiser_required_only_for_meta_variants_and_alpha_follows_its_lr(monkeypatch):
    import train.two_stage as ts

    net = make("ours")
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    with pytest.raises(ValueError, match="variant ours needs a theta optimiser"):
        TwoStageStep(net, main, None)
    base = make("baseline")
    bstep = TwoStageStep(base, build_optimizers(base, OptimConfig())[0], None)
    with pytest.raises(ValueError, match="alpha follows theta's learning rate"):
        bstep.current_alpha
    x, ids, joint, local = batch()
    assert bstep.stage_two(x, ids, joint, local) is None  # no stage II for the baseline
    theta.param_groups[0]["lr"] = 0.07  # as the cosine schedule sets it
    seen = []
    real = ts.meta_objective
    monkeypatch.setattr(ts, "meta_objective", lambda *a, **k: seen.append(a[6]) or real(*a, **k))
    TwoStageStep(net, main, theta, alpha=None)(x, ids, joint, local)
    TwoStageStep(net, main, theta, alpha=0.25)(x, ids, joint, local)
    assert seen == [0.07, 0.25]


def test_stage_two_skips_one_data_set_and_non_finite_gradients():
    x, ids, joint, local = batch()
    net = make("ours")
    step = stepper(net)
    out, _ = step.stage_one(x, ids, joint, local)
    theta = [p.detach().clone() for p in net.attention_parameters()]
    one = ids == 1
    assert step.stage_two(out.features[one], ids[one], joint[one], local[one]) is None  # nothing to meta-test on
    bad = out.features.detach().clone()
    bad[0] = float("nan")
    assert step.stage_two(bad, ids, joint, local) is None
    assert all(torch.equal(p, q) for p, q in zip(net.attention_parameters(), theta))
    value = step.stage_two(out.features, ids, joint, local)
    assert isinstance(value, float) and value > 0
    assert not all(torch.equal(p, q) for p, q in zip(net.attention_parameters(), theta))


def test_pcgrad_stage_two_steps_theta_by_pcgrad_of_the_per_data_set_gradients():
    counts = [3, 4, 2]
    net = make("ours-pcgrad", counts=counts)
    main, theta_opt = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05, momentum=0.0, weight_decay=0.0))
    step = TwoStageStep(net, main, theta_opt, seed=3)
    x, ids, joint, local = batch(counts=counts)
    out, _ = step.stage_one(x, ids, joint, local)
    feats = out.features.detach()
    ref = copy.deepcopy(net)
    theta_ref = ref.attention_parameters()
    per_task = []
    for n in range(len(counts)):
        rows = (ids == n).nonzero(as_tuple=True)[0]
        l_n = loss_all(ref.head(feats[rows], ids[rows]), joint[rows], local[rows])
        per_task.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_n, theta_ref)]))
    g = torch.Generator()
    g.set_state(step.generator.get_state())
    want = pcgrad(torch.stack(per_task), g)
    before = torch.cat([p.detach().reshape(-1) for p in net.attention_parameters()])
    assert step.stage_two(out.features, ids, joint, local) is None  # PCGrad has no meta loss to report
    after = torch.cat([p.detach().reshape(-1) for p in net.attention_parameters()])
    assert torch.allclose(before - after, 0.05 * want, atol=1e-6)  # plain SGD: theta -= lr * pcgrad


def test_default_seed_is_zero():
    net = make("ours", counts=[3, 4, 2])
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    assert TwoStageStep(net, main, theta).generator.initial_seed() == 0


@pytest.mark.slow  # trains a model
def test_pmg_step_four_sub_steps_whole_images_last_weighted_twice_and_theta_cleared(monkeypatch):
    """Ours_PMG's stage I: jigsaw 8, 4, 2 from its own seeded generator (seed + 1), then the whole images
    through the concatenated classifier, whose loss counts twice; each sub-step starts from cleared gradients
    (None: a classifier idle in a sub-step does not move) and theta's gradient from stage II is cleared."""
    from train.model import build_model
    from train.model_spec import ModelConfig
    from train.pmg import jigsaw
    from train.two_stage import PMGStep

    torch.manual_seed(0)
    net = build_model(ModelConfig(variant="ours-pmg", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16)).train()
    main, theta = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    step = PMGStep(net, main, theta, None, seed=5)
    x, ids, joint, local = batch()
    step(x, ids, joint, local)  # momentum everywhere, stage II's gradient left on theta
    inputs, outs, moved = [], [], []
    real_stage = net.stage

    def stage(images, index, dataset_ids):
        inputs.append(images)
        outs.append(real_stage(images, index, dataset_ids))
        return outs[-1]

    monkeypatch.setattr(net, "stage", stage)
    last = [snapshot(net.stage_classifiers[0])]
    real_step = main.step

    def main_step():
        real_step()
        now = snapshot(net.stage_classifiers[0])
        moved.append(any(not torch.equal(last[-1][k], v) for k, v in now.items()))
        last.append(now)

    monkeypatch.setattr(main, "step", main_step)
    seen = []
    hooks = [p.register_hook(lambda gr, p=p: seen.append(p.grad)) for p in net.attention_parameters()]
    jg = torch.Generator()
    jg.set_state(step.jigsaw_generator.get_state())
    assert step.jigsaw_generator.initial_seed() == 6
    _, loss = step.stage_one(x, ids, joint, local)
    for h in hooks:
        h.remove()
    assert len(inputs) == 4
    for got, n in zip(inputs[:3], (8, 4, 2)):
        assert torch.equal(got, jigsaw(x, n, jg))
    assert torch.equal(inputs[3], x)
    assert float(loss) == pytest.approx(2.0 * float(torch.nn.functional.cross_entropy(outs[3].logits.detach(), joint)), rel=1e-6)
    assert moved == [True, False, False, False] and seen and all(g is None for g in seen)
