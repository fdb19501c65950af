"""`erudite-edge export deepstream`: a bundle as a DeepStream Gst-nvinfer classifier (primary or secondary).

    DIR/
      config_infer_erudite.txt   nvinfer's key file: [property] with network-type=1 (classifier),
                                 net-scale-factor, offsets, model-color-format, onnx-file, labelfile-path,
                                 classifier-threshold, process-mode, batch-size, network-mode,
                                 gie-unique-id, output-blob-names (+ operate-on-gie-id for secondary)
      labels.txt                 DeepStream's classifier label format: one line per output layer, its
                                 classes separated by ';' (here one line, the joint label order)
      erudite.onnx               the bundle's model with the normalisation's per-channel std folded in
                                 and a Softmax on the logits (nvinfer's classifier parser reads
                                 probabilities and compares them with classifier-threshold)
      parity.json                the folded copy against the bundle's model on real images

nvinfer preprocesses a pixel x (0-255, in the network's channel order) as y = net-scale-factor * (x -
offsets[c]): one scale for all channels. The bundle's preprocessing is y_c = (x / 255 - mean_c) / std_c.
With offsets_c = 255 mean_c and net-scale-factor = 1 / (255 s) for one s (the mean of the stds), the network
receives y_c * std_c / s; multiplying channel c by k_c = s / std_c restores y_c exactly. That product is
folded into the weights of the first convolution when the input feeds only a Conv (input channel c of its
kernel times k_c: the convolution is linear in its input, zero padding stays zero), otherwise a Mul by k
is inserted after the input (e.g. the Q/DQ INT8 model, whose input meets a QuantizeLinear first).

nvinfer scales the frame or object to the network size without keeping the aspect ratio
(maintain-aspect-ratio=0), as the bundle's "stretch" resize does; a bundle made with "center_crop" is
exported with a warning (nvinfer has no centre crop). Key names and values were checked against
DeepStream's gstnvinfer_property_parser (network-mode 0 FP32 / 1 INT8 / 2 FP16; model-color-format
0 RGB / 1 BGR; process-mode 1 primary / 2 secondary; network-type 1 classifier).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.fileio import atomic_directory
from erudite_edge.core.preprocess import PreprocessSpec, preprocess, resize_image
from erudite_edge.errors import BundleError, UsageError
from export.graph_input import strip_uint8_input

MARKER = "# written by erudite-edge export deepstream"
CONFIG_NAME = "config_infer_erudite.txt"
MODEL_NAME = "erudite.onnx"
LABELS_NAME = "labels.txt"
OUTPUT_NAME = "probs"
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
COLOR_FORMAT = {"RGB": 0, "BGR": 1}
PROCESS_MODE = {"primary": 1, "secondary": 2}
PARITY_MAX_DIFF = 1e-4  # max |probability difference| between the folded copy and the bundle's model


# -- the normalisation nvinfer can express ----------------------------------------------------------
@dataclass(frozen=True)
class NvinferScaling:
    scale: float  # net-scale-factor
    offsets: tuple[float, ...]  # per channel, network order
    channel_gain: tuple[float, ...]  # k_c, multiplied into the network's input channel c

    @classmethod
    def from_spec(cls, spec: PreprocessSpec) -> "NvinferScaling":
        mean, std = np.asarray(spec.mean, np.float64), np.asarray(spec.std, np.float64)
        if spec.channel_order == "BGR":  # normalize() works in RGB, then reverses the channels
            mean, std = mean[::-1], std[::-1]
        if np.any(std <= 0):
            raise BundleError(f"preprocessing std {spec.std} has a value <= 0")
        pixel = 1.0 / spec.scale  # x / 255 with scale 1/255: the pixel range the mean is given in
        s = float(std.mean())
        return cls(1.0 / (pixel * s), tuple(float(v) for v in pixel * mean), tuple(float(v) for v in s / std))

    def apply(self, rgb_sized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
        """What nvinfer feeds the network for an already sized RGB uint8 image: NCHW float32, no batch axis."""
        x = rgb_sized.astype(np.float64)
        if spec.channel_order == "BGR":
            x = x[..., ::-1]
        y = self.scale * (x - np.asarray(self.offsets))
        return np.ascontiguousarray(y.transpose(2, 0, 1), dtype=np.float32)


# -- graph surgery ----------------------------------------------------------------------------------
def fold_input_gain(model: Any, gain: Sequence[float], layout: str = "NCHW") -> tuple[Any, str]:
    """A copy of `model` computing model(x * gain) per input channel, and how ("conv" or "mul"); the logits
    output is followed by a Softmax named OUTPUT_NAME."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise BundleError("the model must have one image input and one logits output")
    x = inputs[0].name
    k = np.asarray(gain, dtype=np.float32)
    consumers = [n for n in g.node if x in n.input]
    how = "mul"
    if len(consumers) == 1 and consumers[0].op_type == "Conv" and consumers[0].input[0] == x and layout == "NCHW":
        conv = consumers[0]
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        w_name = conv.input[1] if len(conv.input) > 1 else ""
        shared = sum(w_name in n.input for n in g.node) > 1
        if group == 1 and w_name in inits and not shared:
            w = numpy_helper.to_array(inits[w_name])
            if w.ndim == 4 and w.shape[1] == len(k):
                folded = (w.astype(np.float64) * k.astype(np.float64)[None, :, None, None]).astype(w.dtype)
                inits[w_name].CopyFrom(numpy_helper.from_array(folded, w_name))
                how = "conv"
    if how == "mul":
        shape = [1, len(k), 1, 1] if layout == "NCHW" else [1, 1, 1, len(k)]
        gain_name, scaled = f"{x}_std_gain", f"{x}_std_scaled"
        g.initializer.append(numpy_helper.from_array(k.reshape(shape), gain_name))
        for n in consumers:
            for i, name in enumerate(n.input):
                if name == x:
                    n.input[i] = scaled
        g.node.insert(0, helper.make_node("Mul", [x, gain_name], [scaled], name="erudite_std_gain"))
    logits = g.output[0]
    g.node.append(helper.make_node("Softmax", [logits.name], [OUTPUT_NAME], axis=-1, name="erudite_softmax"))
    out = helper.make_tensor_value_info(OUTPUT_NAME, logits.type.tensor_type.elem_type,
                                        [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim])
    del g.output[:]
    g.output.append(out)
    onnx.checker.check_model(m)
    return m, how


