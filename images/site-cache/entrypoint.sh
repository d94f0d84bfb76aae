#!/bin/bash
# Starts the site cache: the registry (pull-through proxy of the central registry) and nginx
# (the artifact cache, and the registry's one-fetch-per-layer path to the centre). When either
# process ends the other is stopped and the container exits, so its restart policy restarts both.
#
# Reads /etc/site-cache (or $SITE_CACHE_CONFIG): registry.yml, nginx.conf (and the files it
# includes), tls.crt, tls.key and users (one "name:password" line per device account, hashed
# here with bcrypt into a file only this container reads; the plain file is mounted read-only).
set -euo pipefail

conf=${SITE_CACHE_CONFIG:-/etc/site-cache}
run=/run/site-cache
data=/var/lib/site-cache

say() { printf '{"time":"%s","source":"site-cache","msg":"%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >&2; }

for f in registry.yml nginx.conf tls.crt tls.key users; do
    if [ ! -r "$conf/$f" ]; then
        say "$conf/$f is missing or not readable by uid $(id -u)"
        exit 64
    fi
done

mkdir -p "$data/registry" "$data/nginx" "$data/tmp"
umask 077
htpasswd_new=$(mktemp "$run/htpasswd.XXXXXX")
accounts=0
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    user=${line%%:*}
    # the password goes through stdin, never on a command line
    printf '%s\n' "${line#*:}" | htpasswd -i -B -n "$user" | sed -n 1p >>"$htpasswd_new"
    accounts=$((accounts + 1))
done <"$conf/users"
mv "$htpasswd_new" "$run/htpasswd"
if [ "$accounts" -eq 0 ]; then
    say "$conf/users holds no account: every request will be refused"
fi

# Signs the registry's upload state (a proxy takes none): random, kept with the data.
if [ ! -s "$data/http-secret" ]; then
    head -c 32 /dev/urandom | base64 >"$data/http-secret"
fi

nginx -e stderr -c "$conf/nginx.conf" -t -q

REGISTRY_HTTP_SECRET=$(cat "$data/http-secret") docker-registry serve "$conf/registry.yml" &
registry=$!
nginx -e stderr -c "$conf/nginx.conf" -g 'daemon off;' &
proxy=$!
say "started registry (pid $registry) and nginx (pid $proxy) with $accounts device account(s)"

trap 'kill -TERM "$registry" "$proxy" 2>/dev/null || true' TERM INT
set +e
wait -n "$registry" "$proxy"
status=$?
kill -TERM "$registry" "$proxy" 2>/dev/null
wait
say "stopped (first exit status $status)"
exit "$status"
