#!/bin/sh
set -eu
if [ "$1" = rabbitmq-server ]; then
  : "${RABBITMQ_DEFAULT_USER:?}" "${RABBITMQ_DEFAULT_PASS:?}"
  umask 077
  {
    echo "listeners.tcp.default = 5672"
    echo "loopback_users = none"
    echo "default_user = $RABBITMQ_DEFAULT_USER"
    echo "default_pass = $RABBITMQ_DEFAULT_PASS"
  } > /etc/rabbitmq/rabbitmq.conf
  chown rabbitmq:rabbitmq /etc/rabbitmq/rabbitmq.conf
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  # The password is in rabbitmq.conf (the broker's own, mode 0600): the broker keeps none in its environment.
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env -u RABBITMQ_DEFAULT_PASS HOME=/var/lib/rabbitmq \
    rabbitmq-server
fi
exec "$@"
