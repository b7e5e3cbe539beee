"""Capacity: calls in flight and completion rate through `chorus batch` when the provider takes 2 s.

    python -m bench.capacity [--quick]

Issue 12, goal 4: with the stub at 2 s per call and no rate limit, `chorus batch` should keep
≥ 1,000 calls in flight and complete calls at ≥ 0.9× the rate chorus batch reaches when the provider
answers at once (the latency fully hidden: on 2 cores the CPU, not the provider, is then the limit).

For each worker configuration (model-queue workers: processes × threads; one callbacks worker), in the
same run and with the same workers:

* phase **zero**: stub latency 0 ms, a batch of N documents × 3 voters (default model) through the code
  behind `chorus batch` (`prepare_batch` + `run_batch` + `wait_for_batch`, in a submitter subprocess,
  `--max-in-flight` = N, i.e. no bound on this batch): chorus batch's own zero-latency completion rate;
* phase **2 s**: the same size of batch with the stub at 2,000 ms.

The stub's request log gives every call's arrival and duration, so calls in flight and the completion
rate are measured at the provider: the **peak** in flight (reached in the initial burst), the **steady**
in flight (time-weighted mean between the 10th and 90th percentile of completion times, so ramp-up
and tail are left out) and the completion rate over that same window. Little's law ties them: calls
in flight = completion rate × call latency, so 1,000 in flight at 2 s needs 500 completions per second,
and a steady state above what the zero-latency rate × 2 s allows is impossible. Worker CPU seconds per
1,000 outcomes and the machine's CPU use say what bounds that rate.

While a phase runs, a sampler records the connections to the phase's PostgreSQL database, the threads
of every worker and of the stub (one stub thread per open connection), so the possible caps (the
SQLAlchemy pool per process, PostgreSQL's max_connections, the SDK's HTTP connection pool, the lease
thread each call starts) are checked against measurements, not only read from the code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.batch_enqueue import write_jsonl
from bench.harness import (
    PG_ADMIN_URL,
    CpuMeter,
    bench_main,
    configure_env,
    cpu_seconds,
    flushed_redis,
    fresh_postgres,
    goal_lines,
    machine,
    per_thousand,
    pids_of,
)

REDIS_DB = 11
LATENCY_MS = 2000
VOTERS = 3
LABELS = "positive,negative,neutral"
GOAL_IN_FLIGHT = 1000
GOAL_RATIO = 0.9
STEADY = (0.1, 0.9)  # the steady-state window: between these quantiles of the completion times
CALLBACK_THREADS = 8
WARMUP_DOCS = 20
GOAL_PEAK = (f"≥ {GOAL_IN_FLIGHT:,} calls in flight at 2 s latency via chorus batch, peak measured at the stub "
             "(issue 12)")
GOAL_RATE = f"completion rate at 2 s ≥ {GOAL_RATIO}× chorus batch's zero-latency rate, same run (issue 12)"


# ----- the submitter (a subprocess: its own settings, its own CPU) ------------------------------------
def child(source: str, name: str, max_in_flight: int, timeout: float) -> dict[str, Any]:
    """`chorus batch SOURCE --pattern vote --labels … --voters 3 --max-in-flight M`, as the CLI runs it."""
    import resource

    from chorus.batch import prepare_batch, run_batch, wait_for_batch
    from settings import get_settings

    settings = get_settings()
    t0 = time.time()
    prepared = prepare_batch(Path(source), pattern="vote", options={"labels": LABELS, "voters": VOTERS},
                             name=name, max_in_flight=max_in_flight, settings=settings)
    sub = run_batch(prepared, settings=settings)
    sent = time.time()
    counts = wait_for_batch(sub.batch_id, timeout=timeout, settings=settings).to_json()
    done = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"docs": sub.read, "sent": sub.sent, "started_at": t0, "sent_at": sent, "done_at": done,
            "counts": counts, "cpu_s": usage.ru_utime + usage.ru_stime}


def run_child(source: Path, name: str, max_in_flight: int, timeout: float) -> dict[str, Any]:
    code = ("import json, sys\nfrom bench.capacity import child\n"
            "print(json.dumps(child(*json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps([str(source), name, max_in_flight, timeout])],
                         capture_output=True, text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"submitter failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ----- what the stub's log says -------------------------------------------------------------------
def stub_profile(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and steady in-flight, steady completion rate and call latency, from the stub's request log."""
    spans = sorted((e["time"], e["time"] + e["latency_ms"] / 1000) for e in log if e.get("status") == 200)
    if len(spans) < 10:
        return {"calls_200": len(spans), "peak_in_flight": 0, "steady_in_flight": 0.0, "completed_per_s": 0.0,
                "steady_latency_ms": 0.0, "window_s": 0.0}
    first = spans[0][0]
    ends = sorted(e for _, e in spans)
    n = len(ends)
    lo, hi = ends[round(STEADY[0] * (n - 1))], ends[round(STEADY[1] * (n - 1))]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = peak = 0
    peak_at = first
    area = 0.0  # integral of the in-flight level over [lo, hi]
    prev = first
    series: list[int] = []  # the level each second after the first arrival (JSON only)
    for t, delta in events:
        if hi > lo:
            a, b = max(prev, lo), min(t, hi)
            if b > a:
                area += level * (b - a)
        while first + len(series) <= t:
            series.append(level)
        prev = t
        level += delta
        if level > peak:
            peak, peak_at = level, t
    in_window = [(s, e) for s, e in spans if lo < e <= hi]
    window = hi - lo
    return {
        "calls_200": n,
        "peak_in_flight": peak,
        "peak_at_s": round(peak_at - first, 1),
        "steady_in_flight": round(area / window, 1) if window > 0 else 0.0,
        "completed_per_s": round(len(in_window) / window, 1) if window > 0 else 0.0,
        "steady_latency_ms": round(sum(e - s for s, e in in_window) / len(in_window) * 1000, 1) if in_window else 0.0,
        "window_s": round(window, 1),
        "window_from_s": round(lo - first, 1),
        "span_s": round(ends[-1] - first, 1),
        "in_flight_each_s": series,
    }


