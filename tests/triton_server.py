"""A real Triton Inference Server on 127.0.0.1 for the tests: the `tritonserver` binary (Triton 2.51, with the
Python backend) that the `nvidia-pytriton` wheel ships, from the separate environment `make triton-env` makes
(.venv-triton: numpy < 2, never the project's venv; ERUDITE_TRITON_ENV names another).

What it takes to run that binary outside its own launcher (measured, issue 28):
- --backend-directory holding a copy of the wheel's backends/python with the Python 3.11
  `triton_python_backend_stub` beside it;
- LD_LIBRARY_PATH with the wheel's `nvidia_pytriton.libs` and the environment interpreter's own shared
  libpython folder (the system's libpython3.11 may be older than the standard library it would run with);
- the model's Python environment: EXECUTION_ENV_PATH in its config.pbtxt naming .venv-triton (the stub
  activates it; `export triton --kind classifier --execution-env`), which the tests use. Without it the
  stub's embedded Python finds its prefix from the `python3` first on PATH (PYTHONPATH does not reach it)
  and fails with "No module named 'numpy'" where that is not an environment with numpy < 2;
- --allow-gpu-metrics=false (no GPU here), and clients closed before SIGTERM, else the server waits
  --exit-timeout-secs for their connections and exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from paths import REPO
from real_processes import free_port

TRITON_ENV = Path(os.environ.get("ERUDITE_TRITON_ENV", REPO / ".venv-triton"))


def _site(env: Path) -> Path:
    return env / "lib" / "python3.11" / "site-packages"


def unavailable() -> str | None:
    """Why the real server cannot run here (None: it can)."""
    server = _site(TRITON_ENV) / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not server.is_file():
        return (f"no tritonserver at {server}: `make triton-env` makes {TRITON_ENV} (nvidia-pytriton 0.7.0, "
                "Python 3.11, x86-64 or aarch64 Linux)")
    probe = subprocess.run([str(TRITON_ENV / "bin" / "python"), "-c", "import tritonclient.grpc, tritonclient.http"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return f"tritonclient's HTTP/gRPC clients do not import in {TRITON_ENV}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def _env_python_libdir(env: Path) -> str:
    out = subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


class TritonServer:
    """`tritonserver` serving `repository` on free 127.0.0.1 ports; `work` holds its backend folder and log."""

    def __init__(self, repository: Path, work: Path, *extra: str):
        self.repository, self.work, self.extra = repository, work, extra
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "TritonServer":
        wheel = _site(TRITON_ENV) / "pytriton" / "tritonserver"
        backends = self.work / "backends"
        if not backends.exists():
            shutil.copytree(wheel / "backends" / "python", backends / "python")
            shutil.copy2(wheel / "python_backend_stubs" / "3.11" / "triton_python_backend_stub", backends / "python")
        env = dict(os.environ)
        libs = [str(_site(TRITON_ENV) / "nvidia_pytriton.libs"), _env_python_libdir(TRITON_ENV)]
        env["LD_LIBRARY_PATH"] = ":".join(libs + [p for p in [os.environ.get("LD_LIBRARY_PATH", "")] if p])
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        cmd = [str(wheel / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={backends}", "--allow-gpu-metrics=false", "--allow-metrics=false",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
               "--exit-timeout-secs=10", *self.extra]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.work, start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def wait_model_ready(self, model: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._get(f"/v2/models/{model}/ready") == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"model {model} not ready in {timeout} s:\n{self.log()[-4000:]}")

    def index(self) -> list[dict]:
        """The repository index: each model's name, version, state and reason."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (kills the group and fails when it does not exit)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise
        self._log.close()
        return self.proc.returncode
