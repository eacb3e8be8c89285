"""Load test: concurrent predict, train, delete and alias moves on the same models, with checks.

For a bounded time, several concurrent clients drive one server: predictors post 1-row and
100-row `predict`, `predict_proba` and `anomalies` to a pool of k-means and Gaussian mixture
models (by `latest`, by version number, including recently deleted numbers, and by the alias
`prod`); trainers add versions to the same names; deleters delete versions, and now and then a
whole model, which they re-create; alias movers point `prod` at live versions. More models are
in play than the server's model cache holds, so the cache keeps loading and evicting.

Checks (any failure makes the exit code 1):
- no 5xx and no transport error (timeout, dropped connection);
- no answer from a deleted version: a request started after a DELETE that removed (name, v)
  had returned must not answer 200 from version v of that name, unless a training of that name
  answered v after the delete (a deleted model is re-created from version 1);
- no version lost: a 404 for `versions/v` while (name, v) was acknowledged (201) and no delete
  that could remove it had started is a failure; at the end, every version acknowledged with
  201 and never deleted by the test must exist (GET, same sha256) and serve a predict;
- every 200 names the version asked for (numbered requests);
- memory flat: the RSS of the server's process tree (the server, its forkserver and job
  workers) is sampled every 0.5 s; it is flat when the median of the samples in the last 10% of
  the run is within 10% of the median of the samples between 20% and 30% of the run (medians of
  windows, because job workers come and go); the same rule is applied to the server process
  alone, which holds the model cache;
- `lloyd_model_cache_size` from /metrics at the end is at most the cache size.

404s for deleted models and versions are expected and counted apart; other 4xx are counted by
status and problem code.

By default the script starts the real server (`python -m app`) on a free port, with a
temporary SQLite file and model store, a small model cache (LLOYD_MODEL_CACHE_SIZE=8) and a
generated API key, and stops it at the end. With --url it targets a running server instead
(model names get a random prefix and are deleted at the end; memory is measured when the
server's process can be found from the port, or given with --pid).

Run: .venv/bin/python bench/load.py --seconds 60 [--api-key KEY] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.api_keys import hash_key, new_key  # noqa: E402

STARTUP_SECONDS = 60.0
FEATURES = 4
TRAIN_ROWS = 240
CENTERS = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [0.0, 5.0, 5.0, 5.0]])
ALIAS = "prod"
TRAININGS = ("setup", "train", "recreate")
EXPECTED_404 = {"model_not_found", "version_not_found", "alias_not_found"}
SAMPLE_EVERY = 0.5
FLAT_TOLERANCE = 0.10
REQUEST_TIMEOUT = 60.0


# -- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, port: int, cache_size: int, key: str) -> subprocess.Popen:
    """``python -m app`` in a session of its own, so that it and its workers stop as one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOYD_")} | {
        "LLOYD_DATABASE_URL": f"sqlite:///{folder / 'lloyd.db'}",
        "LLOYD_MODELS_STORE": str(folder / "store"),
        "LLOYD_HOST": "127.0.0.1",
        "LLOYD_PORT": str(port),
        "LLOYD_MODEL_CACHE_SIZE": str(cache_size),
        "LLOYD_API_KEYS": f"{hash_key(key)}:read+write",
        "LLOYD_LOG_LEVEL": "warning",
    }
    with (folder / "server.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(base: str, server: subprocess.Popen | None, log: Path | None) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            text = log.read_text() if log else ""
            sys.exit(f"server exited with {server.returncode}:\n{text}")
        with suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    sys.exit(f"{base}/readyz did not answer 200 within {STARTUP_SECONDS:g} s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM the group (a clean shutdown), then SIGKILL whatever is left."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)


# -- memory ------------------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children[ppid].append(int(entry))
    return children


def _rss_kb(pid: int) -> int:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # gone, or a zombie (no VmRSS line)


def tree_rss_kb(root: int) -> dict[int, int]:
    """RSS in kB of ``root`` and of every descendant, by process id."""
    children = _children_map()
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return {p: _rss_kb(p) for p in pids}


def pid_listening_on(port: int) -> int | None:
    """The topmost process holding a listening TCP socket on ``port`` (this user's only)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                    inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    holders = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        holders.add(int(entry))
                        break
    children = _children_map()
    parent = {c: p for p, cs in children.items() for c in cs}
    tops = [p for p in holders if parent.get(p) not in holders]
    return min(tops) if tops else None


class MemorySampler(threading.Thread):
    """Samples (seconds since start, {pid: RSS kB}) of the server's tree every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.started_at = time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = tree_rss_kb(self.pid)
            if rss.get(self.pid):
                self.samples.append((time.monotonic() - self.started_at, rss))
            self._stop_event.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# -- what happened -----------------------------------------------------------------------------
@dataclass
class Call:
    kind: str
    name: str
    ref: str  # the {version} of the path: a number, "latest" or an alias; "" where none
    start: float
    end: float = 0.0
    status: int = 0  # 0: transport error
    code: str = ""  # the problem's code on an error
    version: int | None = None  # the version the answer names
    sha256: str = ""  # trainings
    deleted: list[int] = field(default_factory=list)  # deletes: the versions removed
    error: str = ""


@dataclass
class Pool:
    """What the clients know: live versions, recently deleted ones, per name."""

    names: list[str]
    algorithm: dict[str, str]
    live: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    gone: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    calls: list[Call] = field(default_factory=list)
    deadline: float = 0.0

    def forget(self, name: str, versions: list[int]) -> None:
        for v in versions:
            self.live[name].discard(v)
            self.gone[name].append(v)
        del self.gone[name][:-20]


def training_body(name: str, algorithm: str, rng: np.random.Generator) -> bytes:
    X = CENTERS[rng.integers(0, len(CENTERS), TRAIN_ROWS)] + rng.normal(size=(TRAIN_ROWS, 4))
    params = (
        {"n_clusters": 3, "n_init": 1, "random_state": 0}
        if algorithm == "kmeans"
        else {"n_components": 3, "random_state": 0}
    )
    body = {
        "name": name,
        "algorithm": algorithm,
        "params": params,
        "anomaly": {"contamination": 0.05},
        "data": {"instances": np.round(X, 4).tolist()},
    }
    return json.dumps(body).encode()


def row_bodies(rng: np.random.Generator, rows: int, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        X = CENTERS[rng.integers(0, len(CENTERS), rows)] + rng.normal(size=(rows, FEATURES))
        out.append(json.dumps({"instances": np.round(X, 4).tolist()}).encode())
    return out


JSON = {"content-type": "application/json"}


async def send(
    http: httpx.AsyncClient,
    pool: Pool | None,
    call: Call,
    method: str,
    path: str,
    content: bytes | None = None,
) -> dict[str, Any] | None:
    """Send one request, fill ``call`` in and record it; the JSON answer on success."""
    call.start = time.monotonic()
    answer = None
    try:
        response = await http.request(
            method, path, content=content, headers=JSON if content else None
        )
        call.status = response.status_code
        with suppress(ValueError):
            answer = response.json()
    except httpx.HTTPError as exc:
        call.error = f"{type(exc).__name__}: {exc}"
    call.end = time.monotonic()
    if isinstance(answer, dict):
        if call.status >= 400:
            call.code = str(answer.get("code", ""))
            if call.status != 404 or call.kind in TRAININGS:
                call.error = str(answer.get("detail", answer))[:300]
        else:
            version = answer.get("version")
            call.version = version if isinstance(version, int) else None
    if pool is not None:
        pool.calls.append(call)
    return answer if call.status and call.status < 300 else None


async def train(
    http: httpx.AsyncClient, pool: Pool, name: str, rng: np.random.Generator, kind: str
) -> int | None:
    call = Call(kind, name, "", 0.0)
    answer = await send(
        http, pool, call, "POST", "/v1/models", training_body(name, pool.algorithm[name], rng)
    )
    if call.status == 201 and answer is not None:
        call.sha256 = answer.get("artifact", {}).get("sha256", "")
        pool.live[name].add(answer["version"])
        return answer["version"]
    return None


# -- the clients -------------------------------------------------------------------------------
async def predictor(http: httpx.AsyncClient, pool: Pool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    small, large = row_bodies(rng, 1, 64), row_bodies(rng, 100, 8)
    while time.monotonic() < pool.deadline:
        name = pick.choice(pool.names)
        operations = ["predict", "anomalies"]
        if pool.algorithm[name] == "gaussian_mixture":
            operations.append("predict_proba")
        operation = pick.choice(operations)
        rows = 1 if pick.random() < 0.7 else 100
        body = pick.choice(small if rows == 1 else large)
        draw = pick.random()
        if draw < 0.35:
            ref, path = "latest", f"/v1/models/{name}/{operation}"
        elif draw < 0.55:
            ref = ALIAS
            path = f"/v1/models/{name}/versions/{ref}/{operation}"
        else:
            live, gone = sorted(pool.live[name]), pool.gone[name]
            if gone and (pick.random() < 0.25 or not live):
                ref = str(pick.choice(gone))
            elif live:
                ref = str(pick.choice(live))
            else:
                ref = "1"
            path = f"/v1/models/{name}/versions/{ref}/{operation}"
        await send(http, pool, Call(f"{operation}/{rows}", name, ref, 0.0), "POST", path, body)


async def trainer(http: httpx.AsyncClient, pool: Pool, seed: int, pause: float) -> None:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    while time.monotonic() < pool.deadline:
        await train(http, pool, pick.choice(pool.names), rng, "train")
        await asyncio.sleep(pause * pick.uniform(0.5, 1.5))


async def deleter(
    http: httpx.AsyncClient, pool: Pool, seed: int, pause: float, model_share: float
) -> None:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    while time.monotonic() < pool.deadline:
        name = pick.choice(pool.names)
        if pick.random() < model_share:
            call = Call("delete_model", name, "", 0.0)
            answer = await send(http, pool, call, "DELETE", f"/v1/models/{name}")
            if answer is not None:
                call.deleted = list(answer.get("deleted_versions", []))
                pool.forget(name, call.deleted)
            if call.status in (200, 404):  # re-create it, as a user would
                await train(http, pool, name, rng, "recreate")
        else:
            live = sorted(pool.live[name])
            if len(live) < 2:  # leave every model a version most of the time
                await asyncio.sleep(0.01)
                continue
            version = pick.choice(live)
            call = Call("delete_version", name, str(version), 0.0)
            answer = await send(http, pool, call, "DELETE", f"/v1/models/{name}/versions/{version}")
            if answer is not None:
                call.deleted = list(answer.get("deleted_versions", []))
                pool.forget(name, call.deleted)
            elif call.code in EXPECTED_404:
                pool.forget(name, [version])
        await asyncio.sleep(pause * pick.uniform(0.5, 1.5))


async def alias_mover(http: httpx.AsyncClient, pool: Pool, seed: int, pause: float) -> None:
    pick = random.Random(seed)
    while time.monotonic() < pool.deadline:
        name = pick.choice(pool.names)
        live = sorted(pool.live[name])
        if not live:
            await asyncio.sleep(0.01)
            continue
        version = pick.choice(live)
        body = json.dumps({"version": version}).encode()
        call = Call("alias_put", name, str(version), 0.0)
        await send(http, pool, call, "PUT", f"/v1/models/{name}/aliases/{ALIAS}", body)
        await asyncio.sleep(pause * pick.uniform(0.5, 1.5))


# -- checks ------------------------------------------------------------------------------------
@dataclass
class Generation:
    """One life of (name, version): a training acknowledged it with 201."""

    name: str
    version: int
    sha256: str
    train_start: float
    ack: float  # the 201 came back


def generations(calls: list[Call]) -> list[Generation]:
    return [
        Generation(c.name, c.version, c.sha256, c.start, c.end)
        for c in calls
        if c.kind in TRAININGS and c.status == 201 and c.version is not None
    ]


def deletes_of(calls: list[Call], name: str, version: int) -> list[Call]:
    """Deletes that removed, or may have removed, (name, version): those that answered 2xx with
    it, and those whose outcome is unknown (transport error, 5xx)."""
    out = []
    for c in calls:
        if c.name != name or c.kind not in ("delete_model", "delete_version"):
            continue
        if c.kind == "delete_version" and c.ref != str(version):
            continue
        if (200 <= c.status < 300 and version in c.deleted) or c.status == 0 or c.status >= 500:
            out.append(c)
    return out


def answered_from_deleted(calls: list[Call]) -> tuple[list[str], Counter]:
    """200s from (name, v) in requests started after a delete that removed (name, v) had
    returned, with no training of the name answering v (or with an unknown outcome) since that
    delete returned; and the statuses of every request so judged."""
    removed: dict[tuple[str, int], list[float]] = defaultdict(list)
    created: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    unknown_trains: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in calls:
        if c.kind in ("delete_model", "delete_version") and 200 <= c.status < 300:
            for v in c.deleted:
                removed[(c.name, v)].append(c.end)
        elif c.kind in TRAININGS:
            if c.status == 201 and c.version is not None:
                created[(c.name, c.version)].append((c.start, c.end))
            elif c.status == 0 or c.status >= 500 or c.status == 202:
                unknown_trains[c.name].append((c.start, c.end))
    found, judged = [], Counter()
    for c in calls:
        if "/" not in c.kind:
            continue
        # A numbered request is judged by the version it asked for; `latest` and aliases by the
        # version that answered.
        if c.ref.isdigit():
            key = (c.name, int(c.ref))
        elif c.status == 200 and c.version is not None:
            key = (c.name, c.version)
        else:
            continue
        before = [d for d in removed.get(key, []) if d < c.start]
        if not before:
            continue
        last_delete = max(before)
        # Re-created since: a training of the name that answered v, or may have (unknown
        # outcome), ended after the delete and started before this request ended.
        trains = created.get(key, []) + unknown_trains.get(c.name, [])
        if any(end > last_delete and start < c.end for start, end in trains):
            continue
        judged[c.status] += 1
        if c.status == 200:
            found.append(
                f"{c.kind} {c.name} ref={c.ref} answered 200 from version {c.version} "
                f"{c.start - last_delete:.3f} s after its delete had returned"
            )
    return found, judged


def transient_losses(calls: list[Call], gens: list[Generation]) -> list[str]:
    """404s for versions/v while (name, v) was acknowledged and no delete that may remove it
    had started."""
    windows: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for g in gens:
        starts = [d.start for d in deletes_of(calls, g.name, g.version) if d.end > g.train_start]
        windows[(g.name, g.version)].append((g.ack, min(starts, default=float("inf"))))
    found = []
    for c in calls:
        if c.status != 404 or "/" not in c.kind or not c.ref.isdigit():
            continue
        for low, high in windows.get((c.name, int(c.ref)), []):
            if low < c.start and c.end < high:
                found.append(
                    f"{c.kind} {c.name} versions/{c.ref} answered 404 {c.code} while that "
                    "version was acknowledged and not being deleted"
                )
                break
    return found


def wrong_versions(calls: list[Call]) -> list[str]:
    return [
        f"{c.kind} {c.name} versions/{c.ref} answered from version {c.version}"
        for c in calls
        if c.status == 200 and "/" in c.kind and c.ref.isdigit() and c.version != int(c.ref)
    ]


def overlapping_deletes(calls: list[Call], call: Call) -> list[Call]:
    return [
        d
        for d in calls
        if d.kind in ("delete_model", "delete_version")
        and d.name == call.name
        and d.start < call.end
        and call.start < d.end
    ]


def shared_acknowledgements(gens: list[Generation]) -> list[str]:
    """Two trainings answering 201 with the same (name, version, sha256): one of them was
    answered with the other's version (every training posts different rows)."""
    seen = Counter((g.name, g.version, g.sha256) for g in gens)
    return [
        f"{n} v{v}: {count} trainings answered 201 with the same artifact {sha[:12]}"
        for (n, v, sha), count in seen.items()
        if count > 1
    ]


async def verify_survivors(
    http: httpx.AsyncClient, calls: list[Call], gens: list[Generation], body: bytes
) -> tuple[int, int, int, list[str]]:
    """(acknowledged, deleted by the test, verified, problems): every generation no delete may
    have touched must exist with its sha256 and serve a predict."""
    keep = [
        g
        for g in gens
        if not any(d.end > g.train_start for d in deletes_of(calls, g.name, g.version))
    ]
    problems: list[str] = []
    semaphore = asyncio.Semaphore(8)

    async def check(g: Generation) -> bool:
        async with semaphore:
            base = f"/v1/models/{g.name}/versions/{g.version}"
            get = Call("verify_get", g.name, str(g.version), 0.0)
            answer = await send(http, None, get, "GET", base)
            if answer is None:
                problems.append(f"{g.name} v{g.version}: GET answered {get.status} {get.code}")
                return False
            sha = answer.get("artifact", {}).get("sha256")
            if sha != g.sha256:
                problems.append(f"{g.name} v{g.version}: sha256 {sha} instead of {g.sha256}")
                return False
            predict = Call("verify_predict", g.name, str(g.version), 0.0)
            answer = await send(http, None, predict, "POST", f"{base}/predict", body)
            if answer is None or predict.version != g.version:
                problems.append(
                    f"{g.name} v{g.version}: predict answered {predict.status} {predict.code} "
                    f"version {predict.version}"
                )
                return False
            return True

    results = await asyncio.gather(*(check(g) for g in keep))
    return len(gens), len(gens) - len(keep), sum(results), problems


async def cache_size_metric(http: httpx.AsyncClient) -> float | None:
    with suppress(httpx.HTTPError):
        response = await http.get("/metrics")
        match = re.search(r"^lloyd_model_cache_size\s+(\S+)", response.text, re.MULTILINE)
        if match:
            return float(match.group(1))
    return None


class SetupFailed(Exception):
    """The models to load could not be created (no key, wrong key, server refusing)."""


# -- the run -----------------------------------------------------------------------------------
async def run(args: argparse.Namespace, base: str, key: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    clients = args.predictors + args.trainers + args.deleters + args.alias_movers
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    prefix = f"load-{random.randrange(16**6):06x}-" if args.url else "load-"
    names = [f"{prefix}{i:02d}" for i in range(args.models)]
    algorithm = {n: ("kmeans" if i % 2 == 0 else "gaussian_mixture") for i, n in enumerate(names)}
    pool = Pool(names=names, algorithm=algorithm)
    rng = np.random.default_rng(args.seed)
    one_row = row_bodies(rng, 1, 1)[0]
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=REQUEST_TIMEOUT, limits=limits
    ) as http:
        try:
            # Set-up: version 1 of every name, `prod` on it.
            semaphore = asyncio.Semaphore(4)

            async def first_version(name: str, seed: int) -> None:
                async with semaphore:
                    v = await train(http, pool, name, np.random.default_rng(seed), "setup")
                    if v is None:
                        c = pool.calls[-1]
                        raise SetupFailed(
                            f"set-up training of {name} answered "
                            f"{c.status or ''} {c.code} {c.error}"
                        )
                    body = json.dumps({"version": v}).encode()
                    call = Call("setup_alias", name, str(v), 0.0)
                    await send(http, pool, call, "PUT", f"/v1/models/{name}/aliases/{ALIAS}", body)

            await asyncio.gather(*(first_version(n, args.seed + i) for i, n in enumerate(names)))
            print(
                f"set-up: {len(names)} models trained; load for {args.seconds:g} s ...", flush=True
            )

            started = time.monotonic()
            pool.deadline = started + args.seconds
            seeds = iter(range(args.seed + 1000, args.seed + 2000))
            tasks = [predictor(http, pool, next(seeds)) for _ in range(args.predictors)]
            tasks += [
                trainer(http, pool, next(seeds), args.train_pause) for _ in range(args.trainers)
            ]
            tasks += [
                deleter(http, pool, next(seeds), args.delete_pause, args.model_delete_share)
                for _ in range(args.deleters)
            ]
            tasks += [
                alias_mover(http, pool, next(seeds), args.alias_pause)
                for _ in range(args.alias_movers)
            ]
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started

            gens = generations(pool.calls)
            acknowledged, deleted, verified, lost = await verify_survivors(
                http, pool.calls, gens, one_row
            )
            cache_size = await cache_size_metric(http)
        finally:
            if args.url and not args.keep:  # leave a shared server as it was
                for name in names:
                    with suppress(httpx.HTTPError):
                        await http.delete(f"/v1/models/{name}")
    return {
        "calls": pool.calls,
        "started": started,
        "elapsed": elapsed,
        "acknowledged": acknowledged,
        "deleted_by_test": deleted,
        "verified": verified,
        "lost": lost,
        "cache_size": cache_size,
    }


# -- the report --------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def memory_report(
    samples: list[tuple[float, dict[int, int]]], pid: int, elapsed: float, offset: float
) -> tuple[list[str], bool | None]:
    """Lines to print and whether memory stayed flat (None: not measured). ``offset``: the
    sampler's clock at the start of the load.

    Three series: the whole tree (server, forkserver, job workers: what the machine pays), the
    tree's lasting processes (those alive from the first to the last sample of the load: the
    server and its forkserver, without the job workers that come and go with each training) and
    the server process alone (it holds the model cache). The flat rule is applied to the last
    two; the whole tree swings by a worker's size whenever a training starts or ends."""
    load = [(t - offset, rss) for t, rss in samples if offset <= t <= offset + elapsed]
    if len(load) < 8:
        return ["memory: not measured (server process unknown: give --pid)"], None
    lasting = set(load[0][1]) & set(load[-1][1])
    series = {
        "whole tree": [sum(rss.values()) for _, rss in load],
        "lasting tree": [sum(v for p, v in rss.items() if p in lasting) for _, rss in load],
        "server process": [rss.get(pid, 0) for _, rss in load],
    }
    times = [t for t, _ in load]
    lines, flat = [], True
    for label, kb in series.items():
        values = [v / 1024 for v in kb]
        at_25 = [
            v for t, v in zip(times, values, strict=True) if 0.2 * elapsed <= t <= 0.3 * elapsed
        ]
        at_end = [v for t, v in zip(times, values, strict=True) if t >= 0.9 * elapsed]
        second = [(t, v) for t, v in zip(times, values, strict=True) if t >= elapsed / 2]
        slope = float(np.polyfit(*zip(*second, strict=True), 1)[0]) * 60
        ref, end = statistics.median(at_25), statistics.median(at_end)
        judged = label != "whole tree"
        ok = end <= ref * (1 + FLAT_TOLERANCE)
        if judged:
            flat = flat and ok
        verdict = ("flat" if ok else "GROWING") if judged else "(not judged)"
        lines.append(
            f"RSS {label:<14} start {values[0]:6.1f}  peak {max(values):6.1f}  end "
            f"{values[-1]:6.1f} MB | median 20-30% {ref:6.1f}, last 10% {end:6.1f} "
            f"({(end / ref - 1) * 100:+.1f}%) | slope 2nd half {slope:+.2f} MB/min  {verdict}"
        )
    counts = [len(rss) for _, rss in load]
    lines.append(
        f"processes in the tree: {min(counts)} to {max(counts)} ({len(lasting)} lasting); "
        f"{len(load)} samples every {SAMPLE_EVERY:g} s"
    )
    lines.append(
        "rule: flat when the median RSS of the last 10% of the run is within "
        f"{FLAT_TOLERANCE:.0%} of the median RSS between 20% and 30% of the run (lasting tree "
        "and server process)"
    )
    return lines, flat


def report(result: dict[str, Any], memory: tuple[list[str], bool | None], args) -> bool:
    calls: list[Call] = result["calls"]
    elapsed: float = result["elapsed"]
    started: float = result["started"]
    during = [c for c in calls if c.start >= started]
    kinds = sorted({c.kind for c in during}, key=lambda k: ("/" not in k, k))
    print()
    print(f"load: {elapsed:.1f} s, {len(during)} requests ({len(during) / elapsed:.1f}/s)")
    header = f"{'kind':<20}{'requests':>9}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses"
    print(header)
    print("-" * (len(header) + 30))
    for kind in kinds:
        these = [c for c in during if c.kind == kind]
        latencies = [(c.end - c.start) * 1000 for c in these]
        statuses = Counter(c.status or "err" for c in these)
        text = " ".join(f"{s}:{n}" for s, n in sorted(statuses.items(), key=lambda x: str(x[0])))
        print(
            f"{kind:<20}{len(these):>9}{len(these) / elapsed:>9.1f}"
            f"{percentile(latencies, 50):>9.1f}{percentile(latencies, 99):>9.1f}  {text}"
        )
    by_ref = Counter(
        ("latest" if c.ref == "latest" else "alias" if c.ref == ALIAS else "number", c.status)
        for c in during
        if "/" in c.kind
    )
    refs = ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(by_ref.items()))
    print(f"inference by reference: {refs}")

    fails: list[str] = []
    server_errors = [c for c in calls if c.status >= 500]
    transport = [c for c in calls if c.status == 0]

    # A 404 is expected where a deleted thing is asked for; a training (POST /v1/models) has
    # nothing to find, so a 404 there is no expected one.
    def expected(c: Call) -> bool:
        return c.status == 404 and c.code in EXPECTED_404 and c.kind not in TRAININGS

    expected_404 = Counter(c.code for c in calls if expected(c))
    unexpected_4xx = [c for c in calls if 400 <= c.status < 500 and not expected(c)]
    other_4xx = Counter((c.kind, c.status, c.code) for c in unexpected_4xx)
    from_deleted, probes = answered_from_deleted(calls)
    gens = generations(calls)
    losses = transient_losses(calls, gens)
    wrong = wrong_versions(calls) + shared_acknowledgements(gens)
    print()
    print(f"5xx: {len(server_errors)}")
    for c in server_errors[:5]:
        print(f"  {c.kind} {c.name} ref={c.ref}: {c.status} {c.code} {c.error}")
    print(f"transport errors (timeouts, dropped connections): {len(transport)}")
    for c in transport[:5]:
        print(f"  {c.kind} {c.name} ref={c.ref}: {c.error}")
    print(
        f"404 for deleted models/versions (expected): {sum(expected_404.values())} "
        f"{dict(expected_404)}"
    )
    print(f"other 4xx: {sum(other_4xx.values())} {dict(other_4xx) if other_4xx else ''}")
    shown: Counter = Counter()
    for c in unexpected_4xx:
        shown[(c.kind, c.status, c.code)] += 1
        if shown[(c.kind, c.status, c.code)] > 2:
            continue
        print(f"  {c.kind} {c.name} ref={c.ref} at {c.start - started:.2f} s: {c.error}")
        for d in overlapping_deletes(calls, c):
            print(
                f"    while {d.kind} {d.name}{' v' + d.ref if d.ref else ''} ran "
                f"({d.start - started:.2f}-{d.end - started:.2f} s, {d.status}, "
                f"deleted {d.deleted})"
            )
    print(
        f"answered from a deleted version: {len(from_deleted)} (requests judged, started "
        f"after their version's delete returned: {sum(probes.values())}, statuses "
        f"{dict(probes)})"
    )
    for line in from_deleted[:5]:
        print(f"  {line}")
    print(f"404 for an acknowledged version no delete had touched: {len(losses)}")
    for line in losses[:5]:
        print(f"  {line}")
    print(f"answers naming another version than asked, or another training's: {len(wrong)}")
    for line in wrong[:5]:
        print(f"  {line}")
    print(
        f"versions acknowledged (201): {result['acknowledged']}, deleted by the test "
        f"(or maybe): {result['deleted_by_test']}, verified at the end (GET same sha256 + "
        f"predict): {result['verified']}, lost: {len(result['lost'])}"
    )
    for line in result["lost"][:5]:
        print(f"  {line}")
    if server_errors:
        fails.append("5xx")
    if transport:
        fails.append("transport errors")
    if from_deleted:
        fails.append("answered from a deleted version")
    if losses or result["lost"]:
        fails.append("version lost")
    if wrong:
        fails.append("wrong version")

    lines, flat = memory
    for line in lines:
        print(line)
    if flat is False:
        fails.append("memory growth")
    cache = result["cache_size"]
    limit = args.cache_size if (not args.url or args.cache_size_given) else None
    if cache is None:
        print("lloyd_model_cache_size: not read from /metrics")
    elif limit is None:
        print(f"lloyd_model_cache_size at the end: {cache:g} (cache size unknown: not checked)")
    else:
        ok = cache <= limit
        print(f"lloyd_model_cache_size at the end: {cache:g} (<= {limit}: {'yes' if ok else 'NO'})")
        if not ok:
            fails.append("model cache over its bound")
    print()
    print("PASS" if not fails else f"FAIL: {', '.join(fails)}")
    return not fails


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the load")
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--api-key", help="the key to send (default: a generated one)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process, for memory")
    parser.add_argument(
        "--cache-size", type=int, help="LLOYD_MODEL_CACHE_SIZE of the started server (8)"
    )
    parser.add_argument("--models", type=int, default=20, help="model names in play (20)")
    parser.add_argument("--predictors", type=int, default=6)
    parser.add_argument("--trainers", type=int, default=2)
    parser.add_argument("--deleters", type=int, default=1)
    parser.add_argument("--alias-movers", type=int, default=1)
    parser.add_argument("--train-pause", type=float, default=0.2, help="seconds between trainings")
    parser.add_argument("--delete-pause", type=float, default=0.1, help="seconds between deletes")
    parser.add_argument("--alias-pause", type=float, default=0.1, help="seconds between moves")
    parser.add_argument(
        "--model-delete-share", type=float, default=0.1, help="share of deletes of whole models"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="with --url: keep the models")
    args = parser.parse_args()
    args.cache_size_given = args.cache_size is not None
    if args.cache_size is None:
        args.cache_size = 8

    with tempfile.TemporaryDirectory(prefix="lloyd-load-") as folder:
        server = None
        if args.url:
            base, key = args.url.rstrip("/"), args.api_key
            wait_ready(base, None, None)
            pid = args.pid
            if pid is None and urlsplit(base).hostname in ("127.0.0.1", "localhost", "::1"):
                pid = pid_listening_on(urlsplit(base).port or 80)
        else:
            key = args.api_key or new_key()
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = start_server(Path(folder), port, args.cache_size, key)
            pid = server.pid
            wait_ready(base, server, Path(folder) / "server.log")
        print(
            f"server {base} (pid {pid if pid else 'unknown'}), cache size "
            f"{args.cache_size if not args.url or args.cache_size_given else '?'}, "
            f"{args.models} models, clients: {args.predictors} predictors, {args.trainers} "
            f"trainers, {args.deleters} deleters, {args.alias_movers} alias movers",
            flush=True,
        )
        sampler = MemorySampler(pid) if pid else None
        try:
            if sampler:
                sampler.start()
            result = asyncio.run(run(args, base, key))
        except SetupFailed as exc:
            sys.exit(f"FAIL: {exc}")
        finally:
            if sampler:
                sampler.stop()
            if server is not None:
                stop_server(server)
                log = (Path(folder) / "server.log").read_text(errors="replace")
                tracebacks = log.count("Traceback")
                if tracebacks:
                    print(f"server log: {tracebacks} traceback(s); the first:")
                    print(log[log.index("Traceback") :][:3000])
        offset = (result["started"] - sampler.started_at) if sampler else 0.0
        memory = memory_report(
            sampler.samples if sampler else [], pid or 0, result["elapsed"], offset
        )
        ok = report(result, memory, args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
