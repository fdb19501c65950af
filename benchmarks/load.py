"""How loaded the machine was while a series ran: measured, not asserted.

A series (one interleaved run of the contenders at one batch size, an end-to-end measurement, a
study's timing) takes a `Snapshot` before and after; `LoadRecord.between` keeps

* the 1-minute load average before and after (os.getloadavg),
* this process's own CPU time (all its threads, and the child processes it started and waited for
  meanwhile: a study that times a real `erudite-edge run` process) against the wall time,
* where the run measures a server on this machine (`bench --triton`: benchmarks/server_processes.py), that
  server's CPU time (its processes and their children, from /proc/PID/stat) and their pids: the run's own work too,
* from /proc/stat, the whole machine's busy CPU time and its steal time, as fractions of the usable
  cores' time; the busy time less this process's own CPU time (and the server's) is the OTHER work that ran
  meanwhile.

A series is quiet when the other work took at most QUIET_OTHER (10 %) of the cores' time and steal
at most QUIET_STEAL (2 %); a run is quiet only if every series was (thresholds in
benchmarks/README.md). The load average is recorded but not judged per series: it counts this
process's own threads too. `busy_reasons` samples the machine for half a second before a run starts (the
bench warns when it is busy). Where /proc/stat is unreadable (macOS), the fractions are None and no
series is called quiet.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from benchmarks.server_processes import ServerProcesses

QUIET_OTHER = 0.10  # other processes' CPU time, as a fraction of the usable cores' time
QUIET_STEAL = 0.02  # hypervisor steal, same fraction
BUSY_LOAD_PER_CORE = 0.5  # at the start of a run: a 1-minute load above this per usable core is "busy"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_jiffies(path: str = "/proc/stat") -> tuple[float, float, float] | None:
    """(busy, steal, total) seconds over all CPUs since boot, from the `cpu` line of /proc/stat."""
    try:
        with open(path) as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    v = [float(x) for x in first[1:]]
    v += [0.0] * (10 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]  # guest time is already in user / nice
    hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    busy = user + nice + system + irq + softirq + steal
    return busy / hz, steal / hz, (busy + idle + iowait) / hz


@dataclass(frozen=True)
class Snapshot:
    wall_s: float
    cpu_s: float  # this process's CPU time, all threads, and its waited-for children's
    load1: float | None
    jiffies: tuple[float, float, float] | None  # (busy, steal, total) seconds, whole machine
    server_cpu_s: float | None = None  # a local server's processes' CPU time (None: no server counted)
    server_pids: tuple[int, ...] = ()


def snapshot(server: "ServerProcesses | None" = None) -> Snapshot:
    """This moment's readings; `server`: a local server whose CPU time is the run's own (server_processes)."""
    try:
        load1: float | None = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load1 = None
    server_cpu, pids = server.cpu() if server is not None else (None, ())
    return Snapshot(time.perf_counter(), time.process_time() + _children_cpu_s(), load1, _cpu_jiffies(),
                    server_cpu, pids)


def _children_cpu_s() -> float:
    """CPU time of the child processes this process has waited for (0 where the platform cannot tell)."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime
    except (ImportError, OSError):
        return 0.0


