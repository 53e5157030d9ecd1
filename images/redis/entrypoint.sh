#!/bin/sh
# As the official image: run as the redis user, protected mode off (the network is the boundary).
set -eu
if [ "$1" = redis-server ]; then
  chown -R redis:redis /data
  shift
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no --dir /data "$@"
fi
exec "$@"
