"""The erudite head's building blocks (train/modules.py) against independent element-by-element computations
of the paper's equations: the grouped spatial attention (Eq. 7, with and without replacement theta), the
projections m_n (Eq. 3, in training and in inference), the per-channel gate (Eq. 4), the released dense gate,
and the classifiers. Sizes are chosen so that no two dimensions are equal (a swapped axis cannot pass)."""

import pytest
import torch
from torch import nn

from train.modules import ChannelGate, DatasetProjections, DenseGate, GroupSpatialAttention, make_classifier

B, N, E = 2, 3, 4  # images, data sets, embedding channels


def _attention_reference(x, weight, bias, groups):
    """Eq. 7 group by group: a mask from that group's channels only, multiplying only them."""
    k = x.shape[1] // groups
    outs, masks = [], []
    for g in range(groups):
        grp = x[:, g * k : (g + 1) * k]
        m = torch.sigmoid((grp * weight[g].reshape(1, k, 1, 1)).sum(1, keepdim=True) + bias[g])
        outs.append(grp * m)
        masks.append(m)
    return torch.cat(outs, 1), torch.cat(masks, 1)


def test_attention_has_eight_groups_by_default_and_follows_eq7():
    torch.manual_seed(0)
    att = GroupSpatialAttention(16)  # the paper's 8 groups
    assert att.groups == 8 and tuple(att.conv.weight.shape) == (8, 2, 1, 1)
    x = torch.randn(B, 16, 3, 5)
    y, masks = att(x)
    want_y, want_m = _attention_reference(x, att.conv.weight, att.conv.bias, 8)
    assert masks.shape == (B, 8, 3, 5) and y.shape == x.shape
    assert torch.allclose(masks, want_m, atol=1e-6) and torch.allclose(y, want_y, atol=1e-6)


def test_attention_takes_replacement_theta_without_touching_its_own():
    """Stage II evaluates adapted parameters theta' through `forward(x, theta)`."""
    torch.manual_seed(0)
    att = GroupSpatialAttention(12, groups=4)
    x = torch.randn(B, 12, 3, 5)
    w2, b2 = torch.randn_like(att.conv.weight), torch.randn_like(att.conv.bias)
    own = [p.detach().clone() for p in att.parameters()]
    y, masks = att(x, (w2, b2))
    want_y, want_m = _attention_reference(x, w2, b2, 4)
    assert torch.allclose(y, want_y, atol=1e-6) and torch.allclose(masks, want_m, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(att.parameters(), own))
    assert not torch.allclose(att(x)[0], y)  # without theta: its own parameters


@pytest.mark.parametrize("channels, groups", [(16, 8), (24, 8), (24, 2), (9, 3)])
def test_attention_accepts_channels_that_split_into_groups(channels, groups):
    assert GroupSpatialAttention(channels, groups).groups == groups


@pytest.mark.parametrize("channels, groups", [(12, 8), (10, 4), (7, 2)])
def test_attention_refuses_channels_that_do_not_split(channels, groups):
    with pytest.raises(ValueError, match=f"{channels} channels do not split into {groups} groups"):
        GroupSpatialAttention(channels, groups)


