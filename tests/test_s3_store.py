"""The feature store on an S3-compatible bucket (moto's server), through the real queue.

``ESC_S3_ENDPOINT_URL`` and the usual ``AWS_*`` variables configure s3fs in every
process: the CLI that lays the store out, the worker child processes that write
clips (they open their own store handles), and the training worker that reads them.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from contract.settings import Settings
from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from tests.test_queue_e2e import add_bad_clip, direct_extraction
from workers.features import FeatureConfig

pytestmark = pytest.mark.timeout(600)

BUCKET = "esc-features"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3(monkeypatch, cluster):
    """A moto S3 server on a free port with one bucket; the cluster's env points at it."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ESC_S3_ENDPOINT_URL": endpoint,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # for this process's FeatureStore/RunStore reads
    cluster.env.update(env)  # for the CLI subprocesses
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()


def test_storage_options_reach_s3fs():
    settings = Settings(s3_endpoint_url="http://minio:9000")
    options = settings.storage_options("s3://b/f.zarr")
    assert options == {"endpoint_url": "http://minio:9000"}
    assert settings.storage_options("/data/store/f.zarr") == {}
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    assert fs.client_kwargs.get("endpoint_url", fs.endpoint_url) == "http://minio:9000"
    assert fs.async_impl  # zarr's FsspecStore needs an async filesystem


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_submit_dataset_to_s3_and_train_from_it(cluster, make_dataset, s3):
    root = make_dataset(n_classes=3, folds=4, clips_per_class_per_fold=2, seed=7)
    bad = add_bad_clip(root)
    store_url = f"s3://{BUCKET}/features.zarr"
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=2, extra_env=s3)

    code, summary = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--wait")

    assert code == 1, summary  # the bad clip
    assert (summary["clips"], summary["done"], summary["failed"]) == (25, 24, 1)
    options = Settings.from_env().storage_options(store_url)
    assert options == {"endpoint_url": s3["ESC_S3_ENDPOINT_URL"]}
    store = FeatureStore.open(store_url, storage_options=options)
    config = FeatureConfig.from_dict(store.feature_config)
    done = store.done_mask()
    assert done.sum() == 24
    for i, rel in enumerate(store.rel_paths()):
        if rel == bad:
            assert not done[i]
            continue
        np.testing.assert_array_equal(store.read_clip(i), direct_extraction(root, rel, config))

    # the objects really are in the bucket (not in a local folder named s3:)
    import boto3

    client = boto3.client("s3", endpoint_url=s3["ESC_S3_ENDPOINT_URL"], region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.startswith("features.zarr/") and k.endswith("zarr.json") for k in keys)
    assert not (cluster.home / "s3:").exists()

    # resubmission finds the done clips in the bucket
    code, again = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--wait")
    assert again["enqueued"] == 0 and again["skipped_already_done"] == 24

    # a tiny cross-validation run reads its folds from the bucket and writes its results there
    cluster.start_worker(WorkerKind.TRAIN, extra_env=s3)
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", "1")
    code, report = cluster.cli_json(*args, "--epochs", "1", "--batch-size", "16", "--wait")
    assert code == 0, report
    assert report["complete"] and len(report["trials"]) == 1
    runs = RunStore(store_url, storage_options=options)
    assert report["run_id"] in runs.list_runs()
    predictions = runs.load_predictions(report["run_id"], report["trials"][0]["trial"])
    assert len(predictions["clip_labels"]) == 6  # every clip of the test fold, read from S3