# ----- what the machine says while a phase runs ----------------------------------------------------
def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = float(sum(fields[:8]))
    return total - idle, total


def threads_of(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def time_wait_sockets(port: int) -> int:
    """Sockets to or from `port` (IPv4) in TIME_WAIT: connections closed in the last 60 s."""
    count = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "06" and port in (int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)):
                count += 1
    return count


class Sampler:
    """Every 0.25 s: connections to the phase's database (all, and active) and to its Redis database, threads
    of each worker and of the stub; keeps the maxima. Also the CPU time of the PostgreSQL backends serving that database
    (from /proc; a backend that starts during the phase counts from zero)."""

    def __init__(self, pg_db: str, workers: list[int], stub: int) -> None:
        self.pg_db, self.workers, self.stub = pg_db, workers, stub
        self.peak: dict[str, int] = {"pg_connections": 0, "pg_active": 0, "redis_clients": 0, "stub_threads": 0,
                                     "worker_threads_max": 0}
        self._cpu_from: dict[int, float] = {}
        self._cpu_now: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capacity-sampler", daemon=True)

    @property
    def pg_cpu_s(self) -> float:
        return sum(self._cpu_now[pid] - self._cpu_from.get(pid, 0.0) for pid in self._cpu_now)

    def _backends(self, conn: Any) -> list[tuple[int, str | None]]:
        return [(int(pid), state) for pid, state in
                conn.execute("SELECT pid, state FROM pg_stat_activity WHERE datname = %s", (self.pg_db,)).fetchall()]

    def _loop(self) -> None:
        import psycopg
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        with contextlib.closing(client), psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            self._cpu_from = {pid: cpu_seconds([pid]) for pid, _ in self._backends(conn)}
            self._started.set()
            while True:
                backends = self._backends(conn)
                for pid, _ in backends:
                    cpu = cpu_seconds([pid])
                    if cpu > 0:  # 0: the backend has gone (its last increment is lost, < 0.25 s of it)
                        self._cpu_now[pid] = cpu
                sample = {"pg_connections": len(backends), "pg_active": sum(st == "active" for _, st in backends),
                          "redis_clients": sum(str(c.get("db")) == str(REDIS_DB) for c in client.client_list()),
                          "stub_threads": threads_of(self.stub),
                          "worker_threads_max": max((threads_of(p) for p in self.workers), default=0)}
                for k, v in sample.items():
                    self.peak[k] = max(self.peak[k], v)
                if self._stop.wait(0.25):
                    return

    def __enter__(self) -> Sampler:
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


