#!/usr/bin/env bash
# Build one target of the Dockerfile (cpu or gpu) as the image facedemo:TARGET.
#
#   deploy/build-image.sh cpu|gpu
#
# With a Docker engine (`docker info` succeeds) this is plain `docker build --target TARGET`.
# Without one it uses buildah (Debian package `buildah`) and, instead of pulling python:3.12-slim
# from a registry, a stand-in base image: a minimal Debian root filesystem with Python 3 made by
# debootstrap (package `debootstrap`) from the Debian mirror in this machine's apt sources. The
# stand-in is made once and kept in buildah's storage under IMAGE_CACHE_DIR (default
# /var/cache/facedemo-image), outside the checkout, so later builds and fresh clones reuse it.
#
# Environment: IMAGE_CACHE_DIR as above; IMAGE_BUILDER=docker|buildah forces a builder;
# IMAGE_STORAGE_DRIVER=overlay (default) or vfs for buildah. buildah's storage is this script's
# own; `--buildah-args` prints the options that reach it (paths without spaces):
#   buildah $(deploy/build-image.sh --buildah-args) images
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="${IMAGE_CACHE_DIR:-/var/cache/facedemo-image}"
# The stand-in's name carries its recipe, so a changed recipe builds a new one.
BASE_SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,ca-certificates"
BASE_IMAGE="localhost/facedemo-python-standin:${BASE_SUITE}-1"

# overlay needs no copy per layer; vfs works everywhere (nested containers, odd filesystems).
STORAGE_DRIVER="${IMAGE_STORAGE_DRIVER:-overlay}"
BUILDAH=(buildah --root "$CACHE_DIR/storage-$STORAGE_DRIVER"
    --runroot "$CACHE_DIR/run-$STORAGE_DRIVER" --storage-driver "$STORAGE_DRIVER")

say() { echo "build-image: $*" >&2; }

use_docker() {
    case "${IMAGE_BUILDER:-auto}" in
        docker) return 0 ;;
        buildah) return 1 ;;
        *) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
    esac
}

# The first Debian mirror the machine's apt sources name for $BASE_SUITE (deb822 or one-line).
debian_mirror() {
    local mirror=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        mirror="$(awk -v suite="$BASE_SUITE" '
            /^$/ { if (uri != "" && found) { print uri; exit } uri = ""; found = 0 }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
            END { if (uri != "" && found) print uri }
        ' /etc/apt/sources.list.d/*.sources | head -n 1)"
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror="$(awk -v suite="$BASE_SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' \
            /etc/apt/sources.list)"
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

# The stand-in for python:3.12-slim: what the Dockerfile needs from it is `python` with venv,
# useradd/groupadd, and CA certificates for pip.
ensure_base_image() {
    if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        say "stand-in base $BASE_IMAGE is cached"
        return
    fi
    local rootfs="$CACHE_DIR/rootfs.tmp" mirror started container mount
    mirror="$(debian_mirror)"
    started=$(date +%s)
    say "making the stand-in base with debootstrap ($BASE_SUITE from $mirror)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" "$mirror" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    container="$("${BUILDAH[@]}" from scratch)"
    mount="$("${BUILDAH[@]}" mount "$container")"
    cp -a "$rootfs/." "$mount/"
    "${BUILDAH[@]}" umount "$container" >/dev/null
    "${BUILDAH[@]}" config --env LANG=C.UTF-8 --cmd python3 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
    "${BUILDAH[@]}" commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    say "stand-in base $BASE_IMAGE made in $(($(date +%s) - started)) s"
}

build_with_buildah() {
    local target="$1" volumes=()
    for tool in buildah debootstrap; do
        command -v "$tool" >/dev/null || {
            say "no Docker engine and no $tool: apt-get install buildah debootstrap"
            exit 1
        }
    done
    mkdir -p "$CACHE_DIR"
    # One build at a time in the shared storage (CI and a person on the same machine, say).
    exec 9>"$CACHE_DIR/lock"
    flock 9
    ensure_base_image
    # A build needs several times its image's size free while it runs (see docs/deploy.md), so
    # nothing stays that this build does not need: what an interrupted or failed build left (its
    # working containers, untagged layers) and the image this one replaces. A failed build clears
    # up after itself too.
    clear_leftovers
    "${BUILDAH[@]}" rmi "facedemo:$target" >/dev/null 2>&1 || true
    # Each commit's layers would otherwise pile up (several GB a build): what stays is the
    # stand-in base and the tagged images.
    trap clear_leftovers EXIT
    local free needed
    free="$(free_gb)"
    needed="$(peak_gb "$target")"
    say "$free GB free in $CACHE_DIR; a $target build has needed about $needed GB at its peak"
    awk -v free="$free" -v needed="$needed" 'BEGIN { exit !(free < needed) }' \
        && say "warning: it may run out of disk space (free some, or set IMAGE_CACHE_DIR)"
    # pip inside the build trusts what the host trusts (a TLS-inspecting proxy's CA, say) and
    # follows the host's system-wide pip configuration.
    for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
        [ -f "$file" ] && volumes+=(-v "$file:$file:ro")
    done
    "${BUILDAH[@]}" bud --isolation chroot --format docker --quiet \
        --target "$target" --build-arg PYTHON_IMAGE="$BASE_IMAGE" "${volumes[@]}" \
        -t "facedemo:$target" "$ROOT"
}

# Working containers (one run by hand too: docs/deploy.md) and untagged layers.
clear_leftovers() {
    "${BUILDAH[@]}" rm --all >/dev/null
    "${BUILDAH[@]}" rmi --prune >/dev/null
}

# The most disk a build has taken on top of what it started with (buildah 1.28, overlay, measured
# as the peak of df's Used while it ran; docs/deploy.md): the build stage's virtualenv, its copy
# into the target stage and that stage's commit.
peak_gb() {
    case "$1" in
        cpu) echo 8 ;;
        gpu) echo 32 ;;
    esac
}

free_gb() {
    df -Pk "$CACHE_DIR" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'
}

main() {
    if [ "${1:-}" = "--buildah-args" ]; then
        echo "${BUILDAH[@]:1}"
        return
    fi
    local target="${1:-}"
    case "$target" in
        cpu | gpu) ;;
        *)
            echo "usage: $0 cpu|gpu" >&2
            exit 2
            ;;
    esac
    local started
    started=$(date +%s)
    if use_docker; then
        say "building target $target with Docker"
        docker build --target "$target" -t "facedemo:$target" "$ROOT"
    else
        say "no Docker engine: building target $target with buildah"
        build_with_buildah "$target"
    fi
    say "facedemo:$target built in $(($(date +%s) - started)) s"
}

main "$@"
