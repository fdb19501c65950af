"""Fixtures shared across the test folders (pytest finds them by name; the helpers they use live in
importable modules beside this file: trained_model.py, onnx_fixtures.py, real_processes.py, ...).

The trained-model fixtures are module-scoped, as they were when test_export.py defined them: each test
module that uses `trained` trains its own tiny model (a module may change the bundle it gets)."""

from __future__ import annotations

import numpy as np
import pytest

from erudite_edge.core.preprocess import preprocess
from export.images import photo_variants, sample_photos
from trained_model import CLASS_PHOTOS, LABELS, SPEC, config, random_view, save_run, train_steps, write_imagefolder


def pytest_configure(config) -> None:
    """The video log quieting every capture of the product sets up before it opens anything
    (erudite_edge.sources.capture.quiet_video_logs), once for the test process: OpenCV reads
    OPENCV_FFMPEG_LOGLEVEL once per process, at its first FFmpeg use, so a test that opens cv2.VideoCapture or
    VideoWriter directly before any capture would otherwise let FFmpeg's own lines onto stderr for every later
    test, depending on which tests ran first (the stages and xdist workers run different subsets)."""
    from erudite_edge.sources.capture import quiet_video_logs

    quiet_video_logs()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import skimage.data

    out = {}
    for name in CLASS_PHOTOS:
        im = np.asarray(getattr(skimage.data, name)())
        out[name] = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
    return out


@pytest.fixture(scope="module")
def real_batch() -> np.ndarray:
    """Real photographs (scikit-image's samples, their crops and mirror images), preprocessed."""
    views = photo_variants(sample_photos())
    assert len(views) >= 40
    return np.stack([preprocess(v, SPEC) for v in views])


@pytest.fixture(scope="module")
def real_bytes() -> np.ndarray:
    """The same photographs as a default (uint8) bundle's models take them: resized NHWC bytes."""
    return np.stack([preprocess(v, SPEC.as_input("uint8")) for v in photo_variants(sample_photos())])


@pytest.fixture(scope="module")
def views(photos) -> tuple:
    """A training batch: six random views of each class's photograph (images, data set, joint, local)."""
    import torch

    rng = np.random.default_rng(1)
    images, ids, joint, local = [], [], [], []
    for k, name in enumerate(CLASS_PHOTOS):
        d, c = LABELS.to_local(k)
        for _ in range(6):
            images.append(preprocess(random_view(photos[name], rng), SPEC))
            ids.append(d), joint.append(k), local.append(c)
    return (torch.from_numpy(np.stack(images)), *(torch.tensor(v) for v in (ids, joint, local)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photos, views):
    """A tiny 'ours' model trained for a few steps on views of seven photographs, exported with the
    test split of its two data sets as parity images."""
    import torch

    from train.model import build_model
    from train.optim import OptimConfig, build_optimizers
    from train.two_stage import TwoStageStep

    root = tmp_path_factory.mktemp("trained")
    data = write_imagefolder(root / "data", photos, seed=0)
    torch.manual_seed(0)
    net = build_model(config("ours"))
    main_opt, theta_opt = build_optimizers(net, OptimConfig(lr=0.05, backbone_lr=0.05))
    net.train()
    assert train_steps(TwoStageStep(net, main_opt, theta_opt, alpha=0.05, seed=0), views) > 0.8
    run = save_run(root / "run", net.eval(), "ours")
    out = root / "bundle"
    from export.onnx_export import export_checkpoint

    bundle = export_checkpoint(run, out, data=data, parity_count=40)
    return {"root": root, "data": data, "bundle": out, "run": run, "net": net, "report": bundle.meta["parity"]}
