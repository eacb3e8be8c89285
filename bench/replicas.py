"""Two Lloyd replicas on one PostgreSQL against one: what a second replica buys on this machine.

1-row ``POST /v1/models/<name>/predict`` on a KMeans(8) of 16 features, 8 concurrent keep-alive
connections, in three configurations:

1. one replica alone: all 8 connections to it (the other replica is up, idle);
2. two replicas: 4 connections to each (aggregate throughput, and each replica's own);
3. the same, each replica pinned to a core of its own (``os.sched_setaffinity`` on every thread
   of its process group, as ``taskset -a``) and the load generator left unpinned
   (``--no-pin`` skips it).

The same three are run on two bare FastAPI processes (the orjson floor of
bench/throughput_floor.py, started as bench/throughput.py starts it), so the replicas' scaling
can be read against the floor's own on this machine.

The replicas are real server processes (``python -m uvicorn --factory app.main:create_app``)
started at once on a PostgreSQL database made for the run (dropped at the end) and one shared
store folder, with an API key, LLOYD_LOG_LEVEL=warning, one BLAS/OpenMP thread and no access
log, as ``python -m app`` serves at that level. One k-means model is trained through replica A;
replica B's answers (the 1-row body of the load, and 500 rows) must equal A's and scikit-learn's
in-process before anything is measured.

The load generator is bench/throughput.py's, ``wrk`` (T.run_wrk, its script T.wrk_script), run
as two processes of one thread and 4 connections each in every configuration (both at the lone
replica in 1., one at each replica in 2. and 3.), so the generator is the same whichever servers
it drives. It runs on the same 2 cores as the servers: the CPU time it, the servers and the rest
of the machine took during each run is measured (/proc) and printed beside the figures.

Rounds are interleaved (every configuration once per round, in an order rotated each round);
the table has medians and ranges (min-max over the rounds); ratios are median over median, with
the range of the per-round ratios. wrk reports latency per process: a latency given for two
streams is the slower stream's (the pooled percentile lies between the two streams').

Run: .venv/bin/python bench/replicas.py [--rounds 3] [--seconds 5] [--no-pin] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import orjson
import sqlalchemy as sa
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as T

from app.api_keys import hash_key, new_key

TRAIN_ROWS = 2_000
CHECK_ROWS = 500
MODEL = "km"
STREAMS = 2  # wrk processes per run, one thread each
STREAM_CONNECTIONS = T.CONNECTIONS // STREAMS  # 4: 8 connections in all, as bench/throughput.py
CORES = sorted(os.sched_getaffinity(0))
TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = ("one", "two", "pinned")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


# -- the database, the replicas, the floors -----------------------------------------------------
@contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database for this run (its URL, as LLOYD_DATABASE_URL takes it),
    dropped at the end whatever happens."""
    name = f"lloyd_bench_{uuid.uuid4().hex[:12]}"
    url = sa.engine.make_url(admin_url)
    admin = sa.create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(drivername="postgresql", database=name).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        T.log(f"database {name} dropped")


def replica_argv() -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        # As python -m app at LLOYD_LOG_LEVEL=warning: uvicorn skips the access line's fields.
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_replicas(database_url: str, store: Path, key: str, folder: Path) -> list[T.Server]:
    """Replicas A and B started at once on one database and one store (they race to migrate
    it, as replicas do), each waited for until /readyz answers 200."""
    env = T.base_env() | {
        "LLOYD_DATABASE_URL": database_url,
        "LLOYD_MODELS_STORE": str(store),
        "LLOYD_LOG_LEVEL": "warning",
        "LLOYD_API_KEYS": f"{hash_key(key)}:read+write",
        # python -m app sets these to LLOYD_SERVING_THREADS (1) before numpy loads.
        **dict.fromkeys(T.THREAD_VARIABLES, str(T.SERVING_THREADS)),
    }
    started = [
        T.Server(f"replica {name}", replica_argv(), env, folder / f"replica-{name}.log")
        for name in ("A", "B")
    ]
    for server in started:
        server.wait_ready(lambda base: httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200)
    return started


