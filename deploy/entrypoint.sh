#!/bin/sh
# Volumes are mounted owned by root: hand /data to the service user, then drop privileges
# for good. `exec` replaces the shell, so authstore is PID 1 and gets SIGTERM directly.
set -eu
if [ "$(id -u)" = "0" ]; then
    chown -R authstore:authstore /data
    exec setpriv --reuid=authstore --regid=authstore --init-groups --inh-caps=-all /usr/local/bin/authstore "$@"
fi
exec /usr/local/bin/authstore "$@"
