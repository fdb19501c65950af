"""The erudite model's shapes, gate, and inference path (issue: the erudite model)."""

import pytest
import torch

from train.model import EruditeNet, ZooModel, build_model, count_parameters
from train.model_spec import ModelConfig
from train.variants import VARIANTS

SIZE = 32


def make(variant: str, counts: list[int], gate: str = "channel", **kw) -> torch.nn.Module:
    return build_model(ModelConfig(variant=variant, backbone="tiny", class_counts=counts, embed_dim=16, gate=gate, hidden=16, **kw))


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("gate", ["channel", "dense"])
@pytest.mark.parametrize("counts", [[3, 4], [3, 4, 5], [2, 3, 4, 5]])
def test_shapes_and_gate_weights(counts, gate):
    n = len(counts)
    net = make("ours", counts, gate)
    x = torch.randn(2 * n, 3, SIZE, SIZE)
    ids = torch.arange(n).repeat_interleave(2)
    out = net(x, ids)
    assert out.logits.shape == (2 * n, sum(counts))
    assert out.gate_weights.shape == (2 * n, n, 16)
    assert torch.allclose(out.gate_weights.sum(dim=1), torch.ones(2 * n, 16), atol=1e-6)
    assert out.masks.shape[1] == 8
    assert [(d, logits.shape) for d, _, logits in out.aux] == [(d, (2, k)) for d, k in enumerate(counts)]
    assert out.features.shape[1] == net.backbone.out_channels


def test_attention_is_eq7():
    """Each group's mask comes from that group's channels only, and multiplies only them."""
    net = make("ours", [3, 4])
    att = net.attention
    x = torch.randn(1, 64, 4, 4)
    y, masks = att(x)
    k = 64 // 8
    for g in range(8):
        grp = x[:, g * k : (g + 1) * k]
        w = att.conv.weight[g].reshape(1, k, 1, 1)
        m = torch.sigmoid((grp * w).sum(1, keepdim=True) + att.conv.bias[g])
        assert torch.allclose(masks[:, g : g + 1], m, atol=1e-6)
        assert torch.allclose(y[:, g * k : (g + 1) * k], grp * m, atol=1e-6)


def test_channel_gate_is_per_channel_fc():
    """Eq. 4: channel c's weights depend only on the N values of channel c."""
    net = make("baseline+", [3, 4, 5])
    f = torch.randn(2, 3, 16)
    fused, w = net.gate(f)
    f2 = f.clone()
    f2[:, :, 5] += 1.0  # change channel 5 only
    fused2, w2 = net.gate(f2)
    changed = (w2 - w).abs().amax(dim=(0, 1)) > 0
    assert changed[5] and changed.sum() == 1
    assert torch.allclose(fused, (w * f).sum(1), atol=1e-6)


def test_dense_gate_is_released_form():
    net = make("baseline+", [3, 4], gate="dense")
    f = torch.randn(2, 2, 16)
    fused, w = net.gate(f)
    assert torch.allclose(fused, (w * f).mean(1), atol=1e-6)


@pytest.mark.parametrize("variant", ["baseline", "baseline+", "baseline++", "ours", "ours-pcgrad"])
def test_inference_path_has_no_aux_classifiers(variant):
    net = make(variant, [3, 4]).eval()
    graph = net.inference_graph().eval()
    keys = list(graph.state_dict())
    assert not any("aux" in k for k in keys)
    aux = count_parameters(net, ["aux_classifiers"])
    assert count_parameters(graph) == count_parameters(net) - aux
    if VARIANTS[variant].heads:
        assert aux > 0
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(graph(x), net(x), atol=1e-6)


def test_any_input_size():
    net = make("ours", [3, 4]).eval()
    with torch.no_grad():
        for s in (32, 48, 80):
            assert net(torch.randn(1, 3, s, s)).shape == (1, 7)


def test_zoo_routes_through_coarse():
    zoo = make("single", [3, 4]).eval()
    assert isinstance(zoo, ZooModel)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        scores = zoo(x)
        picked = zoo.coarse(x).argmax(1)
    for i, n in enumerate(picked.tolist()):
        lo, hi = (0, 3) if n == 0 else (3, 7)
        assert torch.allclose(scores[i, lo:hi].sum(), torch.tensor(1.0), atol=1e-5)
        assert scores[i].sum() == pytest.approx(1.0, abs=1e-5)


def test_unknown_names_are_clear():
    with pytest.raises(ValueError, match="unknown variant"):
        make("nope", [3])
    with pytest.raises(ValueError, match="unknown backbone"):
        EruditeNet(ModelConfig(variant="ours", backbone="nope", class_counts=[3]))
