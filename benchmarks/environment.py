"""What the machine was when a benchmark ran: the record MLPerf asks every result to carry.

`environment()` returns a dict with every key of ENV_KEYS, each a value or None when this machine
cannot tell (never missing), so two results can be compared key by key:

* CPU: model, logical cores, the cores this process may use, the frequency governor, load average;
  memory; OS, kernel, Python.
* Runtimes: ONNX Runtime (and its providers), TensorRT, CUDA runtime (version and the libcudart file, from
  the device-memory layer), the newest CUDA the driver supports, cuDNN, GPU driver, GPU name.
* Jetson: device model, L4T release (/etc/nv_tegra_release), JetPack, nvpmodel mode, whether
  jetson_clocks is on, board power draw. From jetson-stats (`jtop`, its service must run) where it
  is installed; without it from /etc/nv_tegra_release, `dpkg-query nvidia-jetpack`, `nvpmodel -q` and
  the INA3221 power monitor in sysfs. jetson_clocks needs jtop (the script itself wants root).

`PowerMeter` reads the board's input power (mW) where a monitor is readable; the bench samples it
while a model runs to give energy per image.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata as md
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

ENV_KEYS = (
    "os", "kernel", "machine", "python",
    "cpu_model", "cpu_cores", "cpu_cores_usable", "cpu_governor", "load_average", "memory_total_mb",
    "onnxruntime", "onnxruntime_providers", "tensorrt", "cuda_runtime", "cuda_runtime_library", "cuda_driver", "cudnn",
    "gpu_driver", "gpu_name",
    "device_model", "l4t_release", "jetpack", "nvpmodel_mode", "jetson_clocks", "power_mw", "power_source",
    "jetson_stats",
)

_Reader = Callable[[str], "str | None"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def cpu_model(read: _Reader = _read) -> str | None:
    info = read("/proc/cpuinfo") or ""
    for key in ("model name", "hardware", "cpu model", "model"):
        for line in info.splitlines():
            k, _, v = line.partition(":")
            if k.strip().lower() == key and v.strip():
                return v.strip()
    return platform.processor() or None


def l4t_release(read: _Reader = _read) -> str | None:
    """'R35.4.1' from '# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ...'."""
    text = read("/etc/nv_tegra_release")
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else text.splitlines()[0].lstrip("# ").strip()


def nvpmodel_mode(run: Callable[[list[str]], str | None] = _run) -> str | None:
    """'MAXN (0)' from `nvpmodel -q` ('NV Power Mode: MAXN' then the mode id)."""
    out = run(["nvpmodel", "-q"])
    if not out:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", out)
    ids = [ln.strip() for ln in out.splitlines() if ln.strip().isdigit()]
    if m:
        return f"{m.group(1)} ({ids[0]})" if ids else m.group(1)
    return out.splitlines()[0]


class PowerMeter:
    """The board's input power from the INA3221 monitor of a Jetson, in mW (None where unreadable).

    Newer kernels (Orin, JetPack 5+): hwmon in{N}_label / in{N}_input (mV) / curr{N}_input (mA);
    older ones (Nano, TX2, Xavier): iio in_power{N}_input (mW) with rail_name_{N}. The rail named
    VDD_IN / POM_5V_IN (the module's input) is used when present, else the sum of the rails."""

    INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")

    def __init__(self, root: str = "/sys/bus/i2c/drivers") -> None:
        self.rails: dict[str, Callable[[], float | None]] = {}
        for hw in glob.glob(f"{root}/ina3221*/*/hwmon/hwmon*"):
            for label_path in glob.glob(f"{hw}/in*_label"):
                n = re.sub(r"\D", "", Path(label_path).name)
                name = _read(label_path)
                volt, curr = f"{hw}/in{n}_input", f"{hw}/curr{n}_input"
                if name and os.path.exists(volt) and os.path.exists(curr):
                    self.rails[name] = functools.partial(_mul_mw, volt, curr)
        for dev in glob.glob(f"{root}/ina3221x/*/iio:device*"):
            for name_path in glob.glob(f"{dev}/rail_name_*"):
                n = name_path.rsplit("_", 1)[-1]
                name = _read(name_path)
                power = f"{dev}/in_power{n}_input"
                if name and os.path.exists(power):
                    self.rails[name] = functools.partial(_read_mw, power)
        self.source = next((r for r in self.INPUT_RAILS if r in self.rails), "sum of rails" if self.rails else None)

    @property
    def available(self) -> bool:
        return self.source is not None and self.read() is not None

    def read(self) -> float | None:
        if self.source is None:
            return None
        if self.source in self.rails:
            return self.rails[self.source]()
        vals = [f() for f in self.rails.values()]
        return sum(v for v in vals if v is not None) if any(v is not None for v in vals) else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _read_mw(path: str) -> float | None:
    return _float(_read(path))


def _mul_mw(volt_path: str, curr_path: str) -> float | None:
    v, c = _float(_read(volt_path)), _float(_read(curr_path))
    return None if v is None or c is None else v * c / 1000.0  # mV * mA / 1000 = mW


def _jtop_facts() -> dict[str, Any]:
    """nvpmodel, jetson_clocks, power, JetPack and library versions from jetson-stats' service."""
    if importlib.util.find_spec("jtop") is None:
        return {}
    out: dict[str, Any] = {"jetson_stats": _version("jetson-stats")}
    try:
        from jtop import jtop  # type: ignore[import-not-found]

        with jtop() as j:
            if not j.ok():
                return out
            nvp = getattr(j, "nvpmodel", None)
            out["nvpmodel_mode"] = str(nvp) if nvp is not None else None
            jc = getattr(j, "jetson_clocks", None)
            if jc is not None:
                status = getattr(jc, "status", None)
                out["jetson_clocks"] = (status == "running") if isinstance(status, str) else bool(jc)
            tot = (getattr(j, "power", None) or {}).get("tot") or {}
            if tot.get("power") is not None:
                out["power_mw"], out["power_source"] = float(tot["power"]), "jtop tot"
            board = getattr(j, "board", None) or {}
            hw = board.get("hardware") or {}
            libs = board.get("libraries") or {}
            out.update({k: v for k, v in {"jetpack": hw.get("Jetpack"), "l4t_release": hw.get("L4T"),
                                          "device_model": hw.get("Model"), "cuda_runtime": libs.get("CUDA"),
                                          "cudnn": libs.get("cuDNN"), "tensorrt": libs.get("TensorRT")}.items() if v})
    except Exception:  # the service not running, an older jtop: the sysfs readers below stand in
        pass
    return out


def _cuda_facts() -> dict[str, Any]:
    """The CUDA runtime's version and file and the newest CUDA the driver supports, from the device-memory
    layer (polygraphy.cuda over libcudart: erudite_edge/backends/tensorrt/device_memory.py; no GPU needed),
    and the GPU's name where a device opens; {} where the layer (Polygraphy) or a runtime library is missing."""
    from erudite_edge.backends.tensorrt import device_memory
    from erudite_edge.errors import EruditeError

    out = dict(device_memory.runtime_facts())
    if out:
        try:
            out["gpu_name"] = device_memory.open_device().device_info().name
        except EruditeError:  # no GPU or driver: the versions stand, the name comes from nvidia-smi if anywhere
            pass
    return out


def _nvidia_smi() -> dict[str, Any]:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return {}
    name, _, driver = out.splitlines()[0].partition(",")
    return {"gpu_name": name.strip() or None, "gpu_driver": driver.strip() or None}


def _ort() -> tuple[str | None, list[str] | None]:
    if importlib.util.find_spec("onnxruntime") is None:
        return None, None
    try:
        import onnxruntime as ort

        return ort.__version__, list(ort.get_available_providers())
    except Exception:
        return _version("onnxruntime", "onnxruntime-gpu"), None


def _tensorrt() -> str | None:
    v = _version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_lean", "nvidia-tensorrt")
    if v is None and importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt  # type: ignore[import-not-found]

            v = getattr(tensorrt, "__version__", None)
        except Exception:
            v = None
    return v


def environment(power: PowerMeter | None = None) -> dict[str, Any]:
    """Every key of ENV_KEYS, None where unknown."""
    env: dict[str, Any] = dict.fromkeys(ENV_KEYS)
    env.update(os=f"{platform.system()} {platform.release()}".strip() or None, kernel=platform.version() or None,
               machine=platform.machine() or None, python=platform.python_version())
    env["cpu_model"] = cpu_model()
    env["cpu_cores"] = os.cpu_count()
    try:
        env["cpu_cores_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        env["cpu_cores_usable"] = env["cpu_cores"]
    env["cpu_governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        pass
    mem = _read("/proc/meminfo") or ""
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", mem)
    env["memory_total_mb"] = round(int(m.group(1)) / 1024, 1) if m else None
    env["onnxruntime"], env["onnxruntime_providers"] = _ort()
    env["tensorrt"] = _tensorrt()
    cudnn = _version("nvidia-cudnn-cu12", "nvidia-cudnn-cu11")
    env["cudnn"] = cudnn
    cuda_json = _read("/usr/local/cuda/version.json")
    if cuda_json:
        m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([^"]+)"', cuda_json)
        env["cuda_runtime"] = m.group(1) if m else None
    nvd = _read("/proc/driver/nvidia/version")
    if nvd:
        m = re.search(r"Kernel Module(?: for \S+)?\s+([\d.]+)", nvd)
        env["gpu_driver"] = m.group(1) if m else None
    env.update({k: v for k, v in _nvidia_smi().items() if v})
    env.update({k: v for k, v in _cuda_facts().items() if k in ENV_KEYS and v})
    env["device_model"] = _read("/proc/device-tree/model")
    env["l4t_release"] = l4t_release()
    if env["l4t_release"]:
        env["gpu_driver"] = env["gpu_driver"] or f"L4T {env['l4t_release']}"  # the Jetson's GPU driver ships with L4T
        env["jetpack"] = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
        env["nvpmodel_mode"] = nvpmodel_mode()
    meter = power if power is not None else PowerMeter()
    if meter.source is not None:
        env["power_mw"], env["power_source"] = meter.read(), f"ina3221 {meter.source}"
    env.update({k: v for k, v in _jtop_facts().items() if k in ENV_KEYS and v is not None})
    return {k: env.get(k) for k in ENV_KEYS}
