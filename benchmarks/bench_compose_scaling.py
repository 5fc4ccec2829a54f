"""Extraction throughput: N extract-worker containers vs N plain worker processes, one run.

Run by ``scripts/compose-smoke.sh bench`` (which installs the engine, builds the
images and starts redis + flower with docker/compose.hostnet.yml, then calls this
with DOCKER, COMPOSE_ENV, COMPOSE_PROJECT and PYTHONPATH set). For each N in --counts, in
rounds:

- containers: ``docker compose up --scale extract-worker=N`` (each
  ``worker extract --concurrency 1``, the real subset bind-mounted read-only at
  /data/raw), then ``submit-dataset /data/raw --wait`` in an orchestrator
  container, into a fresh store on the ``store`` volume;
- processes: the extract-worker containers stopped, N ``orchestrator worker
  extract -c 1`` processes of this checkout on the host, then ``submit-dataset``
  of the same clips from the host, into a fresh store in a temporary folder.

Both use the same Redis (the compose one, on 127.0.0.1) and the same code. The time
is the submission's own record, from its creation (after scan and store layout)
to the end of ``--wait``, so the seconds a ``docker compose run`` needs to start
a container are not counted against the containers.

    sudo scripts/compose-smoke.sh bench          # BENCH_ARGS="--rounds 2" for more
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from contract.settings import Settings
from orchestrator.health import read_node_file
from orchestrator.local_workers import start_worker, stop_worker
from workers.celery_app import create_app
from workers.redis_records import SubmissionRecords

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO.parent / "shared" / "data" / "us8k-subset"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


class Compose:
    def __init__(self, docker: str, env_file: Path, project: str) -> None:
        self.base = [
            *shlex.split(docker),
            "compose",
            "-p",
            project,
            "--env-file",
            str(env_file),
            "-f",
            str(REPO / "docker-compose.yml"),
            "-f",
            str(REPO / "docker" / "compose.hostnet.yml"),
        ]

    def __call__(self, *args: str, capture: bool = False) -> str:
        proc = subprocess.run(
            [*self.base, *args], check=True, text=True, capture_output=capture, timeout=900
        )
        return proc.stdout if capture else ""


def wait_nodes(settings: Settings, want: int, prefix: str, timeout: float = 300) -> list[str]:
    """Wait until exactly ``want`` worker nodes whose names start with ``prefix`` answer."""
    app = create_app(settings)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            nodes = sorted(n for r in replies for n in r if n.startswith(prefix))
            if len(nodes) == want:
                return nodes
            time.sleep(0.5)
    finally:
        app.close()
    raise TimeoutError(f"{want} nodes {prefix}* did not answer in {timeout} s")


def timed(records: SubmissionRecords, out: str) -> tuple[int, float]:
    data = json.loads(out)
    assert data["failed"] == 0 and data["remaining"] == 0, data
    record = records.get_submission(data["submission"])
    assert record is not None and record.finished is not None, data
    return int(data["done"]), record.finished - record.created


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SUBSET)
    ap.add_argument("--counts", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, help="Write the rows here too.")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} is absent (the real subset is only on developer/CI machines)")
    counts = [int(c) for c in args.counts.split(",")]

    base_env = Path(os.environ["COMPOSE_ENV"])
    env = read_env(base_env)
    tmp = Path(tempfile.mkdtemp(prefix="bench-compose-"))
    bench_env = tmp / "bench.env"
    bench_env.write_text(
        base_env.read_text() + f"RAW_DATA={args.data.resolve()}\nEXTRACT_CONCURRENCY=1\n"
    )
    dc = Compose(os.environ.get("DOCKER", "docker"), bench_env, os.environ["COMPOSE_PROJECT"])
    url = f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{env['REDIS_PORT']}/0"
    host_env = {
        **os.environ,
        "REDIS_URL": url,
        "ESC_HOME": str(tmp / "home"),
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    settings = Settings.from_env(host_env)
    records = SubmissionRecords(redis.Redis.from_url(url), ttl=settings.record_ttl)
    orchestrator = [sys.executable, "-m", "orchestrator"]

    rows: list[dict[str, object]] = []
    for r in range(args.rounds):
        for n in counts:
            dc("up", "-d", "--no-build", "--scale", f"extract-worker={n}", "extract-worker")
            wait_nodes(settings, n, "celery@extract-")
            out = dc(
                "run", "--rm", "--no-deps", "-T", "orchestrator", "submit-dataset", "/data/raw",
                "--store", f"/data/store/bench-c{n}-r{r}.zarr", "--json", capture=True,
            )  # fmt: skip
            clips, secs = timed(records, out)
            rows.append({"setup": "containers", "workers": n, "clips": clips, "seconds": secs})
            print(f"round {r}: {n} container(s): {clips} clips in {secs:.2f} s", flush=True)
            dc("stop", "--timeout", "30", "extract-worker")

            procs = []
            try:
                for i in range(n):
                    node_env = {**host_env, "ESC_NODE_FILE": str(tmp / f"nodes-{n}-{r}-{i}")}
                    cmd = [*orchestrator, "worker", "extract", "-c", "1", "--loglevel", "WARNING"]
                    procs.append(start_worker(cmd, env=node_env, log_path=str(tmp / "w.log")))
                wait_nodes(settings, n, "celery@extract-")
                out = subprocess.run(
                    [*orchestrator, "submit-dataset", str(args.data),
                     "--store", str(tmp / f"bench-p{n}-r{r}.zarr"), "--json"],
                    env=host_env, check=True, capture_output=True, text=True, timeout=900,
                ).stdout  # fmt: skip
            finally:
                for p in procs:
                    stop_worker(p)
            clips, secs = timed(records, out)
            rows.append({"setup": "processes", "workers": n, "clips": clips, "seconds": secs})
            print(f"round {r}: {n} process(es): {clips} clips in {secs:.2f} s", flush=True)
            assert all(read_node_file(tmp / f"nodes-{n}-{r}-{i}") for i in range(n))

    print(
        "\n| workers | containers clips/s | processes clips/s | containers / processes |"
        "\n|---:|---:|---:|---:|"
    )
    for n in counts:
        c = [x for x in rows if x["setup"] == "containers" and x["workers"] == n]
        p = [x for x in rows if x["setup"] == "processes" and x["workers"] == n]
        rate_c = sum(x["clips"] for x in c) / sum(x["seconds"] for x in c)  # type: ignore[misc]
        rate_p = sum(x["clips"] for x in p) / sum(x["seconds"] for x in p)  # type: ignore[misc]
        print(f"| {n} | {rate_c:.1f} | {rate_p:.1f} | {rate_c / rate_p:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