def group_pids(pgid: int) -> list[int]:
    """The live processes of a process group (a server, its forkserver and workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def group_tids(pgid: int) -> list[int]:
    tids = []
    for pid in group_pids(pgid):
        with suppress(FileNotFoundError):
            tids += [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    return tids


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the group's live processes (all their threads)."""
    ticks = 0
    for pid in group_pids(pgid):
        with suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / TICK


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (every core, every process), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # less idle and iowait


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children: the wrk runs (servers are reaped at stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def set_group_affinity(pgid: int, cpus: set[int]) -> None:
    """Every thread of every process of the group (threads started later inherit it)."""
    for tid in group_tids(pgid):
        with suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


@contextmanager
def pinned(servers: list[T.Server], results: T.Results) -> Iterator[None]:
    """Server i on core i for the body; back to every core after it. Checks on the way out that
    no thread of theirs ran elsewhere (a thread started meanwhile without the pin)."""
    for server, core in zip(servers, CORES, strict=False):
        set_group_affinity(server.pid, {core})
    try:
        yield
    finally:
        for server, core in zip(servers, CORES, strict=False):
            loose = 0
            for tid in group_tids(server.pid):
                with suppress(ProcessLookupError):
                    loose += os.sched_getaffinity(tid) != {core}
            if loose:
                results.notes.append(f"{server.label}: {loose} thread(s) not pinned to {core}")
            set_group_affinity(server.pid, set(CORES))


# -- load ----------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str  # "A", "B" (replicas), "1", "2" (floor processes)
    server: T.Server
    url: str


def drive(urls: list[str], script: Path, seconds: float) -> list[T.WrkRun]:
    """One wrk process (T.run_wrk: one thread) per URL, all at once, of STREAM_CONNECTIONS
    connections each: T.run_wrk opens T.CONNECTIONS connections, set for these runs only."""
    with (
        mock.patch.object(T, "CONNECTIONS", STREAM_CONNECTIONS),
        ThreadPoolExecutor(len(urls)) as pool,
    ):
        return list(pool.map(lambda url: T.run_wrk(url, script, seconds), urls))


def measure(
    results: T.Results,
    case: str,
    streams: list[Target],
    script: Path,
    args: argparse.Namespace,
    service: bool,
) -> None:
    """One run of ``case``: a warm-up, then ``args.seconds`` of load, the CPU time every party
    took meanwhile, and the figures of the whole and of each server."""
    urls = [target.url for target in streams]
    drive(urls, script, args.warmup)
    servers = list({target.name: target for target in streams}.values())
    cpu_before = {t.name: group_cpu_seconds(t.server.pid) for t in servers}
    machine_before, wrk_before = machine_busy_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    runs = drive(urls, script, args.seconds)
    wall = time.perf_counter() - started
    wrk_cores = (children_cpu_seconds() - wrk_before) / wall
    machine_cores = (machine_busy_seconds() - machine_before) / wall
    server_cores = {
        t.name: (group_cpu_seconds(t.server.pid) - cpu_before[t.name]) / wall for t in servers
    }
    other = max(0.0, machine_cores - wrk_cores - sum(server_cores.values()))

    for target, run in zip(streams, runs, strict=True):
        if math.isnan(run.rps) or run.non_2xx or run.socket_errors:
            what = (
                f"{case}: wrk {target.url}: non-2xx {run.non_2xx}, "
                f"socket errors {run.socket_errors}"
            )
            if service:
                results.fail(what, detail=run.output[-1500:])
            else:
                results.notes.append(f"{what}\n{run.output[-1500:]}")

    def record(key: str, group: list[T.WrkRun]) -> str:
        rps = sum(run.rps for run in group)
        p50 = max(run.p50_ms for run in group)
        p99 = max(run.p99_ms for run in group)
        results.add(f"{key}/rps", rps)
        results.add(f"{key}/p50", p50)
        results.add(f"{key}/p99", p99)
        return f"{rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"

    line = f"    {case}: {record(case, runs)}"
    if len(servers) > 1:
        for target in servers:
            mine = [run for t, run in zip(streams, runs, strict=True) if t.name == target.name]
            line += f"; {target.name}: {record(f'{case}/{target.name}', mine)}"
    for name, cores in server_cores.items():
        results.add(f"{case}/cpu/{name}", cores)
    results.add(f"{case}/cpu/servers", sum(server_cores.values()))
    results.add(f"{case}/cpu/wrk", wrk_cores)
    results.add(f"{case}/cpu/other", other)
    cpu = ", ".join(f"{name} {cores:.2f}" for name, cores in server_cores.items())
    log_streams = " | ".join(
        f"{t.name}: {run.rps:,.0f} req/s p99 {run.p99_ms:.2f} ms ({run.requests} requests)"
        for t, run in zip(streams, runs, strict=True)
    )
    T.log(f"{line}\n      streams {log_streams}")
    T.log(f"      cores used: servers {cpu}; wrk {wrk_cores:.2f}; rest of the machine {other:.2f}")


def run_case(
    results: T.Results,
    kind: str,
    config: str,
    targets: list[Target],
    script: Path,
    args: argparse.Namespace,
) -> None:
    first, second = targets
    case = f"{kind}/{config}"
    streams = [first, first] if config == "one" else [first, second]
    if config == "pinned":
        with pinned([t.server for t in targets], results):
            measure(results, case, streams, script, args, kind == "service")
    else:
        measure(results, case, streams, script, args, kind == "service")


# -- set-up: the model, the answers --------------------------------------------------------------
def make_rows() -> tuple[np.ndarray, np.ndarray]:
    X, _ = make_blobs(
        n_samples=TRAIN_ROWS + CHECK_ROWS,
        centers=T.CLUSTERS,
        n_features=T.FEATURES,
        cluster_std=2.0,
        random_state=0,
    )
    return np.ascontiguousarray(X[:TRAIN_ROWS]), np.ascontiguousarray(X[TRAIN_ROWS:])


def train_and_check(
    replicas: list[T.Server], key: str, train: np.ndarray, check: np.ndarray, results: T.Results
) -> None:
    """Train the model through A; A's and B's answers must equal scikit-learn's in-process."""
    a, b = replicas
    with T.client(a.base, key) as on_a, T.client(b.base, key) as on_b:
        elapsed, answer = T.train_request(
            on_a, results, MODEL, "kmeans", T.KMEANS_PARAMS, T.npy_bytes(train)
        )
        if answer is None:
            raise RuntimeError("could not train the model through replica A")
        T.log(f"  trained {MODEL} v{answer.get('version')} through replica A in {elapsed:.2f} s")
        with threadpool_limits(limits=T.SERVING_THREADS):
            reference = KMeans(**T.KMEANS_PARAMS).fit(train)
            expected = {"1 row": reference.predict(check[:1]), "500 rows": reference.predict(check)}
        bodies = {
            "1 row": orjson.dumps({"instances": check[:1]}, option=orjson.OPT_SERIALIZE_NUMPY),
            "500 rows": orjson.dumps({"instances": check}, option=orjson.OPT_SERIALIZE_NUMPY),
        }
        path = f"/v1/models/{MODEL}/predict"
        for label, http in (("A", on_a), ("B", on_b)):
            for what, body in bodies.items():
                for _ in range(2):  # the first resolves the version through the stack
                    response = T.post_json(http, path, body)
                    if response.status_code != 200:
                        results.fail(f"replica {label} {path} ({what})", response)
                        break
                    got = response.json()
                    if got.get("version") != answer.get("version"):
                        results.fail(f"replica {label} served version {got.get('version')}")
                    if not T.same_answer(np.asarray(got["labels"]), expected[what]):
                        results.fail(f"replica {label} {path} ({what}) differs from scikit-learn")
        if results.failures:
            raise RuntimeError("the replicas' answers differ: nothing measured")
        T.log(
            "  replica B serves what A trained: its labels (1 row, 500 rows) equal A's and "
            "scikit-learn's in-process"
        )


def warm(targets: list[Target], key: str, body: bytes) -> None:
    for target in targets:
        with T.client(target.server.base, key) as http:
            for _ in range(50):
                T.post_json(http, target.url.removeprefix(target.server.base), body)


# -- the report ----------------------------------------------------------------------------------
def mid(results: T.Results, key: str) -> float:
    return T.median(results.samples.get(key, []))


def spread(values: list[float], unit: str) -> str:
    if not values:
        return "not measured"
    return (
        f"{T.fmt(T.median(values), unit)} ({T.fmt(min(values), unit)} - {T.fmt(max(values), unit)})"
    )


def round_range(results: T.Results, top: str, bottom: str) -> tuple[float, list[float]]:
    """Median over median, and the per-round ratios (each case runs once a round)."""
    over, under = results.samples.get(top, []), results.samples.get(bottom, [])
    if not over or not under:
        return math.nan, []
    rounds = [o / u for o, u in zip(over, under, strict=False) if u]
    return T.median(over) / T.median(under), rounds


def ratio(results: T.Results, top: str, bottom: str) -> tuple[float, str]:
    """Median over median, and its text with the range of the per-round ratios."""
    value, rounds = round_range(results, top, bottom)
    if not rounds:
        return value, "n/a"
    return value, f"{value:.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"


def figures_table(results: T.Results, configs: list[str]) -> str:
    lines = [
        "| server | configuration | req/s: median (min - max) | p50 | p99 | cores used: "
        "servers / wrk / rest of machine |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "service": ("Lloyd", "replica", "A", "B"),
        "floor": ("FastAPI floor", "process", "1", "2"),
    }
    for kind, (server, unit, first, second) in labels.items():
        for config in configs:
            case = f"{kind}/{config}"
            if config == "one":
                rows = [(f"1 {unit} ({first}), 8 connections", case, True)]
            else:
                pin = f", each pinned to a core ({first}: {CORES[0]}, {second}: {CORES[-1]})"
                title = f"2 {unit}es" if unit == "process" else f"2 {unit}s"
                rows = [
                    (f"{title}, 4 connections each{pin if config == 'pinned' else ''}", case, True),
                    (f"  {unit} {first} of them", f"{case}/{first}", False),
                    (f"  {unit} {second} of them", f"{case}/{second}", False),
                ]
            for what, key, whole in rows:
                s = results.samples
                if whole:
                    cores = " / ".join(
                        f"{mid(results, f'{case}/cpu/{part}'):.2f}"
                        for part in ("servers", "wrk", "other")
                    )
                else:
                    name = key.rsplit("/", 1)[1]
                    cores = f"{name}: {mid(results, f'{case}/cpu/{name}'):.2f}"
                lines.append(
                    f"| {server} | {what} | {spread(s.get(f'{key}/rps', []), 'req/s')} | "
                    f"{T.fmt(mid(results, f'{key}/p50'), 'ms')} | "
                    f"{T.fmt(mid(results, f'{key}/p99'), 'ms')} | {cores} |"
                )
    return "\n".join(lines)


def ratios_table(results: T.Results, configs: list[str]) -> str:
    lines = ["| ratio | Lloyd replicas | FastAPI floor processes |", "|---|---|---|"]

    def row(what: str, top: str, bottom: str) -> None:
        cells = [
            ratio(results, top.format(kind=kind, **names), bottom.format(kind=kind, **names))[1]
            for kind, names in (
                ("service", {"a": "A", "b": "B"}),
                ("floor", {"a": "1", "b": "2"}),
            )
        ]
        lines.append(f"| {what} | {cells[0]} | {cells[1]} |")

    for config in (c for c in configs if c != "one"):
        how = "two" if config == "two" else "two pinned"
        row(f"throughput, {how} / one", f"{{kind}}/{config}/rps", "{kind}/one/rps")
        row(
            f"  first of the {how} / the lone one", f"{{kind}}/{config}/{{a}}/rps", "{kind}/one/rps"
        )
        row(
            f"  second of the {how} / the lone one",
            f"{{kind}}/{config}/{{b}}/rps",
            "{kind}/one/rps",
        )
        row(f"p50, {how} / one", f"{{kind}}/{config}/p50", "{kind}/one/p50")
        row(f"p99, {how} / one", f"{{kind}}/{config}/p99", "{kind}/one/p99")
    if "pinned" in configs:
        row("throughput, two pinned / two unpinned", "{kind}/pinned/rps", "{kind}/two/rps")
    for config in configs:
        _, text = ratio(results, f"service/{config}/rps", f"floor/{config}/rps")
        lines.append(f"| Lloyd / floor throughput, {config} | {text} | |")
    return "\n".join(lines)


def reading(results: T.Results, configs: list[str]) -> str:
    """One paragraph, from the medians (its wording follows the figures)."""
    cores = len(CORES)
    one, two = mid(results, "service/one/rps"), mid(results, "service/two/rps")
    scale, _ = ratio(results, "service/two/rps", "service/one/rps")
    floor_scale, _ = ratio(results, "floor/two/rps", "floor/one/rps")
    per_a, _ = ratio(results, "service/two/A/rps", "service/one/rps")
    per_b, _ = ratio(results, "service/two/B/rps", "service/one/rps")
    lone_cores = mid(results, "service/one/cpu/servers")
    pair_cores = mid(results, "service/two/cpu/servers")
    wrk_one, wrk_two = mid(results, "service/one/cpu/wrk"), mid(results, "service/two/cpu/wrk")
    other_one = mid(results, "service/one/cpu/other")
    other_two = mid(results, "service/two/cpu/other")
    if scale >= 1.6:
        buys = "most of a second core's worth of throughput"
    elif scale >= 1.15:
        buys = "part of a second core's worth of throughput, well short of double"
    else:
        buys = "little or no throughput"
    text = (
        f"Reading: on this {cores}-core machine one replica served {one:,.0f} 1-row predicts "
        f"a second over 8 connections (p50 {mid(results, 'service/one/p50'):.2f} ms, p99 "
        f"{mid(results, 'service/one/p99'):.2f} ms), using {lone_cores:.2f} cores; two "
        f"replicas on the same PostgreSQL and store served {two:,.0f} together ({scale:.2f}x; "
        f"{mid(results, 'service/two/A/rps'):,.0f} and {mid(results, 'service/two/B/rps'):,.0f}"
        f" each, {per_a:.2f}x and {per_b:.2f}x of the lone replica; p50 "
        f"{mid(results, 'service/two/p50'):.2f} ms, p99 {mid(results, 'service/two/p99'):.2f} "
        f"ms) using {pair_cores:.2f} cores: in these runs a second replica bought {buys}. "
        f"The bare FastAPI floor went {floor_scale:.2f}x from one process to two under the "
        f"same load"
    )
    _, service_rounds = round_range(results, "service/two/rps", "service/one/rps")
    _, floor_rounds = round_range(results, "floor/two/rps", "floor/one/rps")
    overlap = bool(service_rounds and floor_rounds) and (
        max(service_rounds) >= min(floor_rounds) and max(floor_rounds) >= min(service_rounds)
    )
    if abs(scale - floor_scale) <= 0.1 * floor_scale:
        text += (
            ", as much as the replicas: the machine, not Lloyd, sets what a second process buys."
        )
    else:
        text += f", {'more' if floor_scale > scale else 'less'} than the replicas"
        text += (
            " (but their per-round ratios overlap: not a difference these rounds resolve)."
            if overlap
            else (": Lloyd scales less than the bare stack here." if floor_scale > scale else ".")
        )
    text += (
        f" The ceiling is the cores: wrk, which runs on the same {cores}, took {wrk_one:.2f} "
        f"cores with one replica and {wrk_two:.2f} with two, and the rest of the machine (it "
        f"is shared) {other_one:.2f} and {other_two:.2f}, leaving the servers at most "
        f"{cores - wrk_one - other_one:.2f} and {cores - wrk_two - other_two:.2f} cores."
    )
    if lone_cores < 0.9 and cores - wrk_one - other_one < 1.2:
        text += (
            " A lone replica did not even get one whole core, so these figures say more about"
            " the load on the machine than about Lloyd."
        )
    if "pinned" in configs:
        pin, _ = ratio(results, "service/pinned/rps", "service/two/rps")
        floor_pin, _ = ratio(results, "floor/pinned/rps", "floor/two/rps")
        if pin < 0.95:
            effect = (
                "less than leaving them to the scheduler (a pinned replica cannot move off a "
                "core that wrk or another process is using)"
            )
        elif pin > 1.05:
            effect = "more than leaving them to the scheduler"
        else:
            effect = "about the same as leaving them to the scheduler (within the noise)"
        text += (
            f" Giving each replica a core of its own (pinned, wrk free to run on either) served "
            f"{mid(results, 'service/pinned/rps'):,.0f} req/s ({pin:.2f}x the unpinned pair; "
            f"the floor {floor_pin:.2f}x), {effect}: on {cores} cores shared with the load "
            f"generator, 'its own core' is a core it shares with part of wrk and whatever else "
            f"runs there."
        )
    return text


# -- main ----------------------------------------------------------------------------------------
def run_all(folder: Path, database_url: str, results: T.Results, args: argparse.Namespace) -> None:
    key = new_key()
    train, check = make_rows()
    store = folder / "store"
    T.log(f"replicas A and B on {database_url}, store {store}")
    replicas = start_replicas(database_url, store, key, folder)
    T.log(f"  pids {', '.join(str(r.pid) for r in replicas)}; code {T.code_version()}")
    train_and_check(replicas, key, train, check, results)
    floors = [T.start_floor("FastAPI", folder) for _ in range(2)]
    T.log(f"floor FastAPI processes: pids {', '.join(str(f.pid) for f in floors)}")
    one_row = orjson.dumps({"instances": check[:1]}, option=orjson.OPT_SERIALIZE_NUMPY)
    script = T.wrk_script(folder, one_row, key)  # the floor ignores the key
    targets = {
        "service": [
            Target(name, r, f"{r.base}/v1/models/{MODEL}/predict")
            for name, r in zip("AB", replicas, strict=True)
        ],
        "floor": [
            Target(name, f, f"{f.base}/predict") for name, f in zip("12", floors, strict=True)
        ],
    }
    warm(targets["service"] + targets["floor"], key, one_row)
    configs = [c for c in CONFIGS if c != "pinned" or args.pin]
    cases = [(kind, config) for config in configs for kind in ("service", "floor")]
    for number in range(args.rounds):
        shift = (2 * number) % len(cases)
        order = cases[shift:] + cases[:shift]
        T.log(f"round {number + 1}/{args.rounds} (load average {T.loadavg()})")
        for kind, config in order:
            run_case(results, kind, config, targets[kind], script, args)
    T.stop_all()
    for path in sorted(folder.glob("*.log")):
        T.check_log(path, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up per run (1 s)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="skip the pinned runs")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help=f"a database of the server to make the bench's own in ({DEFAULT_POSTGRES})",
    )
    parser.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.pin and len(CORES) < 2:
        sys.exit("pinning needs 2 cores (--no-pin)")

    signal.signal(signal.SIGTERM, T.interrupt)
    signal.signal(signal.SIGINT, T.interrupt)
    load_start, code = T.loadavg(), T.code_version()
    T.log(
        f"code {code}; load average at start {load_start}; cores {CORES}; {args.rounds} "
        f"round(s) of wrk {args.seconds:g} s (+{args.warmup:g} s warm-up), {STREAMS} x "
        f"{STREAM_CONNECTIONS} connections"
    )
    results = T.Results()
    try:
        with (
            bench_database(args.postgres) as database_url,
            tempfile.TemporaryDirectory(prefix="lloyd-replicas-") as tmp,
        ):
            try:
                run_all(Path(tmp), database_url, results, args)
            finally:
                T.stop_all()  # before the database is dropped and the folder removed
    except KeyboardInterrupt:
        T.log("interrupted: every server stopped")
        sys.exit(130)
    finally:
        T.stop_all()
    configs = [c for c in CONFIGS if c != "pinned" or args.pin]
    output = [
        "",
        f"Lloyd replicas bench, {time.strftime('%Y-%m-%d %H:%M:%S')}: 1-row predict, KMeans("
        f"{T.CLUSTERS}) of {T.FEATURES} features; {args.rounds} round(s), wrk {args.seconds:g} s "
        f"x 8 connections ({STREAMS} wrk processes of 1 thread and {STREAM_CONNECTIONS} "
        f"connections); load average (1, 5, 15 min) at start {load_start}, at end "
        f"{T.loadavg()}; {len(CORES)} cores; code {code}",
        "",
        figures_table(results, configs),
        "",
        ratios_table(results, configs),
        "",
        "Replicas: uvicorn --factory app.main:create_app on one PostgreSQL database and one "
        "store folder, API key, 1 BLAS/OpenMP thread, log level warning, no access log; the "
        "lone replica's partner is up and idle. Floor: bench/throughput_floor.py's FastAPI "
        "app (body read, orjson.loads, constant answer). wrk runs on the same cores as the "
        "servers (its CPU is the 'wrk' column; 'rest of machine' is every other process, this "
        "machine being shared; PostgreSQL is among it). Latency of two streams: the slower "
        "stream's percentile. Ratios: median over median (range of the per-round ratios).",
        "",
        reading(results, configs),
    ]
    T.finish_report(output, results.notes, results.failures, "FAILURES", args.out)


if __name__ == "__main__":
    main()