# ----- the caps, read from the code paths the workers use ------------------------------------------
def caps(database_url: str, processes: int, threads: int) -> dict[str, Any]:
    """Each candidate limit on calls in flight, read from the libraries and servers, not typed in."""
    import anthropic._constants
    import psycopg
    import redis

    from chorus.batch import prepare_batch
    from models.db import engine_for
    from worker import make_app

    pool = engine_for(database_url).pool
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    max_connections = int(row[0]) if row else 0
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        maxclients = int(str(client.config_get("maxclients").get("maxclients", 0)))
    finally:
        client.close()
    limits = anthropic._constants.DEFAULT_CONNECTION_LIMITS
    app = make_app(set_as_current=False)
    pool_size = int(getattr(pool, "size", lambda: 0)())
    overflow = int(getattr(pool, "_max_overflow", 0))
    return {
        "sqlalchemy_pool_per_process": pool_size + overflow,
        "sqlalchemy_pool_size": pool_size,
        "sqlalchemy_max_overflow": overflow,
        "sqlalchemy_pool_timeout_s": float(getattr(pool, "_timeout", 0.0)),
        "pg_max_connections": max_connections,
        "pg_connections_chorus_may_open": (processes + 2) * (pool_size + overflow),  # + callbacks + submitter
        "redis_maxclients": maxclients,
        "celery_broker_pool_limit": app.conf.broker_pool_limit,
        "celery_prefetch_multiplier": int(app.conf.worker_prefetch_multiplier),
        "celery_prefetch_per_process": threads * int(app.conf.worker_prefetch_multiplier),
        "sdk_max_connections_per_process": limits.max_connections,
        "sdk_max_keepalive_per_process": limits.max_keepalive_connections,
        "threads_per_process": threads,
        "batch_default_max_in_flight_runs": inspect.signature(prepare_batch).parameters["max_in_flight"].default,
    }


def log_problems(data: Path) -> dict[str, int]:
    """Lines in the workers' logs that would say a cap was hit or a call failed."""
    found = {"QueuePool limit": 0, "too many clients": 0, "Traceback": 0, "ERROR": 0}
    for path in list(data.glob("*.log")) + list(data.glob("*.stderr")):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            for key in found:
                found[key] += text.count(key)
    return found


