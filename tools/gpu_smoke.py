"""First-GPU smoke test: what a CUDA GPU with PyTorch alone can check of erudite-edge, in one run of a few
minutes, written to one JSON report. Prepared for the first GPU machine this project is lent; nothing in
this repository says it has run on one.

    python3 tools/gpu_smoke.py [--out gpu_smoke.json] [--wheels DIR] [--budget SECONDS]

The machine it is written for: Python 3.12, PyTorch with CUDA, CPU onnxruntime, opencv-python-headless,
typer, rich, pyyaml; no pydantic, no Polygraphy, no TensorRT, no internet. So it installs nothing and
imports what exists: a check whose module is missing is reported as skipped, naming the module. Checks:

  cuda.device               the GPU, its capability and memory, one matmul; torch's CUDA, cuDNN, NCCL
  model.forward_backward    the tiny erudite model's forward and backward on CUDA (fp32 with TF32 off,
                            channels_last) against the same on the CPU: logits and every gradient
  two_stage.step[...]       one two-stage training step (stage I, then stage II's second-order meta step
                            on theta) on CUDA, channels_last, in fp32, under bf16 autocast and under fp16
                            autocast with a GradScaler, against the same step on the CPU in fp32: the loss,
                            the meta loss and the update of every parameter
  ddp.nccl_one_rank         NCCL on one rank: an all-reduce, and the two-stage step through
                            DistributedDataParallel equal to the step without it
  export.onnx_from_gpu      the GPU-trained model exported to ONNX (export/onnx_export.py to_onnx) and run
                            by ONNX Runtime (CPU) against the GPU model (export/parity.py's tolerance)
  ort.providers             ONNX Runtime's CUDA / TensorRT providers where this onnxruntime has them: the
                            runner set up for the TensorRT EP fed 64 inputs in chunks of the profile's 32
  tensorrt.*                where `tensorrt` imports (and Polygraphy, pydantic): the device layer's CUDA
                            runtime line, an FP16 engine built from the exported model, the check set on it,
                            64 inputs chunked to the profile, the runner's close, the engine's sidecar

Tolerances are in TOLERANCES below (reduced precision is compared by relative size of the difference of
the parameter updates, and by the loss). Exit code: 0 every check that ran passed, 1 one failed, 2 no
CUDA GPU (one line, nothing written) or bad arguments.

Wheels the runtime needs and the machine lacks (pydantic and pydantic_core for bundles, onnx, onnxscript,
onnx_ir and ml_dtypes for the export: cp312 manylinux x86_64 wheels, well under 64 MiB together) travel
as wheel files in one folder: `--wheels DIR` unpacks every *.whl there into a temporary folder that is put
first on sys.path for this run (a wheel is a zip file; no pip, nothing installed, the folder is removed at
exit). TensorRT's wheels are far too large to travel: without them the tensorrt checks are skipped.

`--allow-cpu` is for this project's tests only: every check runs on the CPU (gloo for NCCL), the report
says so, and nothing it says is about a GPU.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import datetime as _dt
import glob
import importlib
import importlib.metadata as md
import json
import platform
import shutil
import socket
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROG = "gpu_smoke"
# module -> distribution, for the imports section of the report
MODULES = {"torch": "torch", "numpy": "numpy", "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
           "cv2": "opencv-python-headless", "typer": "typer", "rich": "rich", "yaml": "pyyaml", "pydantic": "pydantic",
           "polygraphy": "polygraphy", "tensorrt": "tensorrt"}
# Reduced precision against the CPU's fp32 step. update: ||u_gpu - u_cpu|| / ||u_cpu|| over every parameter's
# update; loss: |loss_gpu - loss_cpu| / max(1, |loss_cpu|). fp32 runs with TF32 off.
# Measured on the CPU's own bf16/fp16 autocast against its fp32 (seeds 0-4): update 0.11-0.14 (bf16) and
# 0.014-0.043 (fp16), loss below 0.003, meta loss below 0.05; a wrong step (another batch, a lost update)
# is near 1. The GPU's reduced-precision kernels are other kernels: the bounds leave room, not much.
TOLERANCES = {"fp32": {"update": 1e-3, "loss": 1e-4, "logits": 1e-4},
              "bf16": {"update": 0.3, "loss": 0.03},
              "fp16": {"update": 0.1, "loss": 0.01}}
COUNTS = [3, 4]  # the tiny model of the tests: two data sets of 3 and 4 classes
SIZE = 32
PER = 4  # images per data set in a batch


class Skip(Exception):
    """A check that cannot run here; the message names what is missing."""


def fail(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(2)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# -- what exists ----------------------------------------------------------------------------------------
def unpack_wheels(folder: Path) -> list[str]:
    """Unpack every wheel in `folder` into one temporary folder put first on sys.path; the wheel names."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return []
    target = Path(tempfile.mkdtemp(prefix="gpu_smoke_wheels_"))
    atexit.register(shutil.rmtree, target, True)
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            z.extractall(target)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return [w.name for w in wheels]