def _projections_reference(p: DatasetProjections, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Eq. 3 for each data set n: ReLU(BN_n(Conv_n(x))), then the global max; (B, N, E)."""
    w = p.conv.weight.reshape(N * E, -1)  # a 1x1 conv without bias
    z = torch.einsum("oc,bchw->bohw", w, x)
    if training:
        mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = p.bn.running_mean, p.bn.running_var
    z = (z - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + p.bn.eps)
    z = torch.relu(z * p.bn.weight.view(1, -1, 1, 1) + p.bn.bias.view(1, -1, 1, 1))
    pooled = z.amax(dim=(2, 3))  # (B, N*E): data set n holds channels n*E .. n*E+E-1
    return torch.stack([pooled[:, n * E : (n + 1) * E] for n in range(N)], 1)


def test_projections_are_eq3_per_data_set_in_training_and_inference():
    torch.manual_seed(0)
    p = DatasetProjections(5, E, N)
    assert p.conv.bias is None and p.bn.momentum == 0.1  # BN follows the conv: a bias would be dead weight
    assert sum(t.numel() for t in p.parameters()) == 5 * N * E + 2 * N * E
    with torch.no_grad():
        p.bn.weight.uniform_(0.5, 1.5)
        p.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(B, 5, 3, 4)
    p.train()
    f = p(x)
    assert f.shape == (B, N, E)
    assert torch.allclose(f, _projections_reference(p, x, True), atol=1e-5)
    z = torch.einsum("oc,bchw->bohw", p.conv.weight.reshape(N * E, -1), x)
    # running statistics move by momentum 0.1 from (0, 1)
    assert torch.allclose(p.bn.running_mean, 0.1 * z.mean(dim=(0, 2, 3)), atol=1e-6)
    p.eval()
    with torch.no_grad():
        p.bn.running_mean.uniform_(-0.3, 0.3)
        p.bn.running_var.uniform_(0.5, 2.0)
        assert torch.allclose(p(x), _projections_reference(p, x, False), atol=1e-5)


def test_projections_take_their_momentum():
    p = DatasetProjections(5, E, N, bn_momentum=0.01)  # the released code's
    assert p.bn.momentum == 0.01


def test_channel_gate_is_one_n_by_n_fc_per_channel():
    """Eq. 4: for channel c, logits = W_c f*_{:,c} + b_c (W_c: N x N), softmax over the N data sets,
    fused_c = sum_n w_{n,c} f*_{n,c}."""
    torch.manual_seed(0)
    gate = ChannelGate(E, N)
    f = torch.randn(B, N, E)
    fused, weights = gate(f)
    w, b = gate.fc.weight.reshape(E * N, N), gate.fc.bias
    want_w = torch.empty(B, N, E)
    for c in range(E):
        logits = f[:, :, c] @ w[c * N : (c + 1) * N].T + b[c * N : (c + 1) * N]  # (B, N)
        want_w[:, :, c] = torch.softmax(logits, dim=1)
    assert weights.shape == (B, N, E) and fused.shape == (B, E)
    assert torch.allclose(weights, want_w, atol=1e-6)
    assert torch.allclose(fused, (want_w * f).sum(1), atol=1e-6)
    assert sum(t.numel() for t in gate.parameters()) == E * N * N + E * N


def test_dense_gate_is_the_released_linear_over_all_channels():
    torch.manual_seed(0)
    gate = DenseGate(E, N)
    assert (gate.fc.in_features, gate.fc.out_features) == (N * E, N * E)
    f = torch.randn(B, N, E)
    fused, weights = gate(f)
    logits = (f.reshape(B, N * E) @ gate.fc.weight.T + gate.fc.bias).reshape(B, N, E)
    want_w = torch.softmax(logits, dim=1)
    assert weights.shape == (B, N, E) and fused.shape == (B, E)
    assert torch.allclose(weights, want_w, atol=1e-6)
    assert torch.allclose(fused, (want_w * f).mean(1), atol=1e-6)


def test_classifiers_mlp_by_default_and_linear():
    """The released BN-Linear-BN-ELU-Linear (512 hidden) by default; one Linear on request. Kinds arrive as
    strings read from the command line or a checkpoint (not interned literals)."""
    torch.manual_seed(0)
    mlp = make_classifier(6, 5)
    assert [type(m) for m in mlp] == [nn.BatchNorm1d, nn.Linear, nn.BatchNorm1d, nn.ELU, nn.Linear]
    assert (mlp[0].num_features, mlp[1].in_features, mlp[1].out_features, mlp[2].num_features) == (6, 6, 512, 512)
    assert (mlp[4].in_features, mlp[4].out_features) == (512, 5)
    assert make_classifier(6, 5, "".join(["m", "lp"]), hidden=7)[1].out_features == 7
    lin = make_classifier(6, 5, "".join(["lin", "ear"]))
    assert type(lin) is nn.Linear and (lin.in_features, lin.out_features) == (6, 5)
    x = torch.randn(3, 6)
    assert torch.allclose(lin(x), x @ lin.weight.T + lin.bias)
    for kind in ("attention", "conv", "zzz", "Linear"):
        with pytest.raises(ValueError, match=f"classifier kind '{kind}' unknown"):
            make_classifier(6, 5, kind)
