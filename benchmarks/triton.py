"""`erudite-edge bench --triton URL --model NAME`: the classifier model (`export triton --kind classifier`) served
by a running Triton server, measured from the client, against the same bundle's in-process `Classifier`.

Client: KServe v2 over HTTP with Triton's binary tensor extension (http.client, one keep-alive connection per
client thread; no tritonclient, whose gRPC half needs protobuf < 7). Each request carries one encoded image
(IMAGE [1, 1] BYTES), as perf_analyzer's default request does.

Timing (perf_analyzer's way: time windows, not call counts): `rounds` rounds; in each, every series runs for
`window_s` seconds, in the same order: in-process predict of one image, in-process predict of 8, then the
server at each concurrency (that many client threads, each sending its next request when the last one is
answered). Every request's latency is kept with its round (raw samples: benchmarks/raw.py), so p50/p90/p99
(with n) and their intervals come from the same numbers; throughput is per round, images/s. For each
concurrency the server's statistics extension (before/after) splits a request's time on the server into
queue, compute input, compute infer (the Python stub running the Classifier) and compute output; what is
left of the client's latency is the network, (de)serialisation and the HTTP server.

Each series' machine load is recorded (benchmarks/load.py): a run on a busy machine is labelled "under load",
and no goal is judged from it. A server on this machine (HOST resolves to a loopback address) is the run's own
work, not other work: its processes (the one listening on PORT, or `--server-pid PID`, and their children, the
Python backend's stubs) are found (benchmarks/server_processes.py), their CPU time is counted with the bench's
own and their pids are recorded.
"""

from __future__ import annotations

import http.client
import json
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.latency import Samples, summarize
from benchmarks.load import LoadRecord, load_summary, snapshot
from benchmarks.raw import RawSamples, quantise, write_result
from benchmarks.server_processes import find_server
from benchmarks.stats import percentile_ci
from erudite_edge.errors import UsageError

GOAL_P50_GAP_MS = 2.0  # issue 28: the served p50 at concurrency 1 within 2 ms of in-process predict of one image


@dataclass(frozen=True)
class TritonBenchOptions:
    url: str  # host:port of Triton's HTTP endpoint
    model: str = "erudite_classifier"
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    rounds: int = 5
    window_s: float = 1.0  # per series and round
    warmup_s: float = 0.5  # per series, before the first round
    batch: int = 8  # the in-process batch the served throughput is compared with
    server_pid: int | None = None  # the local server's main process (default: whatever listens on the port)

    def checked(self) -> "TritonBenchOptions":
        if not self.concurrency or min(self.concurrency) < 1:
            raise UsageError(f"--concurrency {self.concurrency}: 1 or more clients each")
        if self.rounds < 1 or self.window_s <= 0:
            raise UsageError("--rounds must be 1 or more and the window above 0 s")
        if ":" not in self.url or "/" in self.url or not self.url.rsplit(":", 1)[1].isdigit():
            raise UsageError(f"--triton {self.url}: give Triton's HTTP endpoint as HOST:PORT, e.g. 127.0.0.1:8000")
        return self


