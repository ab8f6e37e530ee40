#!/usr/bin/env bash
# Builds the clo-recipes images and prints their sizes. The same script runs here, in CI and in
# the publishing workflow (.github/workflows/docker-publish.yml), so what is published is what
# was built and run here.
#
#   docker/build.sh                      # both images from the public bases (python:3.11-slim)
#   docker/build.sh --only cpu           # one of them
#   docker/build.sh --local-base         # offline from a registry: a Debian base made with debootstrap
#   IMAGE=ghcr.io/me/clo-recipes VERSION=0.1.0 docker/build.sh --push
#
# --local-base: when no registry can be reached (this project's machine). It makes the image
# local/debian:bookworm once (debootstrap, about 3 minutes) and builds FROM it. That base trusts
# this machine's CA bundle (PIP_CERT), because pip's traffic goes through an intercepting proxy
# here; only this local base carries it, never the published images. The CPU image then takes
# torch's CPU wheel from pip's find-links folder (pip config), as the host's venv does.
#
# Environment: IMAGE (repository, default clo-recipes), VERSION (extra tags VERSION-cpu and
# VERSION-gpu), LOCAL_BASE (default local/debian:bookworm), DEBIAN_MIRROR, TORCH_WHEEL (a CPU
# torch wheel for --local-base), BUILD_ARGS (more --build-arg flags, e.g. FLASH_ATTN=1).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-clo-recipes}"
VERSION="${VERSION:-}"
LOCAL_BASE="${LOCAL_BASE:-local/debian:bookworm}"
only="" local_base=0 push=0
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only="$2"; shift 2 ;;
        --local-base) local_base=1; shift ;;
        --push) push=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$only" in ""|cpu|gpu) ;; *) echo "build.sh: --only takes cpu or gpu, not '$only'" >&2; exit 2 ;; esac

export DOCKER_BUILDKIT=1  # RUN --mount and skipped unused stages (the optional flash-attn build)

# A docker client that can build with BuildKit: one with the buildx plugin, or a client before
# 23.0 with BuildKit built in (a newer client without buildx refuses). DOCKER picks one.
pick_docker() {
    local candidate
    for candidate in ${DOCKER:-} $(type -ap docker); do
        if "$candidate" buildx version >/dev/null 2>&1 \
           || "$candidate" version --format '{{.Client.Version}}' 2>/dev/null | grep -qE '^(18|19|20|21|22)\.'; then
            echo "$candidate"; return
        fi
    done
    echo "build.sh: no docker client here builds with BuildKit: install the buildx plugin" >&2
    exit 1
}
DOCKER="$(pick_docker)"
docker() { "$DOCKER" "$@"; }

make_local_base() {
    if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then return; fi
    command -v debootstrap >/dev/null || { echo "build.sh: --local-base needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    local mirror rootfs
    # the Debian mirror apt already uses (deb822 sources or a classic sources.list)
    mirror="${DEBIAN_MIRROR:-$(grep -hsE '^(URIs:|deb) ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$(mktemp -d /tmp/clo-rootfs.XXXXXX)"
    echo "== making $LOCAL_BASE with debootstrap from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
    # this machine's CA bundle (its proxy's CA included), for pip inside builds FROM this base only
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' -c 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
}

find_torch_wheel() {
    # the CPU wheel in pip's find-links folder(s): PIP_FIND_LINKS or `pip config`
    local dirs dir wheel
    dirs="${PIP_FIND_LINKS:-} $(python3 -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p")"
    for dir in $dirs; do
        wheel="$(find "${dir#file://}" -maxdepth 1 -name 'torch-2.13.0+cpu-cp311-*.whl' 2>/dev/null | head -n1)"
        if [ -n "$wheel" ]; then echo "$wheel"; return; fi
    done
}

common=()
torch_args=()
if [ "$local_base" = 1 ]; then
    make_local_base
    common+=(--build-arg "BASE_IMAGE=$LOCAL_BASE")
    wheel="${TORCH_WHEEL:-$(find_torch_wheel)}"
    if [ -n "$wheel" ]; then
        # docker/wheels/ is the one folder of the build context a build reads wheels from
        ln -f "$wheel" docker/wheels/ 2>/dev/null || cp -f "$wheel" docker/wheels/
        torch_args=(--build-arg "TORCH_PIP_ARGS=--find-links /wheels")
    fi
fi
# shellcheck disable=SC2206  # BUILD_ARGS is a list of flags on purpose
common+=(${BUILD_ARGS:-})

build() {  # build KIND DOCKERFILE [extra args...]
    local kind="$1" file="$2"; shift 2
    local tags=(-t "$IMAGE:$kind")
    if [ -n "$VERSION" ]; then tags+=(-t "$IMAGE:$VERSION-$kind"); fi
    echo "== building $IMAGE:$kind from $file"
    local start=$SECONDS
    docker build -f "$file" "${tags[@]}" "${common[@]}" "$@" .
    echo "== $IMAGE:$kind built in $((SECONDS - start)) s"
    if [ "$push" = 1 ]; then
        docker push "$IMAGE:$kind"
        if [ -n "$VERSION" ]; then docker push "$IMAGE:$VERSION-$kind"; fi
    fi
}

if [ "$only" != gpu ]; then build cpu docker/Dockerfile.cpu "${torch_args[@]}"; fi
if [ "$only" != cpu ]; then build gpu docker/Dockerfile; fi

echo "== image sizes"
for kind in cpu gpu; do
    if [ "$only" = "" ] || [ "$only" = "$kind" ]; then
        docker image inspect "$IMAGE:$kind" --format "$IMAGE:$kind {{.Size}}" \
            | awk '{printf "%s  %.2f GB (%.0f bytes, uncompressed)\n", $1, $2 / 1e9, $2}'
    fi
done