# -- parity ---------------------------------------------------------------------------------------------
@dataclass
class Parity:
    images: int
    max_abs_diff: float  # probabilities
    top1_agreement: float
    bound: float
    passed: bool


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_parity(original: Path, folded: Path, spec: PreprocessSpec, scaling: NvinferScaling,
                 images: Sequence[np.ndarray], bound: float = PARITY_MAX_DIFF,
                 source_spec: PreprocessSpec | None = None) -> Parity:
    """The folded copy fed as nvinfer feeds it, against the bundle's model fed as erudite-edge does
    (`source_spec`: the bundle's own input, e.g. uint8 bytes, where it differs from the float `spec`)."""
    from export.parity import onnx_logits

    if not images:
        raise UsageError("no images for the parity check: pass --images DIR (or install scikit-image for its sample photos)")
    ref = _softmax(onnx_logits(original, np.stack([preprocess(im, source_spec or spec) for im in images])).astype(np.float64))
    got = onnx_logits(folded, np.stack([scaling.apply(resize_image(im, spec), spec) for im in images])).astype(np.float64)
    diff = float(np.abs(ref - got).max())
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return Parity(len(images), diff, agree, bound, diff <= bound and agree == 1.0)


# -- the export -----------------------------------------------------------------------------------------
def labels_line(names: Sequence[str]) -> str:
    """DeepStream's classifier labels: one line, the classes separated by ';' (a ';' inside a name becomes ',')."""
    return ";".join(n.replace(";", ",").replace("\n", " ") for n in names) + "\n"


def config_text(*, mode: str, precision: str, batch: int, threshold: float, scaling: NvinferScaling,
                spec: PreprocessSpec, gie_id: int, operate_on_gie_id: int | None, operate_on_class_ids: str | None,
                note: str) -> str:
    lines = [
        MARKER,
        f"# {note}",
        "[property]",
        "gpu-id=0",
        f"net-scale-factor={scaling.scale!r}",
        "offsets=" + ";".join(repr(v) for v in scaling.offsets),
        f"model-color-format={COLOR_FORMAT[spec.channel_order]}",
        f"onnx-file={MODEL_NAME}",
        f"labelfile-path={LABELS_NAME}",
        f"output-blob-names={OUTPUT_NAME}",
        f"batch-size={batch}",
        f"network-mode={NETWORK_MODE[precision]}",
        "network-type=1",
        f"classifier-threshold={threshold!r}",
        f"process-mode={PROCESS_MODE[mode]}",
        f"gie-unique-id={gie_id}",
        "maintain-aspect-ratio=0",
    ]
    if mode == "secondary":
        lines.append(f"operate-on-gie-id={operate_on_gie_id}")
        if operate_on_class_ids:
            lines.append(f"operate-on-class-ids={operate_on_class_ids}")
        lines.append("classifier-async-mode=0")
    return "\n".join(lines) + "\n"


def _source_model(bundle: Bundle, precision: str) -> Path:
    """fp32 and fp16 fold the fp32 ONNX model (nvinfer builds the FP16 engine from it); int8 the Q/DQ model."""
    if precision == "int8":
        entry = bundle.entry("main", "int8", "onnx")
        if (entry.info or {}).get("target", "tensorrt") != "tensorrt":
            raise UsageError(f"{bundle.root}: its int8 model was made for ONNX Runtime; nvinfer (TensorRT) needs "
                             "`erudite-edge export int8 --target tensorrt`")
        return bundle.path(entry)
    return bundle.path(bundle.entry("main", "fp32", "onnx"))


