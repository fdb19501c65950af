"""Quantization-aware fine-tuning (QAT) in the layout `export int8 --target tensorrt` writes.

The quantizers are torch.ao.quantization's own FakeQuantize modules and observers (straight-through
gradients, the int8 rounding and clamping TensorRT applies); what this module adds is where they go:
exactly where export.int8 puts Q/DQ for TensorRT's explicit quantization, so that what the network is
fine-tuned against is what the engine computes:

* the input of every Conv2d and Linear: int8, symmetric, one scale per tensor, the range calibrated
  once (the maximum |x| over calibration batches, as `--method minmax`) and then fixed while the
  weights adapt to it;
* their weights: int8, symmetric, one scale per output channel (the current maximum |w| of each
  channel at every step). Per-channel symmetric scales commute with the BatchNorm folding the ONNX
  export does (a per-channel factor scales a channel's maximum by the same factor), so the folded
  weights quantize as they were trained;
* biases, BatchNorm, activations, the attention sigmoid and the gate softmax stay float, as in the
  exported model.

Not torch.ao's prepare_qat_fx: it fuses Conv+BatchNorm into intrinsic QAT modules whose state dict no
longer loads into the float model the bundle export builds, and it places observers on op outputs
(ONNX Runtime's layout), not on layer inputs (TensorRT's). Not ModelOpt's torch quantization:
`modelopt.torch` imports transformers-side packages (huggingface_hub, ...) that this project does not
otherwise need. The attention's grouped 1x1 convolution is called functionally with the meta-learned
theta (train/modules.py), so it gets no quantizer here: export keeps that one layer float.

A QAT checkpoint is an ordinary checkpoint (the float weights, loadable anywhere) whose meta holds
`qat`: the FP32 run it started from and each quantized layer's input range (`amax`), which
`export int8 --qat RUN` writes into the Q/DQ model as the calibration.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.nn.utils import parametrize

QMIN, QMAX = -127, 127  # symmetric int8, as onnxruntime's QDQ quantizer writes for TensorRT
LAYOUT = ("int8 symmetric per-tensor activations on the inputs of Conv/Linear, int8 symmetric per-channel weights "
          "(TensorRT explicit quantization)")


def _activation_quantizer() -> FakeQuantize:
    return FakeQuantize(observer=MinMaxObserver, quant_min=QMIN, quant_max=QMAX, dtype=torch.qint8,
                        qscheme=torch.per_tensor_symmetric)


def _weight_quantizer() -> FakeQuantize:
    # averaging_constant 1: each step's scale is the current weights' per-channel maximum
    return FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=QMIN, quant_max=QMAX,
                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0, averaging_constant=1.0)


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (module.input_quantizer(args[0]), *args[1:])


def quantizable(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear layers called as modules, by name: the layers QAT quantizes. The attention's
    convolution is left out (its forward passes theta to F.conv2d, so module hooks never see it)."""
    from train.modules import GroupSpatialAttention

    skip = {id(m.conv) for m in model.modules() if isinstance(m, GroupSpatialAttention)}
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip}


def prepare(model: nn.Module, calibrate: Callable[[nn.Module], None], *, frozen: dict[str, float] | None = None) -> list[str]:
    """Put fake quantizers on `model` (in place) and calibrate the input ranges with `calibrate(model)`
    (runs forward passes, in eval mode), or take them from `frozen` (name -> amax, e.g. a QAT
    checkpoint's); then the ranges stay fixed. Returns the quantized layers' names."""
    layers = quantizable(model)
    for m in layers.values():
        m.input_quantizer = _activation_quantizer().to(m.weight.device)
        m.register_forward_pre_hook(_quantize_input)
        parametrize.register_parametrization(m, "weight", _weight_quantizer().to(m.weight.device))
    if frozen is None:
        for m in layers.values():  # calibrate with the input quantizers off: the ranges the float inputs take
            m.input_quantizer.disable_fake_quant()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            calibrate(model)
        model.train(was_training)
        unused = [n for n, m in layers.items() if not torch.isfinite(m.input_quantizer.activation_post_process.max_val)]
    else:
        unused = [n for n in layers if n not in frozen]
    for name in unused:  # not on the inference path (the auxiliary classifiers G_n): they stay float
        _remove(layers.pop(name))
    if frozen is not None:
        for name, m in layers.items():
            obs = m.input_quantizer.activation_post_process
            obs.min_val.fill_(-float(frozen[name]))
            obs.max_val.fill_(float(frozen[name]))
    for m in layers.values():
        q = m.input_quantizer
        scale, zero = q.activation_post_process.calculate_qparams()
        q.scale.resize_(scale.shape).copy_(scale)
        q.zero_point.resize_(zero.shape).copy_(zero)
        q.disable_observer()
        q.enable_fake_quant()
    return list(layers)


def _remove(m: nn.Module) -> None:
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    for key, hook in list(m._forward_pre_hooks.items()):
        if hook is _quantize_input:
            del m._forward_pre_hooks[key]
    del m.input_quantizer


def input_ranges(model: nn.Module) -> dict[str, float]:
    """Each quantized layer's input range (amax: the int8 scale times 127)."""
    return {name: float(m.input_quantizer.scale.item() * QMAX)
            for name, m in model.named_modules() if hasattr(m, "input_quantizer")}


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float weights under their plain names (what build_model's model loads): the trained weight
    of a parametrized layer, without the quantizers' buffers."""
    out = {}
    for key, value in model.state_dict().items():
        if ".input_quantizer." in key or ".parametrizations.weight.0." in key:
            continue
        out[key.replace(".parametrizations.weight.original", ".weight")] = value
    return out


def calibration_loop(batches: Iterable[Any], forward: Callable[[nn.Module, Any], None]) -> Callable[[nn.Module], None]:
    def run(model: nn.Module) -> None:
        for b in batches:
            forward(model, b)
    return run
