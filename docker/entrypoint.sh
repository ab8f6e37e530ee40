#!/bin/sh
# Runs clo-recipe as the owner of /work, so what a run writes into your mounted folder belongs to
# you, with no --user flag and whatever your uid is:
#   - started as root (the default): take the uid:gid that owns /work, give the cache volume to
#     that user when it belongs to someone else (a named volume starts as the image's uid 1000),
#     and drop root with setpriv before anything runs. /work owned by root (rootless Docker or
#     Podman, where root in here is you on the host; or a root-owned folder): stay root.
#   - started with --user UID:GID: run as that user, as asked; /cache must be writable by it.
set -eu

if [ "$(id -u)" = 0 ]; then
    uid="$(stat -c %u /work)"
    gid="$(stat -c %g /work)"
    if [ "$uid" != 0 ]; then
        if [ "$(stat -c %u /cache)" != "$uid" ]; then
            chown -R "$uid:$gid" /cache
        fi
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- clo-recipe "$@"
    fi
fi
exec clo-recipe "$@"
