"""Precise BN (`precise_bn_batches: N` in a run's config): after each epoch every BatchNorm's statistics are the
plain mean over the epoch's first N training batches through the epoch's final weights (the demo uses it:
EfficientNet-Lite's momentum 0.01 keeps ImageNet's statistics through a short training)."""

import copy

import pytest
import torch

from tiny_data import make_mixture
from train.config import TrainConfig
from train.loop import Trainer

pytestmark = pytest.mark.slow  # trains then recomputes BN statistics


def _norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("variant", ["ours", "baseline"])
def test_precise_bn_recomputes_the_statistics_through_the_final_weights(tmp_path, variant):
    data = make_mixture(tmp_path / "mix")
    cfg = TrainConfig(data=data, out=str(tmp_path / "run"), variant=variant, backbone="tiny", pretrained=False, epochs=1,
                      batch_per_dataset=4, input_size=24, embed_dim=16, hidden=16, workers=0, lr=0.05, backbone_lr=0.05,
                      val_fraction=0.0, precise_bn_batches=2, seed=0)
    t = Trainer(cfg, progress=False)
    assert t.steps_per_epoch > 2  # so that the 2 batches are not simply the epoch
    momenta = [m.momentum for m in _norms(t.model)]
    t.run()
    norms = _norms(t.model)
    assert norms and all(int(m.num_batches_tracked) == 2 for m in norms)  # reset, then 2 batches
    assert [m.momentum for m in norms] == momenta  # the moving average is back for the next epoch

    # by hand: the epoch's first two batches through the final weights, plain means
    ref = copy.deepcopy(t.model).train()
    for m in _norms(ref):
        m.reset_running_stats()
        m.momentum = None
    for part in t.train_set.datasets:  # the epoch's augmentation from its start, as precise BN replays it
        part.set_epoch(0)
    with torch.no_grad():
        for i, b in enumerate(t.loader):
            if i == 2:
                break
            ref(b["image"], b["dataset"])
    for got, want in zip(norms, _norms(ref)):
        torch.testing.assert_close(got.running_mean, want.running_mean)
        torch.testing.assert_close(got.running_var, want.running_var)
    history = (tmp_path / "run" / "history.jsonl").read_text()
    assert '"precise_bn_images": 16' in history  # 2 batches of 4 images of each of the 2 data sets


def test_precise_bn_batches_must_not_be_negative(tmp_path):
    from erudite_edge.errors import UsageError

    with pytest.raises(UsageError, match="precise_bn_batches -1"):
        TrainConfig(data=["a=x"], precise_bn_batches=-1).validate()
