#!/usr/bin/env bash
# Builds, from Debian packages only (no registry), the images the stack needs on an air-gapped engine:
#   mfe-local/debian:bookworm   one debootstrap rootfs (python3, PostgreSQL 15, Redis, RabbitMQ, nginx)
#   mfe-local/python:3.11       the services' base image
#   mfe-local/postgres:15 redis:7 rabbitmq:3 nginx:1.22   stand-ins honouring the official images' interface
#   mfe-local/prometheus:2      Prometheus from this machine's Debian package (when installed)
# Idempotent: an image that exists is kept (a stand-in: while its folder is unchanged); the rootfs is cached in $MFE_IMAGE_CACHE (default
# /var/cache/mfe-images). The Debian mirror is read from this machine's apt sources.
set -euo pipefail
cd "$(dirname "$0")"
cache=${MFE_IMAGE_CACHE:-/var/cache/mfe-images}
base=${MFE_BASE_IMAGE:-mfe-local/debian:bookworm}

mirror() {
  local uri
  uri=$(grep -rhoE '(URIs: |deb )https?://[^ ]*debian[^ ]*' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -v security | head -n1 | sed -E 's/^(URIs: |deb )//')
  echo "${uri:-http://deb.debian.org/debian}"
}

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$base"; then
  if [ ! -f "$cache/rootfs/.complete" ]; then
    rm -rf "$cache/rootfs" && mkdir -p "$cache"
    echo "images: debootstrap bookworm from $(mirror) (about a minute)" >&2
    debootstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates,postgresql-15,redis-server,rabbitmq-server,nginx-light,tini \
      bookworm "$cache/rootfs" "$(mirror)" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    # Package scripts may have left servers running inside the chroot's namespace: nothing to stop, but
    # the caches are not needed in an image.
    rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"*
    touch "$cache/rootfs/.complete"
  fi
  echo "images: importing $base" >&2
  tar -C "$cache/rootfs" --exclude=./.complete -c . | docker import - "$base" >/dev/null
fi

# A stand-in is rebuilt when its folder changed (an entrypoint fixed in a later release): its label holds
# the folder's digest.
context_digest() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16); }
built_from() { docker image inspect -f '{{index .Config.Labels "mfe.context"}}' "$1" 2>/dev/null || true; }
for name in python:3.11 postgres:15 redis:7 rabbitmq:3 nginx:1.22; do
  digest=$(context_digest "${name%%:*}")
  if [ "$(built_from "mfe-local/$name")" != "$digest" ]; then
    echo "images: building mfe-local/$name" >&2
    # Its output only on failure: the legacy builder's deprecation notice is not news.
    out=$(docker build -q -t "mfe-local/$name" --label "mfe.context=$digest" --build-arg "BASE=$base" "${name%%:*}" 2>&1) \
      || { echo "$out" >&2; exit 1; }
  fi
done
# Prometheus (monitoring.enabled): Debian's binary from this machine's package, when it is installed.
if ! have mfe-local/prometheus:2 && [ -x /usr/bin/prometheus ]; then
  echo "images: building mfe-local/prometheus:2" >&2
  context=$(mktemp -d)
  cp prometheus/Dockerfile /usr/bin/prometheus /usr/bin/promtool "$context/"
  docker build -q -t mfe-local/prometheus:2 --build-arg "BASE=$base" "$context" >/dev/null
  rm -rf "$context"
fi
echo "images: ready" >&2