# ----- one configuration, both phases --------------------------------------------------------------
def measure(stub: Any, pool: str, processes: int, threads: int, docs: int, tmp: Path) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess

    label = f"{pool}{processes}x{threads}"
    pg_db = f"chorus_bench_capacity_{label}"
    source = tmp / f"docs-{docs}.jsonl"
    warm = tmp / "warmup.jsonl"
    write_jsonl(source, docs)
    write_jsonl(warm, WARMUP_DOCS)
    with fresh_postgres(pg_db):
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        data = configure_env(redis_db=REDIS_DB, pg_db=pg_db, stub_url=stub.base_url,
                             extra={"CHORUS_RUN_TIMEOUT_S": "900"})
        from models import ensure_schema
        from settings import get_settings
        from workflows.queues import CALLBACK_QUEUE, all_queues

        get_settings.cache_clear()
        settings = get_settings()
        ensure_schema(settings.effective_database_url)  # once, before the workers and the submitter
        found_caps = caps(settings.effective_database_url, processes, threads)
        model_queues = [q for q in all_queues(settings.model_list) if q != CALLBACK_QUEUE]
        procs = [WorkerProcess(model_queues, log_dir=data, name=f"llm{i}", pool=pool, concurrency=threads)
                 for i in range(processes)]
        procs.append(WorkerProcess([CALLBACK_QUEUE], log_dir=data, name="callbacks", pool="threads",
                                   concurrency=CALLBACK_THREADS))
        phases: list[dict[str, Any]] = []
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready()
            llm = pids_of(procs[:processes])
            base_threads = {pid: threads_of(pid) for pid in llm}
            stub.set_latency(0)
            run_child(warm, "warm-up", WARMUP_DOCS, 300)  # SDK clients, DB connections, imports
            for phase, latency in (("zero", 0), ("2 s", LATENCY_MS)):
                stub.set_latency(latency)
                stub.reset()
                meter = CpuMeter(pids_of(procs))
                stub_cpu0 = cpu_seconds([stub.pid])
                busy0, total0 = machine_cpu()
                began = time.monotonic()
                with meter, Sampler(pg_db, pids_of(procs), stub.pid) as sampler:
                    sub = run_child(source, f"capacity-{phase.replace(' ', '')}", docs, 900)
                busy1, total1 = machine_cpu()
                phase_s = time.monotonic() - began
                outcomes = sub["counts"]["total"] * VOTERS
                # Celery's thread pool starts a thread only when no idle one is left, and keeps it: the
                # threads a worker gained are the most calls it ran at once (lease threads end with their call).
                pool_threads = max(threads_of(pid) - base_threads[pid] for pid in llm)
                wall = sub["done_at"] - sub["started_at"]
                prof = stub_profile(stub.requests(bodies=False))
                phases.append({
                    "phase": phase,
                    "stub_latency_ms": latency,
                    "docs": sub["docs"],
                    "calls": prof["calls_200"],
                    **{k: v for k, v in prof.items() if k != "calls_200"},
                    "outcomes_per_s_e2e": round(outcomes / wall, 1),
                    "elapsed_s": round(wall, 1),
                    "submit_s": round(sub["sent_at"] - sub["started_at"], 1),
                    "counts": sub["counts"],
                    "worker_cpu_s_per_1000_outcomes": per_thousand(meter.seconds, outcomes),
                    "stub_cpu_s_per_1000_outcomes": per_thousand(cpu_seconds([stub.pid]) - stub_cpu0, outcomes),
                    "submitter_cpu_s_per_1000_outcomes": per_thousand(sub["cpu_s"], outcomes),
                    "postgres_cpu_s_per_1000_outcomes": per_thousand(sampler.pg_cpu_s, outcomes),
                    "machine_cpu_busy": round((busy1 - busy0) / (total1 - total0), 2) if total1 > total0 else 0.0,
                    # this benchmark's measured processes, as a share of all cores over the phase
                    "own_cpu_share": round((meter.seconds + sampler.pg_cpu_s + sub["cpu_s"] + cpu_seconds([stub.pid])
                                            - stub_cpu0) / (phase_s * (os.cpu_count() or 1)), 2),
                    "pool_threads_used_per_process": pool_threads,
                    "sampled_peaks": dict(sampler.peak),
                    "stub_time_wait_sockets_at_end": time_wait_sockets(stub.port),
                })
        finally:
            for p in procs:
                p.stop()
        problems = log_problems(data)
    zero, slow = phases
    return {
        "pool": f"{pool} {processes}×{threads}",
        "processes": processes,
        "threads": threads,
        "ceiling": processes * threads,
        "phases": phases,
        "rate_ratio": round(slow["completed_per_s"] / zero["completed_per_s"], 2) if zero["completed_per_s"] else 0.0,
        "e2e_ratio": round(slow["outcomes_per_s_e2e"] / zero["outcomes_per_s_e2e"], 2)
        if zero["outcomes_per_s_e2e"] else 0.0,
        "caps": found_caps,
        "log_problems": problems,
    }


def run(quick: bool = True) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    docs = 600 if quick else 1500
    configs = [("threads", 2, 300), ("threads", 2, 600)] + ([] if quick else [("threads", 3, 400)])
    tmp = Path(tempfile.mkdtemp(prefix="chorus-bench-capacity-"))
    with running_stub(latency_ms=0) as stub, flushed_redis(REDIS_DB):
        rows = [measure(stub, pool, processes, threads, docs, tmp) for pool, processes, threads in configs]
    for r in rows:
        r["goals_met"] = [r["phases"][1]["peak_in_flight"] >= GOAL_IN_FLIGHT, r["rate_ratio"] >= GOAL_RATIO]
    # The configuration reported against the goals: the one meeting more of them, then the faster at 2 s.
    chosen = max(rows, key=lambda r: (sum(r["goals_met"]), r["phases"][1]["completed_per_s"]))
    try:
        import gevent  # noqa: F401
        gevent_note = "importable but not measured here"
    except ImportError:
        gevent_note = "not measured: gevent is not installed, and it is not a chorus dependency"
    return {
        "benchmark": "capacity",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.capacity" + (" --quick" if quick else ""),
        "params": {"docs": docs, "voters": VOTERS, "stub_latency_ms": LATENCY_MS, "max_in_flight": docs,
                   "callbacks": f"threads ×{CALLBACK_THREADS}", "steady_window": list(STEADY),
                   "gevent": gevent_note},
        "rows": rows,
        "chosen": chosen["pool"],
        "goals": {GOAL_PEAK: chosen["goals_met"][0], GOAL_RATE: chosen["goals_met"][1]},
    }


