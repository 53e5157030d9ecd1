#!/bin/sh
# As the official image's entrypoint (3.9 and later): as root, hand the data folder to the rabbitmq user and
# run the broker as that user with the environment it was given. Its configuration is whatever the files in
# RABBITMQ_CONFIG_FILES (default /etc/rabbitmq/conf.d) and RABBITMQ_DEFAULT_USER/PASS, if set, say.
set -eu
if [ "$1" = rabbitmq-server ] && [ "$(id -u)" = 0 ]; then
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  # Debian's /usr/sbin/rabbitmq-server writes a startup log under /var/log: the server script itself, as the
  # official image runs it.
  shift
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq \
    /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