def export_deepstream(bundle: Bundle, out: Path, *, mode: str = "secondary", precision: str = "fp16", batch: int = 16,
                      threshold: float = 0.0, gie_id: int | None = None, operate_on_gie_id: int = 1,
                      operate_on_class_ids: str | None = None, images: Sequence[np.ndarray] | None = None,
                      overwrite: bool = False, log: Callable[[str], None] = lambda m: None) -> Path:
    import onnx

    if bundle.kind != "erudite":
        raise UsageError(f"{bundle.root}: a {bundle.kind} bundle; DeepStream export takes an erudite bundle (one model)")
    if mode not in PROCESS_MODE:
        raise UsageError(f"--mode {mode}: primary (whole frames) or secondary (a detector's objects)")
    if precision not in NETWORK_MODE:
        raise UsageError(f"--precision {precision}: one of {', '.join(NETWORK_MODE)}")
    if batch < 1:
        raise UsageError(f"--batch {batch}: give 1 or more")
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: a probability between 0 and 1")
    if operate_on_class_ids is not None and not all(p.strip().isdigit() for p in operate_on_class_ids.split(";")):
        raise UsageError(f"--operate-on-class-ids {operate_on_class_ids}: class ids separated by ';' (e.g. 0;2)")
    if out.exists() and not (overwrite and (out / CONFIG_NAME).is_file()
                             and (out / CONFIG_NAME).read_text(errors="replace").startswith(MARKER)):
        hint = " (it was not written by export deepstream: move it away yourself)" if overwrite else "; pass --overwrite"
        raise UsageError(f"--out {out} already exists{hint}")
    source_spec = bundle.preprocess
    spec = source_spec.host_float()  # a uint8 bundle's graph normalises itself: nvinfer gets that part cut off
    if spec.dtype != "float32" or spec.layout != "NCHW":
        raise UsageError(f"{bundle.root}: its model takes {spec.dtype} {spec.layout} input; nvinfer feeds float NCHW")
    if spec.resize != "stretch":
        log(f"warning: {bundle.root} resizes by {spec.resize}; nvinfer stretches frames/objects to the network size, "
            "so its inputs differ from erudite-edge's")
    source = _source_model(bundle, precision)
    model = strip_uint8_input(onnx.load(str(source)))
    elem = model.graph.input[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise UsageError(f"{source}: input of ONNX type {elem}, not float; nvinfer feeds float input")
    scaling = NvinferScaling.from_spec(spec)
    folded, how = fold_input_gain(model, scaling.channel_gain, spec.layout)
    if images is None:
        from export.images import photo_variants, sample_photos

        images = photo_variants(sample_photos())[:24]
    gie = gie_id if gie_id is not None else (1 if mode == "primary" else 2)
    with atomic_directory(out, overwrite=True) as tmp:
        onnx.save(folded, str(tmp / MODEL_NAME))
        parity = check_parity(source, tmp / MODEL_NAME, spec, scaling, images, source_spec=source_spec)
        log(f"deepstream: std folded by {'the first Conv' if how == 'conv' else 'a Mul at the input'}; parity on "
            f"{parity.images} real images: max |prob diff| {parity.max_abs_diff:.2e} (bound {parity.bound:g}), "
            f"top-1 agreement {parity.top1_agreement:.1%}")
        if not parity.passed:
            raise BundleError(f"{source}: the folded copy for nvinfer disagrees with the model (max |prob diff| "
                              f"{parity.max_abs_diff:.2e}, top-1 agreement {parity.top1_agreement:.1%}); nothing written")
        (tmp / LABELS_NAME).write_text(labels_line(bundle.labels.joint_names), encoding="utf-8")
        note = (f"{bundle.root.name}: {precision} {mode} classifier over {bundle.labels.num_classes} classes "
                f"({', '.join(bundle.labels.datasets)}); std folded into {MODEL_NAME} ({how})")
        (tmp / CONFIG_NAME).write_text(config_text(
            mode=mode, precision=precision, batch=batch, threshold=threshold, scaling=scaling, spec=spec, gie_id=gie,
            operate_on_gie_id=operate_on_gie_id, operate_on_class_ids=operate_on_class_ids, note=note), encoding="utf-8")
        (tmp / "parity.json").write_text(json.dumps({**asdict(parity), "folded_by": how, "source": source.name},
                                                    indent=2) + "\n")
    return out / CONFIG_NAME


__all__ = ["NvinferScaling", "check_parity", "config_text", "export_deepstream", "fold_input_gain", "labels_line"]
