#!/usr/bin/env bash
# Wait until every container of the compose project is running and healthy.
#
#   COMPOSE_CMD="docker-compose -p drlbox -f deploy/docker-compose.yml" \
#       deploy/wait-healthy.sh [TIMEOUT_SECONDS] [SERVICE...]
#   deploy/wait-healthy.sh --report          # just print the diagnosis, exit 1
#
# SCALED_TO_ZERO="svc ..." names services started with --scale svc=0 (no container expected).
#
# Works with docker-compose 1.x and `docker compose` v2 (it asks compose only for container ids
# and reads state from `docker inspect`). Fails early when a container exits, restarts or turns
# unhealthy, and then prints each failing container's last health probes and logs.
set -uo pipefail

read -r -a compose <<<"${COMPOSE_CMD:-docker-compose -p drlbox -f deploy/docker-compose.yml}"

report=0
timeout=600
if [ "${1:-}" = --report ]; then
    report=1; shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    timeout="$1"; shift
fi
services=("$@")
if [ ${#services[@]} -eq 0 ]; then
    mapfile -t services < <("${compose[@]}" config --services 2>/dev/null \
        | grep -vxF -f <(printf '%s\n' ${SCALED_TO_ZERO:-} '#none#'))
fi
if [ ${#services[@]} -eq 0 ]; then
    echo "wait-healthy: '${compose[*]} config --services' listed no services" >&2
    exit 1
fi

state_of() {  # name status health restarts exit-code
    docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}} {{.RestartCount}} {{.State.ExitCode}}' "$1" 2>/dev/null \
        | sed 's|^/||'
}

diagnose() {
    echo
    echo "---- container states"
    "${compose[@]}" ps
    for id in "$@"; do
        read -r name status health restarts code <<<"$(state_of "$id")"
        echo
        echo "---- $name: $status, $health, restarts=$restarts, exit code $code"
        echo "last health probes:"
        docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}  exit {{.ExitCode}}: {{.Output}}{{end}}{{else}}  (none){{end}}' "$id" 2>/dev/null \
            | sed '/^[[:space:]]*$/d' | tail -n 6
        echo "last log lines:"
        docker logs --tail 40 "$id" 2>&1 | sed 's/^/  /'
    done
}

all_ids() {
    for service in "${services[@]}"; do
        "${compose[@]}" ps -a -q "$service" 2>/dev/null
    done
}

if [ "$report" = 1 ]; then
    mapfile -t ids < <(all_ids)
    diagnose "${ids[@]}"
    exit 1
fi

# Restarts that happened before this wait (e.g. a worker killed on purpose) are not failures;
# a restart while waiting is.
declare -A restarts_before
while read -r id; do
    [ -n "$id" ] || continue
    restarts_before[$id]="$(docker inspect -f '{{.RestartCount}}' "$id" 2>/dev/null || echo 0)"
done < <(all_ids)

start=$SECONDS
last=""
while :; do
    waiting=()
    failed=()
    missing=()
    for service in "${services[@]}"; do
        mapfile -t ids < <("${compose[@]}" ps -a -q "$service" 2>/dev/null)
        if [ ${#ids[@]} -eq 0 ]; then
            missing+=("$service")
            continue
        fi
        for id in "${ids[@]}"; do
            read -r name status health restarts _code <<<"$(state_of "$id")"
            if [ "$status" = exited ] || [ "$status" = dead ] || [ "$status" = restarting ] \
                    || [ "$health" = unhealthy ] \
                    || [ "${restarts:-0}" -gt "${restarts_before[$id]:-0}" ]; then
                failed+=("$id")
            elif [ "$status" != running ] || { [ "$health" != healthy ] && [ "$health" != no-healthcheck ]; }; then
                waiting+=("$name($health)")
            fi
        done
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "wait-healthy: ${#failed[@]} container(s) exited, restarted or turned unhealthy" >&2
        diagnose "${failed[@]}" >&2
        exit 1
    fi
    if [ ${#missing[@]} -gt 0 ] && [ $((SECONDS - start)) -ge 30 ]; then
        echo "wait-healthy: no container for service(s): ${missing[*]}" >&2
        diagnose $(all_ids) >&2
        exit 1
    fi
    if [ ${#waiting[@]} -eq 0 ] && [ ${#missing[@]} -eq 0 ]; then
        echo "wait-healthy: all containers healthy after $((SECONDS - start))s"
        exit 0
    fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
        echo "wait-healthy: still not healthy after ${timeout}s: ${waiting[*]} ${missing[*]}" >&2
        mapfile -t ids < <(all_ids)
        diagnose "${ids[@]}" >&2
        exit 1
    fi
    now="${waiting[*]} ${missing[*]}"
    if [ "$now" != "$last" ]; then
        echo "wait-healthy: $((SECONDS - start))s, waiting for: $now"
        last="$now"
    fi
    sleep 3
done
