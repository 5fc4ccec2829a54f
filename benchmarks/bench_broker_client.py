"""What kombu's Redis channel costs per message, with and without one shared redis-py client.

kombu's stock channel (``kombu.transport.redis.Channel``) builds a new ``redis.Redis``
around its connection pool for every group of commands: each publish, each ack. The
Celery app's transport (``workers.broker.RedisTransport``) keeps one client per pool.
In one run, against an embedded Redis server started here, for each of the two
transports in turn (``--rounds`` times, alternating; the median is shown):

1. publish ``--messages`` small JSON messages to a queue (what ``submit-dataset`` does
   per message);
2. fetch and ack each of them (the commands a worker's main process runs per message,
   less Celery's own work);

and, for scale, the CPU of one ``redis.Redis(connection_pool=...)`` build. CPU of
this process, microseconds per message. Then, through a real ``celery worker``
(prefork, concurrency 1, one clip per message as the test suite runs them) on
``--clips`` generated 0.5-s clips, each transport in turn (the baseline's worker and
CLI are started with ``workers.broker.use_shared_client_transport`` disabled, so
``redis://`` keeps kombu's stock transport): the CPU of ``submit-dataset --no-wait``
(the whole command) and of the worker (main process and pool child) from its
``ready`` to the queue's end, milliseconds per message.

    .venv/bin/python benchmarks/bench_broker_client.py [--messages N] [--clips C] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from _common import children_cpu, ms_per_call, worker_tree_cpu
from kombu import Connection, Exchange, Queue

from contract.wire import EXTRACT_QUEUE
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import WorkerKind, worker_command
from orchestrator.synthetic import make_synthetic_dataset
from workers.broker import UNACKED_KEY

# Runs a command (``orchestrator`` or ``celery``) with kombu's stock Redis transport.
_STOCK = (
    "import runpy, sys, workers.broker as b; b.use_shared_client_transport = lambda: None; "
    "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')"
)

TRANSPORTS = {
    "kombu's stock channel (baseline)": "kombu.transport.redis:Transport",
    "one client per pool (workers.broker)": "workers.broker:RedisTransport",
}


def _round(url: str, transport: str, n: int) -> tuple[float, float]:
    """CPU microseconds per message to publish ``n`` messages, then to fetch and ack them."""
    queue = Queue("bench-broker", Exchange("bench-broker"), routing_key="bench-broker")
    with Connection(url, transport=transport) as conn:
        with conn.Producer(serializer="json") as producer:
            producer.publish(
                {"warm": True}, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
            )
            cpu = time.process_time()
            for i in range(n):
                producer.publish({"i": i}, exchange=queue.exchange, routing_key=queue.name)
            publish = (time.process_time() - cpu) / n * 1e6
        with conn.SimpleQueue(queue) as simple:
            simple.get(timeout=5).ack()
            cpu = time.process_time()
            for _ in range(n):
                simple.get(timeout=5).ack()
            consume = (time.process_time() - cpu) / n * 1e6
    return publish, consume


def _worker_round(url: str, data: Path, work: Path, *, stock: bool, n: int) -> tuple[float, float]:
    """CPU ms per message of ``submit-dataset`` and of one worker over ``n`` messages."""
    env = {
        **os.environ,
        "REDIS_URL": url,
        "ESC_HOME": str(work / "home"),
        "ESC_EXTRACT_BATCH": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    client = redis.Redis.from_url(url)
    client.flushdb()
    prefix = [sys.executable, "-c", _STOCK] if stock else [sys.executable, "-m"]
    log = work / f"worker-{stock}.log"
    cmd = worker_command(WorkerKind.EXTRACT, concurrency=1, name=f"bench-{stock}@%h")
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [*prefix, *cmd[2:]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        before = sum(worker_tree_cpu(worker.pid))
        cli = children_cpu()
        store = str(work / f"store-{stock}-{time.monotonic_ns()}.zarr")
        subprocess.run(
            [*prefix, "orchestrator", "submit-dataset", str(data), "--store", store, "--no-wait"],
            env=env,
            check=True,
            capture_output=True,
        )
        cli = children_cpu() - cli
        while client.llen(EXTRACT_QUEUE) or client.hlen(UNACKED_KEY):
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        used = sum(worker_tree_cpu(worker.pid)) - before
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    return cli / n * 1e3, used / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per round (default 3000)")
    parser.add_argument("--clips", type=int, default=2000, help="worker rows (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median; default 3)")
    args = parser.parse_args()
    per = max(1, args.clips // 40)
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        url = server.ensure_running()
        try:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in TRANSPORTS}
            for _ in range(args.rounds):
                for name, transport in TRANSPORTS.items():
                    results[name].append(_round(url, transport, args.messages))
            pool = redis.ConnectionPool.from_url(url)
            build_ms = ms_per_call(lambda i: redis.Redis(connection_pool=pool), 2000)[1]
            data = make_synthetic_dataset(
                Path(tmp) / "data",
                n_classes=10,
                folds=4,
                clips_per_class_per_fold=per,
                seconds=0.5,
                sample_rate=16000,
            )
            worker_rows: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(args.rounds):
                for stock in (True, False):
                    worker_rows[stock].append(
                        _worker_round(url, data, Path(tmp), stock=stock, n=per * 40)
                    )
        finally:
            server.stop()
    print(
        f"{args.messages} messages per round, median of {args.rounds} rounds; redis-py "
        f"{redis.__version__}; one redis.Redis build: {build_ms * 1e3:.0f} us of CPU\n"
    )
    print("| transport | publish, CPU us/message | fetch + ack, CPU us/message |")
    print("|---|---:|---:|")
    for name, rows in results.items():
        publish = statistics.median(r[0] for r in rows)
        consume = statistics.median(r[1] for r in rows)
        print(f"| {name} | {publish:.0f} | {consume:.0f} |")
    print(
        f"\n{per * 40} one-clip messages (0.5-s clips) through one worker process, "
        f"concurrency 1, median of {args.rounds} rounds\n"
    )
    print("| transport | `submit-dataset`, CPU ms/message | worker, CPU ms/message |")
    print("|---|---:|---:|")
    for (name, _), stock in zip(TRANSPORTS.items(), (True, False), strict=True):
        cli = statistics.median(r[0] for r in worker_rows[stock])
        used = statistics.median(r[1] for r in worker_rows[stock])
        print(f"| {name} | {cli:.2f} | {used:.2f} |")


if __name__ == "__main__":
    main()
