#!/usr/bin/env bash
# Make the local base image of the Dockerfiles from Debian packages, without
# any image registry:
#
#   scripts/make-base-image.sh [IMAGE]        # default esc-base:bookworm
#   docker build --build-arg PYTHON_IMAGE=esc-base:bookworm -f docker/Dockerfile .
#
# mmdebstrap builds a minimal Debian bookworm root filesystem with Python 3.11
# (python3, python3-venv) and `docker import` turns it into an image. The root
# gets the host's apt sources and the host's extra certificate authorities
# (/usr/local/share/ca-certificates), so apt and pip inside a build (run with
# host networking) reach the same package mirrors the host does. `python` is
# linked to python3 as in the official python images, and pip uses the system
# certificate store (/etc/pip.conf). Idempotent: an existing
# IMAGE is kept unless FORCE=1.
set -euo pipefail

IMAGE=${1:-esc-base:bookworm}
SUITE=${SUITE:-bookworm}
DOCKER=${DOCKER:-docker}

if [[ ${FORCE:-0} != 1 ]] && $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists (FORCE=1 to rebuild)"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap missing: apt-get install mmdebstrap" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

# The host's own Debian sources (deb822 or one-line), else mmdebstrap's default mirror.
mirror_args=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -s $f ]] && grep -q '^[^#]' "$f"; then
        mirror_args=("$f")
        break
    fi
done

mmdebstrap --variant=minbase --mode=root \
    --include=python3,python3-venv,ca-certificates \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do [ -e "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; true' \
    --customize-hook='chroot "$1" update-ca-certificates' \
    --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$root" "${mirror_args[@]}"

tar -C "$root" -c . | $DOCKER import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE"
echo "base image $IMAGE: $($DOCKER image inspect -f '{{.Size}}' "$IMAGE") bytes"
