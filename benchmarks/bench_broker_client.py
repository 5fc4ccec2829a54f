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
this process, microseconds per message.

    .venv/bin/python benchmarks/bench_broker_client.py [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis
from _common import ms_per_call
from kombu import Connection, Exchange, Queue

from orchestrator.embedded_redis import EmbeddedRedis

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median; default 3)")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