def imports() -> dict[str, str]:
    """module -> its version, or 'missing: <why>' (the import is tried, not just looked up)."""
    out = {}
    for module, dist in MODULES.items():
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # ImportError, or a broken install
            out[module] = f"missing: {first_line(e)}"
            continue
        if getattr(mod, "__file__", None) is None and not hasattr(mod, "__version__"):
            out[module] = "missing: only a namespace package (no module files: type stubs?)"
            continue
        version = getattr(mod, "__version__", None)
        if version is None:
            with contextlib.suppress(md.PackageNotFoundError):
                version = md.version(dist)
        out[module] = str(version or "?")
    return out


def need(*modules: str) -> None:
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:
            missing.append(m)
    if missing:
        raise Skip(f"not importable here: {', '.join(missing)}")


# -- the pieces (each runs on any torch device, so the tests run them on the CPU) -------------------------
def tiny_model(seed: int = 0, variant: str = "ours") -> Any:
    import torch

    from train.model import build_model
    from train.model_spec import ModelConfig

    torch.manual_seed(seed)
    return build_model(ModelConfig(variant=variant, backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16))


def tiny_batch(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Images that carry their class (learnable), data-set ids, joint and local labels; on the CPU."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(len(COUNTS)).repeat_interleave(PER)
    local = torch.cat([torch.randint(k, (PER,), generator=g) for k in COUNTS])
    offsets = torch.tensor([0, *torch.tensor(COUNTS).cumsum(0)[:-1].tolist()])
    joint = offsets[ids] + local
    images = torch.randn(len(ids), 3, SIZE, SIZE, generator=g) * 0.5
    images[:, 0] += joint.float().view(-1, 1, 1) / 4
    return images, ids, joint, local


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 on the GPU as fp32 (Ampere+ matmuls and convolutions default to TF32 in places)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def place(model: Any, x: Any, device: Any, channels_last: bool) -> tuple[Any, Any]:
    import torch

    model = model.to(device)
    x = x.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def forward_backward(device: Any, channels_last: bool = False, seed: int = 0) -> dict[str, Any]:
    """Logits and the gradient of every parameter of the training forward (Loss_all) on `device`, as CPU tensors."""

    from train.losses import loss_all

    model = tiny_model(seed).train()
    images, ids, joint, local = tiny_batch(seed)
    model, x = place(model, images, device, channels_last)
    with no_tf32():
        out = model(x, ids.to(device))
        loss = loss_all(out, joint.to(device), local.to(device))
        loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return {"loss": float(loss.detach()), "logits": out.logits.detach().float().cpu(), "grads": grads}


def compare_forward_backward(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Logits by their largest difference over the logit scale; gradients by the norm of the difference of all
    of them over the norm of all of them (a parameter whose true gradient is 0, a bias before a BatchNorm,
    has only rounding noise: it is measured against the whole gradient, not its own)."""
    import torch

    scale = max(1.0, float(ref["logits"].abs().max()))
    logits = float((got["logits"] - ref["logits"]).abs().max()) / scale
    missing = sorted(set(ref["grads"]) ^ set(got["grads"]))
    names = sorted(set(ref["grads"]) & set(got["grads"]))
    total = max(float(torch.cat([ref["grads"][n].reshape(-1) for n in names]).norm()), 1e-12)
    diffs = {n: float((got["grads"][n] - ref["grads"][n]).norm()) / total for n in names}
    grads = float(torch.cat([(got["grads"][n] - ref["grads"][n]).reshape(-1) for n in names]).norm()) / total
    worst = max(diffs, key=lambda n: diffs[n])
    tol = TOLERANCES["fp32"]
    passed = not missing and logits <= tol["logits"] and grads <= tol["update"] and bool(torch.isfinite(got["logits"]).all())
    return {"passed": passed, "logits_rel_diff": logits, "grads_rel_diff": grads, "worst_grad": worst,
            "worst_grad_diff_over_total": diffs[worst], "loss": [ref["loss"], got["loss"]], "grads_only_on_one_side": missing}


def two_stage_step(device: Any, amp: str | None = None, channels_last: bool = False, seed: int = 0,
                   ddp: Any = None, max_tries: int = 8) -> dict[str, Any]:
    """One TwoStageStep of the tiny "ours" model from a fixed start on a fixed batch; the loss, the meta loss
    and each parameter's update (after - before) as CPU tensors. amp: None (fp32, TF32 off), "bf16", "fp16"
    (with a GradScaler; a step the scaler skips for inf gradients is tried again from the same start at its
    lowered scale, as training's first steps would). ddp: a wrapper (model -> DDP(model)) or None."""
    import torch

    from train.optim import OptimConfig, build_optimizers
    from train.two_stage import TwoStageStep

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    scale = None
    for attempt in range(1, max_tries + 1):
        model = tiny_model(seed).train()
        images, ids, joint, local = tiny_batch(seed)
        model, x = place(model, images, device, channels_last)
        before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
        main_opt, theta_opt = build_optimizers(model, OptimConfig(lr=0.05, backbone_lr=0.05))
        wrapped = ddp(model) if ddp is not None else model
        scaler = None
        if amp == "fp16":
            scaler = torch.amp.GradScaler(device.type, **({"init_scale": scale} if scale else {}))
        step = TwoStageStep(wrapped, main_opt, theta_opt, alpha=0.1, amp_dtype=dtype, scaler=scaler, seed=seed)
        with no_tf32():
            stats = step(x, ids.to(device), joint.to(device), local.to(device))
        if scaler is not None and scaler.get_scale() < (scale or 65536.0):  # the scaler skipped this step
            scale = scaler.get_scale()
            continue
        updates = {n: p.detach().float().cpu() - before[n] for n, p in model.named_parameters()}
        return {"loss": stats.loss, "meta_loss": stats.meta_loss, "updates": updates, "tries": attempt,
                "grad_scale": scaler.get_scale() if scaler is not None else None}
    raise RuntimeError(f"the GradScaler skipped {max_tries} steps in a row (inf/nan gradients down to scale {scale})")


def compare_steps(ref: dict[str, Any], got: dict[str, Any], mode: str) -> dict[str, Any]:
    import torch

    names = sorted(ref["updates"])
    u_ref = torch.cat([ref["updates"][n].reshape(-1) for n in names])
    u_got = torch.cat([got["updates"][n].reshape(-1) for n in names])
    update = float((u_got - u_ref).norm() / max(float(u_ref.norm()), 1e-12))
    loss = abs(got["loss"] - ref["loss"]) / max(1.0, abs(ref["loss"]))
    meta = None
    if ref["meta_loss"] is not None and got["meta_loss"] is not None:
        meta = abs(got["meta_loss"] - ref["meta_loss"]) / max(1.0, abs(ref["meta_loss"]))
    theta = [n for n in names if n.startswith("attention.")]
    theta_moved = bool(theta) and all(float(got["updates"][n].abs().max()) > 0 for n in theta)
    tol = TOLERANCES[mode]
    finite = bool(torch.isfinite(u_got).all())
    passed = finite and theta_moved and update <= tol["update"] and loss <= tol["loss"] and (meta is None or meta <= tol["loss"] * 10)
    return {"passed": passed, "update_rel_diff": update, "loss_rel_diff": loss, "meta_loss_rel_diff": meta,
            "theta_stepped": theta_moved, "loss": [ref["loss"], got["loss"]], "meta_loss": [ref["meta_loss"], got["meta_loss"]],
            "tries": got.get("tries"), "grad_scale": got.get("grad_scale"), "tolerance": tol}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_one_rank(device: Any, backend: str) -> dict[str, Any]:
    """NCCL (gloo on the CPU) with one rank: an all-reduce, then the two-stage step through DDP against the
    same step without it (one rank: DDP's gradient average is the identity, so they must agree)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        t = torch.arange(4.0, device=device)
        dist.all_reduce(t)
        reduced = t.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
        ids = [device.index or 0] if device.type == "cuda" else None
        plain = two_stage_step(device, None, device.type == "cuda")
        wrapped = two_stage_step(device, None, device.type == "cuda",
                                 ddp=lambda m: torch.nn.parallel.DistributedDataParallel(m, device_ids=ids))
    finally:
        dist.destroy_process_group()
    same = compare_steps(plain, wrapped, "fp32")
    return {"passed": reduced and same["passed"], "all_reduce": reduced, "backend": backend,
            "update_rel_diff": same["update_rel_diff"], "loss": same["loss"]}


def export_from_model(device: Any, out_dir: Path) -> dict[str, Any]:
    """Train one step on `device`, export the model (a copy) to ONNX and compare ONNX Runtime (CPU) with the
    model on `device` (fp32, TF32 off) within export/parity.py's tolerance."""
    import numpy as np
    import onnx
    import torch

    from erudite_edge.core.compare import compare_logits
    from erudite_edge.core.preprocess import PreprocessSpec
    from export.onnx_export import to_onnx
    from export.parity import FP32_REL_TOLERANCE, onnx_logits

    model = tiny_model(1).train().to(device)
    images, ids, joint, local = tiny_batch(1)
    from train.optim import OptimConfig, build_optimizers
    from train.two_stage import TwoStageStep

    main_opt, theta_opt = build_optimizers(model, OptimConfig(lr=0.05, backbone_lr=0.05))
    TwoStageStep(model, main_opt, theta_opt, alpha=0.1, seed=1)(images.to(device), ids.to(device), joint.to(device), local.to(device))
    graph = model.eval().inference_graph()
    batch = tiny_batch(2)[0].numpy().astype(np.float32)
    with torch.inference_mode(), no_tf32():
        ref = graph(torch.from_numpy(batch).to(device)).float().cpu().numpy()
    path = out_dir / "model.onnx"
    onnx.save(to_onnx(copy.deepcopy(graph), PreprocessSpec.square(SIZE)), str(path))  # to_onnx moves its module to the CPU
    got = onnx_logits(path, batch)
    agreement = compare_logits(ref, got, reference_name=f"pytorch on {device.type}", candidate_name="onnx fp32",
                               source="random inputs", rel_tolerance=FP32_REL_TOLERANCE)
    return {"passed": bool(agreement.passed), "max_abs_diff": float(agreement.max_abs_diff),
            "top1_agreement": float(agreement.top1_agreement), "onnx": str(path), "inputs": len(batch)}


def ort_providers(onnx_path: Path, out_dir: Path) -> dict[str, Any]:
    """This onnxruntime's providers; where it has the TensorRT EP, the runner set up for it fed 64 inputs."""
    import numpy as np
    import onnxruntime as ort

    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
    from erudite_edge.backends.ort_tensorrt_ep import tensorrt_ep_options
    from erudite_edge.core.fileio import sha256_file
    from erudite_edge.core.preprocess import PreprocessSpec

    providers = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers]
    if not gpu:
        raise Skip(f"this onnxruntime ({ort.__version__}) has no CUDA or TensorRT provider: {providers}")
    env = {"XDG_CACHE_HOME": str(out_dir / "xdg")}
    opts = tensorrt_ep_options("fp16", PreprocessSpec.square(SIZE), model_sha256=sha256_file(onnx_path), env=env)
    sizes: list[int] = []
    with OnnxRuntimeRunner(onnx_path, precision="fp16", trt_options=opts) as runner:
        original = runner.infer
        runner.infer = lambda b: (sizes.append(len(b)), original(b))[1]  # type: ignore[method-assign]
        out = runner.infer_chunked(np.random.default_rng(0).standard_normal((64, 3, SIZE, SIZE)).astype(np.float32))
        used = runner.describe()["providers"]
    return {"passed": max(sizes) <= 32 and out.shape[0] == 64 and bool(np.isfinite(out).all()), "available": providers,
            "session_providers": used, "chunks": sizes, "engine_cache": opts["trt_engine_cache_path"]}


def tensorrt_checks(onnx_path: Path, out_dir: Path) -> dict[str, Any]:
    """Where TensorRT, Polygraphy and pydantic import: the device layer, an FP16 engine of the exported model
    built by `export engine` with its check set, the runner fed 64 inputs, its close, the engine's sidecar."""
    need("tensorrt", "polygraphy", "pydantic", "onnxruntime")
    import numpy as np

    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
    from erudite_edge.backends.tensorrt.device_memory import open_device
    from erudite_edge.backends.tensorrt.runner import TensorRTRunner, tensorrt_version
    from erudite_edge.cli.app import main as cli
    from erudite_edge.core.bundle import Bundle
    from erudite_edge.core.check_set import write_check_set
    from erudite_edge.core.labels import LabelSpace
    from erudite_edge.core.preprocess import PreprocessSpec
    from erudite_edge.errors import BackendUnavailable

    try:
        facts: dict[str, Any] = {"tensorrt": tensorrt_version()}
    except BackendUnavailable as e:  # `tensorrt` imports but is not TensorRT (type stubs, a namespace package)
        raise Skip(str(e)) from e
    device = open_device()
    facts["cuda_runtime"] = device.runtime.line
    labels = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["p", "q", "r", "s"]])
    root = out_dir / "bundle"
    bundle = Bundle.create(root, labels=labels, preprocess=PreprocessSpec.square(SIZE), kind="erudite", variant="ours",
                           backbone="tiny", opset=17)
    shutil.copyfile(onnx_path, root / "model.onnx")
    bundle.add_model("main", "fp32", "model.onnx")
    inputs = np.random.default_rng(3).standard_normal((64, 3, SIZE, SIZE)).astype(np.float32)

    def fp32(role: str, x: Any) -> Any:
        with OnnxRuntimeRunner(root / "model.onnx", providers=["CPUExecutionProvider"]) as r:
            return r.infer(x)

    write_check_set(bundle, inputs, "gpu_smoke random inputs", False, fp32)
    bundle.save()
    rc = cli(["export", "engine", "--bundle", str(root), "--precision", "fp16"])
    facts["export_engine_rc"] = rc
    if rc != 0:
        return {"passed": False, **facts}
    facts["check_rc"] = cli(["check", str(root), "--backend", "tensorrt", "--precision", "fp16"])
    bundle = Bundle.load(root)
    runner = TensorRTRunner.from_bundle(bundle, "main", "fp16")
    sizes: list[int] = []
    original = runner.infer
    runner.infer = lambda b: (sizes.append(len(b)), original(b))[1]  # type: ignore[method-assign]
    out = runner.infer_chunked(inputs)
    facts.update(chunks=sizes, max_batch=runner.max_batch, describe={k: str(v) for k, v in runner.describe().items()})
    runner.close()
    runner.close()  # idempotent
    try:
        original(inputs[:1])
        facts["use_after_close"] = "no error"
    except Exception as e:  # what it raises is the runner's to say; a crash would not get here
        facts["use_after_close"] = first_line(e)
    sidecars = sorted(glob.glob(str(root / "**" / "*.engine.json"), recursive=True))
    facts["sidecar"] = json.loads(Path(sidecars[0]).read_text()) if sidecars else None
    passed = (facts["check_rc"] == 0 and out.shape[0] == 64 and bool(np.isfinite(out).all())
              and (runner.max_batch is None or max(sizes) <= runner.max_batch) and facts["use_after_close"] != "no error")
    return {"passed": passed, **facts}