@dataclass(frozen=True)
class LoadRecord:
    load1_before: float | None
    load1_after: float | None
    wall_s: float
    cpu_s: float  # this process's CPU time over the series
    cores: int
    other_fraction: float | None  # other processes' CPU time / (cores x wall), None without /proc/stat
    steal_fraction: float | None
    server_cpu_s: float | None = None  # the local server's CPU time over the series, counted as own (not other)
    server_pids: tuple[int, ...] = ()  # the server's processes counted (at either end of the series)

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot, cores: int | None = None) -> "LoadRecord":
        cores = cores or _usable_cores()
        wall = max(b.wall_s - a.wall_s, 1e-9)
        cpu = max(0.0, b.cpu_s - a.cpu_s)
        server = None
        if a.server_cpu_s is not None and b.server_cpu_s is not None:
            server = max(0.0, b.server_cpu_s - a.server_cpu_s)  # processes that ended: in their waiting parent's
        other = steal = None
        if a.jiffies is not None and b.jiffies is not None:
            total = b.jiffies[2] - a.jiffies[2]
            span = total if total > 0 else cores * wall  # the machine's CPU time that passed (all its cores)
            scale = cores / (os.cpu_count() or cores)  # as a fraction of the cores this process may use
            other = max(0.0, (b.jiffies[0] - a.jiffies[0]) - cpu - (server or 0.0)) / span / scale
            steal = max(0.0, b.jiffies[1] - a.jiffies[1]) / span / scale
        return cls(a.load1, b.load1, round(wall, 4), round(cpu, 4), cores,
                   None if other is None else round(other, 4), None if steal is None else round(steal, 4),
                   None if server is None else round(server, 4),
                   tuple(sorted(set(a.server_pids) | set(b.server_pids))) if server is not None else ())

    @property
    def quiet(self) -> bool:
        return is_quiet(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.server_cpu_s is None:  # no server counted: the record as it always was
            del d["server_cpu_s"], d["server_pids"]
        else:
            d["server_pids"] = list(self.server_pids)
        return {**d, "cpu_per_wall": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None}


def is_quiet(rec: dict[str, Any] | None) -> bool:
    """A recorded series (LoadRecord.to_dict) was quiet: other work and steal both under their thresholds."""
    if not rec or rec.get("other_fraction") is None or rec.get("steal_fraction") is None:
        return False
    return rec["other_fraction"] <= QUIET_OTHER and rec["steal_fraction"] <= QUIET_STEAL


def run_quiet(records: Sequence[dict[str, Any] | None]) -> bool:
    """A run is quiet only if it recorded series and every one of them was quiet."""
    return bool(records) and all(is_quiet(r) for r in records)


def describe(records: Sequence[dict[str, Any] | None]) -> str:
    """'quiet' or 'under load (...)': the label a table header carries."""
    recs = [r for r in records if r]
    if run_quiet(recs):
        return "quiet"
    if not recs:
        return "under load (not measured)"
    others = [r["other_fraction"] for r in recs if r.get("other_fraction") is not None]
    steals = [r["steal_fraction"] for r in recs if r.get("steal_fraction") is not None]
    loads = [v for r in recs for v in (r.get("load1_before"), r.get("load1_after")) if v is not None]
    parts = []
    if others:
        parts.append(f"other work {100 * min(others):.0f}-{100 * max(others):.0f} % of the cores")
    if steals:
        parts.append(f"steal {100 * max(steals):.1f} %")
    if loads:
        parts.append(f"1-minute load {min(loads):.2f}-{max(loads):.2f}")
    quiet_n = sum(is_quiet(r) for r in recs)
    return f"under load ({'; '.join(parts) or 'no /proc/stat'}; {quiet_n} of {len(recs)} series quiet)"


def busy_reasons(sample_s: float = 0.5) -> tuple[list[str], list[str]]:
    """Why the machine is busy right now (before a run): (measured, load average). Measured: other work over
    QUIET_OTHER of the cores, or steal over QUIET_STEAL, during `sample_s`. Load average: a 1-minute load above
    BUSY_LOAD_PER_CORE per usable core. Only the measured reasons bar a run from being called quiet: the
    1-minute load is an exponential average over the last minutes that also counts work which has just
    ended (a previous bench run's own threads, back to back), so it is grounds for a warning, not a label."""
    a = snapshot()
    time.sleep(sample_s)
    rec = LoadRecord.between(a, snapshot())
    measured, average = [], []
    if rec.other_fraction is not None and rec.other_fraction > QUIET_OTHER:
        measured.append(f"other processes used {100 * rec.other_fraction:.0f} % of the {rec.cores} usable cores")
    if rec.steal_fraction is not None and rec.steal_fraction > QUIET_STEAL:
        measured.append(f"the hypervisor stole {100 * rec.steal_fraction:.1f} %")
    if rec.load1_after is not None and rec.load1_after > BUSY_LOAD_PER_CORE * rec.cores:
        average.append(f"1-minute load {rec.load1_after:.2f} on {rec.cores} cores")
    return measured, average


MEASURED_BUSY = ("other processes used", "the hypervisor stole")  # busy_reasons' measured sentences begin so


def measured_busy(load: dict[str, Any]) -> str | None:
    """The measured part of a run's busy-at-start record (`busy_measured_at_start`; a record written before that
    field existed holds the joined sentence `busy_at_start`, whose measured parts begin with MEASURED_BUSY)."""
    if "busy_measured_at_start" in load:
        return load["busy_measured_at_start"]
    parts = [p for p in (load.get("busy_at_start") or "").split("; ") if p.startswith(MEASURED_BUSY)]
    return "; ".join(parts) or None


def run_label(series: Sequence[dict[str, Any] | None], busy_measured: str | None) -> tuple[bool, str]:
    """(quiet, label) of a run: quiet only when every series was quiet and nothing measured at the start said
    the machine was busy."""
    if not run_quiet(series):
        return False, describe(series)
    if busy_measured:
        return False, f"under load (at the start: {busy_measured})"
    return True, "quiet"


@contextmanager
def recorded(into: dict[str, dict[str, Any]], name: str) -> Iterator[None]:
    """Time a part of a study: its LoadRecord (as a dict) lands in `into[name]` when the block ends."""
    a = snapshot()
    try:
        yield
    finally:
        into[name] = LoadRecord.between(a, snapshot()).to_dict()


def load_summary(records: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """What a result file says of its load: the label its tables carry, whether the run was quiet, and
    every series' record."""
    recs = [r for r in records if r]
    return {"label": describe(recs), "quiet": run_quiet(recs), "series": recs}