# ----- the table -----------------------------------------------------------------------------------
def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"`chorus batch`'s code path (`prepare_batch` + `run_batch` + `wait_for_batch`, `--max-in-flight "
        f"{p['max_in_flight']}` = the batch's size, no rate limit): {p['docs']} documents × {p['voters']} voters per "
        f"phase, default model; callbacks worker {p['callbacks']}. Each configuration runs both phases with the same "
        "workers: stub latency 0, then 2,000 ms. Read from the stub's request log: **peak** in flight (the highest "
        "level at any moment, and when it was reached after the first call) and **steady** in flight (time-weighted "
        f"mean between the {p['steady_window'][0]:.0%} and {p['steady_window'][1]:.0%} quantiles of completion "
        "times, so ramp-up and tail are left out), completed/s over that window. *Calls at once per process*: the "
        "threads Celery's pool had to start (it starts one only when none is idle), i.e. the most calls one worker "
        "process ran at the same time.",
        "",
        "| pool (processes × threads) | ceiling | phase | calls | peak in flight (at s) | steady in flight "
        "| completed/s at stub (steady) | call ms (steady) | outcomes/s end to end | calls at once per process "
        "| docs succeeded |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for ph in r["phases"]:
            c = ph["counts"]
            lines.append(
                f"| {r['pool']} | {r['ceiling']} | {ph['phase']} | {ph['calls']} | {ph['peak_in_flight']} "
                f"({ph['peak_at_s']}) | {ph['steady_in_flight']} | {ph['completed_per_s']} | {ph['steady_latency_ms']} "
                f"| {ph['outcomes_per_s_e2e']} | {ph['pool_threads_used_per_process']} / {r['threads']} "
                f"| {c['succeeded']}/{c['total']} |")
    lines += [
        "",
        "| pool | phase | CPU s / 1,000 outcomes: workers | PostgreSQL (this database's backends) | stub | submitter "
        "| these processes' share of all cores | machine CPU busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for ph in r["phases"]:
            lines.append(f"| {r['pool']} | {ph['phase']} | {ph['worker_cpu_s_per_1000_outcomes']} "
                         f"| {ph['postgres_cpu_s_per_1000_outcomes']} | {ph['stub_cpu_s_per_1000_outcomes']} "
                         f"| {ph['submitter_cpu_s_per_1000_outcomes']} | {ph['own_cpu_share']:.0%} "
                         f"| {ph['machine_cpu_busy']:.0%} |")
    lines += [
        "",
        "| pool | completed/s at 2 s ÷ at zero latency (stub) | outcomes/s end to end, same ratio "
        "| Little's law at 2 s: completed/s × call s (measured steady in flight) "
        "| in flight the zero-latency rate would allow at 2 s | peak in flight / ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        zero, slow = r["phases"]
        little = slow["completed_per_s"] * slow["steady_latency_ms"] / 1000
        allowed = zero["completed_per_s"] * slow["steady_latency_ms"] / 1000
        lines.append(f"| {r['pool']} | **{r['rate_ratio']}×** | {r['e2e_ratio']}× | {little:.0f} "
                     f"({slow['steady_in_flight']}) | {allowed:.0f} | {slow['peak_in_flight']}/{r['ceiling']} |")
    need = GOAL_IN_FLIGHT / (LATENCY_MS / 1000)
    best_zero = max(r["phases"][0]["completed_per_s"] for r in result["rows"])
    cpu = min(r["phases"][0]["worker_cpu_s_per_1000_outcomes"] for r in result["rows"])
    cores = os.cpu_count() or 1
    bound = cores * 1000 / cpu
    lines += [
        "",
        f"**Little's law**: calls in flight ≈ completion rate × latency, so a steady {GOAL_IN_FLIGHT:,} in flight at "
        f"{LATENCY_MS / 1000:g} s needs ≥ {need:.0f} completions/s. chorus batch's zero-latency rate in this run was "
        f"at most {best_zero} calls/s, with the workers spending at least {cpu} CPU s per 1,000 outcomes: even with "
        f"all {cores} cores to themselves they could finish at most {bound:.0f} outcomes/s "
        f"({cores} × 1,000 ÷ {cpu}), before PostgreSQL, Redis, the stub and the submitter take their share. "
        + (f"That bound is below {need:.0f}/s, so a steady {GOAL_IN_FLIGHT:,} in flight is out of reach on this "
           "machine whatever the pool; a peak above the steady level needs calls to start faster than they finish, "
           "and starting a call (dispatch, claim) costs the same CPU."
           if bound < need else
           f"That bound is above {need:.0f}/s: the CPU alone does not rule out a steady {GOAL_IN_FLIGHT:,}."),
        "",
    ]
    caps_row = result["rows"][-1]["caps"]
    sampled = {k: max(ph["sampled_peaks"][k] for r in result["rows"] for ph in r["phases"])
               for k in result["rows"][0]["phases"][0]["sampled_peaks"]}
    problems = {k: sum(r["log_problems"][k] for r in result["rows"]) for k in result["rows"][0]["log_problems"]}
    used = max(ph["pool_threads_used_per_process"] for r in result["rows"] for ph in r["phases"])
    time_wait = ", ".join(str(r["phases"][1]["stub_time_wait_sockets_at_end"]) for r in result["rows"])
    lines += [
        "What could cap calls in flight, read from the libraries and servers and checked against the phases:",
        "",
        f"- `chorus batch --max-in-flight` (runs sent and unfinished): default "
        f"{caps_row['batch_default_max_in_flight_runs']} runs × {VOTERS} voters = "
        f"{caps_row['batch_default_max_in_flight_runs'] * VOTERS} calls, and the CLI has no unbounded value "
        f"(`chorus/cli/batches.py`); this benchmark passes the batch's size ({p['max_in_flight']}).",
        f"- The thread pool: at most {used} calls ran at once in one process, of "
        f"{min(r['threads'] for r in result['rows'])}–{max(r['threads'] for r in result['rows'])} threads; the pool "
        "was never full, so its size did not limit the calls in flight.",
        f"- SQLAlchemy pool per worker process: {caps_row['sqlalchemy_pool_size']} + "
        f"{caps_row['sqlalchemy_max_overflow']} overflow = {caps_row['sqlalchemy_pool_per_process']} connections, "
        f"{caps_row['sqlalchemy_pool_timeout_s']:g} s pool timeout (`models/db.py`, no setting). A call holds a "
        "connection only for its claim and its outcome write, not during the provider call, so the pool queues "
        "the database steps rather than capping calls in flight. Peak connections to the phase's database: "
        f"{sampled['pg_connections']} ({sampled['pg_active']} active at once); 'QueuePool limit' in the worker "
        f"logs: {problems['QueuePool limit']}.",
        f"- PostgreSQL max_connections {caps_row['pg_max_connections']}: chorus may open "
        f"{caps_row['sqlalchemy_pool_per_process']} per process, so more worker processes (not more threads) reach "
        f"it first ({result['rows'][-1]['processes']} call workers + callbacks + submitter: up to "
        f"{caps_row['pg_connections_chorus_may_open']}); 'too many clients' in the logs: "
        f"{problems['too many clients']}.",
        f"- The SDK's HTTP pool per process: {caps_row['sdk_max_connections_per_process']} connections, "
        f"{caps_row['sdk_max_keepalive_per_process']} kept alive (anthropic's defaults; chorus builds its client "
        "without `http_client`, no setting): above the calls at once measured here, so no cap; connections beyond "
        "the keep-alive limit are closed after use. Peak stub threads (one per open connection): "
        f"{sampled['stub_threads']}; sockets on the stub's port in TIME_WAIT (closed in the last 60 s) at the end "
        f"of the 2 s phases: {time_wait}.",
        "- Each call starts a lease-renewal thread (`tasks/calls.py`, renewing every 5 s): at 2 s it never renews, "
        f"but it doubles the threads per process while calls run (peak threads of one worker process: "
        f"{sampled['worker_threads_max']}).",
        f"- Celery: prefetch = threads × {caps_row['celery_prefetch_multiplier']} "
        f"per process, broker producer pool {caps_row['celery_broker_pool_limit']} (re-sends and chord sends), "
        f"Redis maxclients {caps_row['redis_maxclients']} (peak clients on this benchmark's Redis database: "
        f"{sampled['redis_clients']}): no cap at these sizes.",
        f"- gevent: {p['gevent']}; chorus has no asyncio call path, so only the thread pool was measured.",
        f"- Worker log lines with 'Traceback': {problems['Traceback']}, 'ERROR': {problems['ERROR']}.",
        "",
        f"Goals are judged on **{result['chosen']}** (the configuration meeting more goals, then the faster at 2 s).",
        "",
    ]
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render)