# -- the run ---------------------------------------------------------------------------------------------
class Run:
    def __init__(self, budget: float):
        self.checks: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.budget = budget

    def check(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        t0 = time.monotonic()
        entry: dict[str, Any] = {"name": name}
        if t0 - self.started > self.budget:
            entry.update(status="skip", why=f"over the time budget ({self.budget:.0f} s)")
        else:
            try:
                values = fn()
                entry.update(status="pass" if values.pop("passed") else "fail", values=values)
            except Skip as e:
                entry.update(status="skip", why=str(e))
            except Exception as e:  # a check that breaks is a failed check, reported; the run goes on
                entry.update(status="fail", error=first_line(e), traceback=traceback.format_exc().splitlines()[-12:])
        entry["seconds"] = round(time.monotonic() - t0, 2)
        self.checks.append(entry)
        detail = entry.get("why") or entry.get("error") or ""
        print(f"[{entry['status']}] {name} ({entry['seconds']} s){': ' + detail if detail else ''}", file=sys.stderr, flush=True)
        return entry.get("values")


def device_facts(torch: Any, device: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                     multiprocessors=p.multi_processor_count,
                     bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        with contextlib.suppress(Exception):
            facts["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    else:
        facts["name"] = "cpu (--allow-cpu: a test run, not a GPU check)"
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/gpu_smoke.py", description=__doc__.split("\n\n")[0])
    ap.error = lambda message: fail(f"{message} (tools/gpu_smoke.py --help)")  # type: ignore[method-assign]
    ap.add_argument("--out", type=Path, default=Path("gpu_smoke.json"), help="the JSON report (default ./gpu_smoke.json)")
    ap.add_argument("--wheels", type=Path, default=None, help="a folder of wheels to put on sys.path for this run")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds; checks not started by then are skipped")
    ap.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.wheels is not None and not args.wheels.is_dir():
        fail(f"--wheels {args.wheels}: not a folder")
    if args.budget <= 0:
        fail(f"--budget {args.budget}: a positive number of seconds")
    wheels = unpack_wheels(args.wheels) if args.wheels is not None else []
    try:
        import torch
    except Exception as e:
        fail(f"PyTorch is not importable here ({first_line(e)}): this script checks a machine with PyTorch and a CUDA GPU")
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", 0), "nccl"
        torch.cuda.set_device(device)
    elif args.allow_cpu:
        device, backend = torch.device("cpu"), "gloo"
    else:
        fail(f"no CUDA GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none; this script checks a GPU machine")
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    atexit.register(shutil.rmtree, work, True)
    cpu = torch.device("cpu")
    run = Run(args.budget)
    report: dict[str, Any] = {
        "tool": "tools/gpu_smoke.py", "made": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "platform": platform.platform(),
        "wheels": wheels, "imports": imports(), "device": device_facts(torch, device), "tolerances": TOLERANCES,
    }

    def cuda_device() -> dict[str, Any]:
        a = torch.randn(256, 256, device=device)
        with no_tf32():
            got = (a @ a).cpu()
        ref = a.cpu() @ a.cpu()
        diff = float((got - ref).abs().max() / ref.abs().max())
        return {"passed": diff < 1e-4, "matmul_rel_diff": diff, **report["device"]}

    run.check("cuda.device", cuda_device)
    run.check("model.forward_backward[fp32,channels_last]",
              lambda: compare_forward_backward(forward_backward(cpu), forward_backward(device, channels_last=True)))
    reference: dict[str, Any] = {}

    def step(amp: str | None) -> dict[str, Any]:
        if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise Skip(f"{report['device'].get('name')} has no native bf16 (training takes fp16 with a GradScaler there)")
        if "cpu" not in reference:
            reference["cpu"] = two_stage_step(cpu)
        return compare_steps(reference["cpu"], two_stage_step(device, amp, channels_last=True), amp or "fp32")

    for amp in (None, "bf16", "fp16"):
        run.check(f"two_stage.step[{amp or 'fp32'},channels_last]", lambda amp=amp: step(amp))
    run.check(f"ddp.{backend}_one_rank", lambda: ddp_one_rank(device, backend))

    exported: dict[str, Any] = {}

    def export() -> dict[str, Any]:
        need("onnx", "onnxscript", "onnxruntime")
        values = export_from_model(device, work)
        exported["path"] = Path(values["onnx"])
        return values

    run.check("export.onnx_from_gpu", export)

    def with_onnx(fn: Callable[[Path, Path], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            if "path" not in exported:
                raise Skip("no exported ONNX model (export.onnx_from_gpu did not pass)")
            return fn(exported["path"], work)
        return go

    def ort() -> dict[str, Any]:
        need("onnxruntime")
        return with_onnx(ort_providers)()

    run.check("ort.providers", ort)
    run.check("tensorrt.engine_check_runner", with_onnx(tensorrt_checks))
    counts = {s: sum(c["status"] == s for c in run.checks) for s in ("pass", "fail", "skip")}
    report.update(checks=run.checks, summary=counts, seconds=round(time.monotonic() - run.started, 1))
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"{PROG}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in "
          f"{report['seconds']} s on {report['device'].get('name')}; report {args.out}", file=sys.stderr)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
