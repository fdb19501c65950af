"""Triton clients for the serving tests, run by the Triton environment's Python (tests/triton_server.py
TRITON_ENV): tritonclient's gRPC client needs protobuf < 7, which the project's venv does not have, so the
clients run beside the server's environment, in their own process, as a user's client would.

    .venv-triton/bin/python tests/triton_client.py < job.json > answers.json

job: {"protocol": "http" | "grpc", "url": "127.0.0.1:PORT", "model": NAME, "concurrency": N,
      "requests": [{"images": [PATH, ...]} | {"frames": [PATH, ...]} | {"images": [PATH], "shape": [1]}, ...]}
Each request is sent as one inference (IMAGE [n, 1] BYTES of the files' bytes; "frames": FRAME [n, H, W, 3]
uint8 RGB decoded here; "shape": IMAGE sent with that shape instead). Up to `concurrency` requests are in
flight at once, one client per thread. Answers, in request order: {"labels", "datasets", "scores",
"class_ids", "mass"} (lists per image) or {"error": message, "status": the HTTP status / gRPC code}.
Every client is closed before the process exits (the server's SIGTERM then finds no open connection).
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def _client(protocol: str, url: str) -> Any:
    if protocol == "http":
        import tritonclient.http as client
    else:
        import tritonclient.grpc as client  # type: ignore[no-redef]
    return client, client.InferenceServerClient(url)


def _input(client: Any, req: dict[str, Any]) -> Any:
    if "frames" in req:
        import cv2

        frames = np.stack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in req["frames"]])
        inp = client.InferInput("FRAME", list(frames.shape), "UINT8")
        inp.set_data_from_numpy(frames)
        return inp
    data = [open(p, "rb").read() for p in req["images"]]
    arr = np.array(data, dtype=np.object_).reshape(req.get("shape", [len(data), 1]))  # BYTES: np.object_, not np.bytes_
    inp = client.InferInput("IMAGE", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return inp


def _strings(a: np.ndarray) -> list[list[str]]:
    return [[v.decode("utf-8") for v in row] for row in a]


def main() -> None:
    job = json.load(sys.stdin)
    local = threading.local()
    clients: list[Any] = []
    lock = threading.Lock()

    def send(req: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(local, "client"):
            local.module, local.client = _client(job["protocol"], job["url"])
            with lock:
                clients.append(local.client)
        module, client = local.module, local.client
        outputs = [module.InferRequestedOutput(n) for n in ("LABELS", "DATASETS", "SCORES", "CLASS_IDS", "DATASET_MASS")]
        try:
            r = client.infer(job["model"], [_input(module, req)], outputs=outputs)
        except Exception as e:  # tritonclient.utils.InferenceServerException
            return {"error": str(e.message() if hasattr(e, "message") else e), "status": str(getattr(e, "status", lambda: "")())}
        return {"labels": _strings(r.as_numpy("LABELS")), "datasets": _strings(r.as_numpy("DATASETS")),
                "scores": r.as_numpy("SCORES").tolist(), "class_ids": r.as_numpy("CLASS_IDS").tolist(),
                "mass": r.as_numpy("DATASET_MASS").tolist()}

    try:
        with ThreadPoolExecutor(max_workers=int(job.get("concurrency", 1))) as pool:
            answers = list(pool.map(send, job["requests"]))
    finally:
        for c in clients:
            c.close()
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
