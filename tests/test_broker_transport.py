"""The Celery app's Redis transport: one redis-py client per pool, same URLs and messages."""

from __future__ import annotations

import redis
from kombu import Exchange, Queue

from contract.settings import Settings
from tests.conftest import RedisDb
from workers.broker import RedisTransport
from workers.celery_app import create_app


def _count_clients(monkeypatch) -> list[int]:
    built = [0]
    init = redis.Redis.__init__

    def counting_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        built[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting_init)
    return built


def test_redis_urls_use_the_transport_and_keep_their_scheme(redis_db: RedisDb) -> None:
    app = create_app(Settings.from_env({"REDIS_URL": redis_db.url}))
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, RedisTransport)
        assert conn.as_uri().startswith("redis://")  # the worker's banner, Flower
    app.close()


def test_messages_round_trip_with_one_client_per_pool(redis_db: RedisDb, monkeypatch) -> None:
    app = create_app(Settings.from_env({"REDIS_URL": redis_db.url}))
    queue = Queue("t-broker", Exchange("t-broker"), routing_key="t-broker")
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        built = _count_clients(monkeypatch)
        with conn.Producer(serializer="json") as producer:
            for i in range(50):
                producer.publish(
                    {"i": i}, exchange=queue.exchange, routing_key="t-broker", declare=[queue]
                )
        got: list[int] = []
        with conn.SimpleQueue(queue) as simple:
            for _ in range(50):
                message = simple.get(timeout=5)
                got.append(message.payload["i"])
                message.ack()
        assert got == list(range(50))
        # kombu's own channel built a redis.Redis for each publish and ack (100 here)
        assert built[0] <= 3, built[0]
        assert redis_db.client.llen("t-broker") == 0

        # a replaced pool (kombu drops it after a lost connection) gets its own client
        client = channel._create_client()
        assert channel._create_client() is client
        channel._pool = None
        fresh = channel._create_client()
        assert fresh is not client and fresh.connection_pool is channel.pool
        assert fresh.ping()
    app.close()