class V2Client:
    """One keep-alive HTTP connection speaking KServe v2 inference with binary IMAGE data."""

    def __init__(self, url: str, timeout: float = 30.0):
        host, port = url.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        return r.status, r.read()

    def infer(self, model: str, image: bytes) -> dict[str, Any]:
        """Classify one encoded image; the response's JSON (its outputs as JSON data). RuntimeError on an error."""
        payload = struct.pack("<I", len(image)) + image
        header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(payload)}}],
                             "outputs": [{"name": "LABELS"}, {"name": "SCORES"}]}).encode()
        status, body = self.request("POST", f"/v2/models/{model}/infer", header + payload,
                                    {"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"})
        if status != 200:
            raise RuntimeError(f"Triton answered HTTP {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)

    def stats(self, model: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v2/models/{model}/stats")
        if status != 200:
            raise RuntimeError(f"statistics of {model}: HTTP {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)["model_stats"][0]

    def close(self) -> None:
        self.conn.close()


STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def server_split(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Mean milliseconds per request in each server stage between two statistics readings, and the batch sizes
    the server executed (how many executions of each)."""
    a, b = before["inference_stats"], after["inference_stats"]
    n = int(b["success"]["count"]) - int(a["success"]["count"])
    out: dict[str, Any] = {"requests": n}
    for stage in ("success", *STAGES):
        ns = int(b[stage]["ns"]) - int(a[stage]["ns"])
        out[f"{stage}_ms"] = round(ns / n / 1e6, 4) if n else None
    counts_before = {s["batch_size"]: int(s["compute_infer"]["count"]) for s in before.get("batch_stats", [])}
    out["batches"] = {str(s["batch_size"]): int(s["compute_infer"]["count"]) - counts_before.get(s["batch_size"], 0)
                      for s in after.get("batch_stats", [])
                      if int(s["compute_infer"]["count"]) > counts_before.get(s["batch_size"], 0)}
    return out


def settled_split(client: V2Client, model: str, before: dict[str, Any], sent: int, wait_s: float = 1.0) -> dict[str, Any]:
    """server_split once the statistics hold every request the client was answered (Triton records an execution's
    statistics after it sends the responses, so a reading right after the last answer can miss it)."""
    deadline = time.perf_counter() + wait_s
    while True:
        split = server_split(before, client.stats(model))
        executed = sum(int(b) * n for b, n in split["batches"].items())
        if (split["requests"] >= sent and executed >= split["requests"]) or time.perf_counter() > deadline:
            return split
        time.sleep(0.005)


def _served_window(opts: TritonBenchOptions, clients: list[V2Client], images: Sequence[bytes], seconds: float,
                   offset: int) -> tuple[list[float], float]:
    """`len(clients)` threads sending one image per request for `seconds`: every latency (ms) and the wall time."""
    lat: list[list[float]] = [[] for _ in clients]
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        k = offset + i
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                clients[i].infer(opts.model, images[k % len(images)])
                lat[i].append((time.perf_counter() - t0) * 1e3)
                k += len(clients)
        except BaseException as e:  # handed to the caller
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [v for per in lat for v in per], wall


def _local_window(step: Callable[[int], None], per_call: int, seconds: float, offset: int) -> tuple[list[float], float]:
    lat: list[float] = []
    t0 = time.perf_counter()
    k = offset
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        step(k)
        lat.append((time.perf_counter() - t) * 1e3)
        k += per_call
    return lat, time.perf_counter() - t0


def p50_gap_ci(served: Sequence[Sequence[float]], local: Sequence[Sequence[float]], seed: int = 0,
               resamples: int = 2000) -> tuple[float, float] | None:
    """95 % interval of p50(served) - p50(local), rounds resampled together (both sides ran in each round)."""
    pairs = [(s, m) for s, m in zip(served, local) if s and m]
    if len(pairs) < 2:
        return None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(pairs), len(pairs))
        diffs.append(np.percentile(np.concatenate([pairs[i][0] for i in idx]), 50)
                     - np.percentile(np.concatenate([pairs[i][1] for i in idx]), 50))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class _Series:
    samples: Samples = field(default_factory=Samples)
    server: list[dict[str, Any]] = field(default_factory=list)


def run_triton_bench(opts: TritonBenchOptions, classifier: Any, images: Sequence[bytes],
                     log: Callable[[str], None] = lambda m: None) -> tuple[dict[str, Any], RawSamples]:
    """Measure; returns the result (JSON-ready) and its raw samples. `classifier`: the in-process Classifier of
    the bundle the server's model holds."""
    opts = opts.checked()
    if not images:
        raise UsageError("no images to send: give --source with readable images")
    host, port = opts.url.rsplit(":", 1)
    server = find_server(host, int(port), opts.server_pid, warn=log)
    probe = V2Client(opts.url)
    try:
        first = probe.infer(opts.model, images[0])  # also: the model is there and answers
        local_first = classifier.predict([images[0]])[0]
        served_label = first["outputs"][0]["data"][0]
        if served_label != local_first.topk[0].label:
            log(f"warning: the server's top-1 for the first image is {served_label!r}, in-process "
                f"{local_first.topk[0].label!r}: is {opts.model} exported from this bundle?")
    finally:
        probe.close()
    names = ["in-process b1", f"in-process b{opts.batch}"] + [f"triton c{c}" for c in opts.concurrency]
    series = {n: _Series() for n in names}
    clients = {c: [V2Client(opts.url) for _ in range(c)] for c in opts.concurrency}
    stats_client = V2Client(opts.url)
    batch_of = [list(images[i:i + opts.batch]) for i in range(0, len(images), opts.batch)]
    batch_of = [b for b in batch_of if len(b) == opts.batch] or [[images[i % len(images)] for i in range(opts.batch)]]

    def local1(k: int) -> None:
        classifier.predict([images[k % len(images)]])

    def localb(k: int) -> None:
        classifier.predict(batch_of[(k // opts.batch) % len(batch_of)])

    def window(name: str, seconds: float, r: int) -> tuple[list[float], float, dict[str, Any] | None]:
        if name == "in-process b1":
            lat, wall = _local_window(local1, 1, seconds, r)
            return lat, len(lat) / wall, None
        if name.startswith("in-process"):
            lat, wall = _local_window(localb, opts.batch, seconds, r)
            return lat, len(lat) * opts.batch / wall, None
        c = int(name.split("c")[-1])
        before = stats_client.stats(opts.model)
        lat, wall = _served_window(opts, clients[c], images, seconds, r)
        return lat, len(lat) / wall, settled_split(stats_client, opts.model, before, len(lat))

    try:
        for name in names:  # warm-up
            window(name, opts.warmup_s, 0)
            series[name].samples.warmup_calls = 1
        a = snapshot(server)  # the timed rounds' load, one record for all series (they were interleaved)
        for r in range(opts.rounds):
            for name in names:
                lat, ips, split = window(name, opts.window_s, r)
                s = series[name]
                s.samples.round_latency_ms.append(lat)
                s.samples.round_ips.append(ips)
                s.samples.duration_s += opts.window_s
                if split is not None:
                    s.server.append(split)
            log(f"round {r + 1}/{opts.rounds} done")
        rec = LoadRecord.between(a, snapshot(server)).to_dict()
        for s in series.values():
            s.samples.load = rec
    finally:
        for cs in clients.values():
            for cl in cs:
                cl.close()
        stats_client.close()

    raw = RawSamples("triton")
    for name, sr in series.items():
        quantise(sr.samples)
        raw.series[name] = sr.samples
        if sr.server:
            raw.values.setdefault("server", {})[name] = sr.server
    settings = {"batch": opts.batch, "concurrency": list(opts.concurrency), "rounds": opts.rounds,
                "window_s": opts.window_s, "warmup_s": opts.warmup_s}
    result = {"kind": "triton", "url": opts.url, "model": opts.model, "images": len(images),
              "server_processes": None if server is None else server.found_by,
              "backend": classifier.backend, "precision": classifier.precision, "settings": settings,
              **derive(raw, settings)}
    return result, raw


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure the result publishes, from its raw samples (`python -m benchmarks.recompute` runs this again)."""
    batch = int(settings.get("batch", 8))
    rows: dict[str, Any] = {}
    server = raw.values.get("server", {})
    for name, samples in raw.series.items():
        samples.latency_ms = [v for rr in samples.round_latency_ms for v in rr]
        st = summarize(samples, batch if name == f"in-process b{batch}" else 1).to_dict()
        ci = percentile_ci(samples.round_latency_ms, 50)
        st["p50_ci_ms"] = None if ci is None else [round(ci.lo, 4), round(ci.hi, 4)]
        windows = server.get(name)
        if windows:
            split: dict[str, Any] = {"requests": sum(x["requests"] for x in windows)}
            for key in [f"{stage}_ms" for stage in ("success", *STAGES)]:
                vals = [x[key] for x in windows if x[key] is not None]
                split[key] = round(statistics.fmean(vals), 4) if vals else None
            batches: dict[str, int] = {}
            for x in windows:
                for b, n in x["batches"].items():
                    batches[b] = batches.get(b, 0) + n
            split["batches"] = dict(sorted(batches.items(), key=lambda kv: int(kv[0])))
            st["server"] = split
        rows[name] = st
    load = load_summary(raw.load_records())
    out: dict[str, Any] = {"series": rows, "load": load, "p50_gap_c1_ms": None}
    if "triton c1" in raw.series and "in-process b1" in raw.series:
        gap = p50_gap_ci(raw.series["triton c1"].round_latency_ms, raw.series["in-process b1"].round_latency_ms)
        if gap is not None:
            out["p50_gap_c1_ms"] = {
                "value": round(rows["triton c1"]["p50_ms"] - rows["in-process b1"]["p50_ms"], 4),
                "ci": [round(gap[0], 4), round(gap[1], 4)], "goal_ms": GOAL_P50_GAP_MS,
                "verdict": ("not judged: under load" if not load["quiet"] else "PASS" if gap[1] <= GOAL_P50_GAP_MS
                            else "FAIL" if gap[0] > GOAL_P50_GAP_MS else "UNDECIDED")}
    return out


def markdown(result: dict[str, Any], command: str) -> str:
    rows = result["series"]
    lines = [f"# Triton classifier model against in-process Classifier ({result['load']['label']})", "",
             f"`{command}`", "",
             f"Model {result['model']} at {result['url']}; in-process: {result['backend']} {result['precision']}; "
             f"{result['images']} images, {result['settings']['rounds']} rounds of {result['settings']['window_s']:.3f} s "
             "per series (raw samples beside this file: `python -m benchmarks.recompute triton.json`).", "",
             "| series | n | p50 ms (95 % CI) | p90 ms | p99 ms | images/s | server: queue / input / infer / output ms "
             "| batches executed |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, st in rows.items():
        ci = st.get("p50_ci_ms")
        srv = st.get("server")
        split = "" if not srv else " / ".join(f"{srv[f'{k}_ms']}" for k in STAGES)
        batches = "" if not srv else ", ".join(f"{b}: {n}" for b, n in srv["batches"].items())
        lines.append(f"| {name} | {st['n']} | {st['p50_ms']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {st['p90_ms']:.3f} | "
                     f"{st['p99_ms']:.3f} | {st['throughput_ips']:.1f} | {split} | {batches} |" if ci else
                     f"| {name} | {st['n']} | {st['p50_ms']:.3f} | {st['p90_ms']:.3f} | {st['p99_ms']:.3f} | "
                     f"{st['throughput_ips']:.1f} | {split} | {batches} |")
    counted = [r for r in result["load"]["series"] if r.get("server_pids")]
    if counted:
        lines += ["", f"The server's processes ({result.get('server_processes')}: pids "
                      f"{', '.join(str(p) for p in counted[0]['server_pids'])}) used "
                      f"{counted[0]['server_cpu_s']:.1f} s of CPU over the timed rounds, counted as the run's own "
                      "work (not other work)."]
    gap = result.get("p50_gap_c1_ms")
    if gap:
        lines += ["", f"p50 at concurrency 1 minus in-process p50 of one image: {gap['value']:.3f} ms "
                      f"(95 % CI {gap['ci'][0]:.3f} to {gap['ci'][1]:.3f}); goal <= {gap['goal_ms']} ms: {gap['verdict']}."]
    return "\n".join(lines) + "\n"


def bench_images(source: Path | None, limit: int | None) -> list[bytes]:
    """The encoded images the requests carry: --source's files as they are, else scikit-image's photos as JPEG."""
    if source is not None:
        from export.images import find_images

        files = find_images(source)[:limit] if limit else find_images(source)
        return [p.read_bytes() for p in files]
    import cv2

    from export.images import sample_photos

    photos = sample_photos()[:limit] if limit else sample_photos()
    return [cv2.imencode(".jpg", cv2.cvtColor(p, cv2.COLOR_RGB2BGR))[1].tobytes() for p in photos]


def triton_bench(opts: TritonBenchOptions, bundle: Path, backend: str, source: Path | None, limit: int | None,
                 out: Path, command: str, log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """The --triton bench: measure against the bundle's in-process Classifier, write triton.json/.md/samples."""
    from erudite_edge.api import Classifier

    images = bench_images(source, limit)
    try:
        with Classifier(bundle, backend=backend, batch=opts.batch) as clf:
            result, raw = run_triton_bench(opts, clf, images, log=log)
    except (ConnectionError, OSError) as e:
        raise UsageError(f"--triton {opts.url}: cannot reach Triton's HTTP endpoint ({e}); start the server or fix the address") from None
    except RuntimeError as e:
        raise UsageError(f"--triton {opts.url} --model {opts.model}: {e}") from None
    return write(result, raw, out, command)


def write(result: dict[str, Any], raw: RawSamples, out: Path, command: str) -> list[Path]:
    from erudite_edge.core.fileio import write_bytes_atomic

    out.mkdir(parents=True, exist_ok=True)
    result = dict(result, command=command)
    samples = write_result(out / "triton.json", result, raw)
    write_bytes_atomic(out / "triton.md", markdown(result, command).encode())
    return [out / "triton.json", samples, out / "triton.md"]
