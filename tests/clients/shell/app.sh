#!/usr/bin/env bash
# A test worker of the shell client: bash app.sh [--plain|--reliable] QUEUE[,QUEUE...] [NEXT_QUEUE]
#   (without --plain or --reliable, the client's default: reliable, unless TEMPEST_RELIABLE says no)
#   url jobs, by path: /stream, /abort (fails in the middle of a stream), /session/set?v=X,
#   /session/get, /session/regenerate, /publish?c=CHANNEL, /forward (a greet job to NEXT_QUEUE),
#   /gather?q=QUEUE,...&timeout=S (square jobs gathered, the sum answered), /fail (the handler fails), /slow (sleeps 1 s first),
#   /hold?s=S (logs "hold started", sleeps S s, answers "held by <pid>"),
#   /record?list=L&tag=T (RPUSH L "T <length of this worker's processing list of each queue, /-separated>");
#   .../digest?reader=stdout|file (the body read with tempest_body, to a pipe or to a file:
#   JSON {"form", "size", "sha256"}; status 2, BodyGone: 410 "BodyGone: <TEMPEST_BODY_ERROR>"),
#   anything else: "hello <path>";
#   greet jobs ({"path": ..., "via": ...}, as tests/workers/routing.py's front sends them).
source "$(dirname "${BASH_SOURCE[0]}")/../../../clients/shell/tempest-worker.sh"

flags=()
while [[ ${1:-} == --* ]]; do flags+=("$1"); shift; done
IFS=, read -ra queues <<<"$1"
next_queue=${2:-}

site() {
    local url path query
    url=$(tempest_env_get url)
    path=${url%%\?*}
    query=${url#"$path"}; query=${query#\?}
    case $path in
    */digest)
        digest "${query#reader=}"
        ;;
    /stream)
        tempest_stream_begin 200 '{"Content-Type":"text/plain"}'
        tempest_stream_chunk $'one\n'
        sleep 0.2
        printf 'two\n' | tempest_stream_chunk
        tempest_stream_end
        ;;
    /abort)
        tempest_stream_begin 200 '{"Content-Type":"text/plain"}'
        tempest_stream_chunk "part"
        return 1
        ;;
    /session/set)
        tempest_session_set user "${query#v=}" || return 1
        tempest_http 200 "stored" Content-Type text/plain
        ;;
    /session/get)
        tempest_http 200 "user=$(tempest_session_get user)" Content-Type text/plain
        ;;
    /session/regenerate)
        tempest_session_regenerate || return 1
        tempest_http 200 "regenerated" Content-Type text/plain
        ;;
    /publish)
        tempest_publish "${query#c=}" "hello from shell" || return 1
        tempest_http 200 "published $TEMPEST_PUBLISHED" Content-Type text/plain
        ;;
    /forward)
        tempest_forward "$next_queue" greet "{\"path\":$(tempest_json_quote "$path"),\"via\":$$}"
        ;;
    /gather)  # ?q=QUEUE,QUEUE...&timeout=SECONDS: square jobs of 1, 2..., the sum answered
        local queues parts=() i=0 total=0 missing=() answer
        queues=${query#q=}; queues=${queues%%&*}
        for queue in ${queues//,/ }; do
            parts+=("$queue" square "[$((++i))]")
        done
        i=0
        while IFS= read -r answer; do
            if [[ $answer == null ]]; then missing+=("$i"); else total=$((total + answer)); fi
            i=$((i + 1))
        done < <(tempest_gather "${query##*timeout=}" "${parts[@]}")
        tempest_http 200 "$total" Content-Type text/plain X-Missing "$(IFS=,; printf '%s' "${missing[*]}")"
        ;;
    /fail)
        false
        ;;
    /hold)
        tempest_log info "hold started"
        sleep "${query#s=}"
        tempest_http 200 "held by $$" Content-Type text/plain
        ;;
    /record)
        local list=${query#list=} tag=${query##*tag=} queue held=() n
        list=${list%%&*}
        for queue in "${queues[@]}"; do
            n=$(redis-cli -u "$TEMPEST_REDIS_URL" LLEN "tempest:processing:{$queue}:$TEMPEST_WORKER_ID") || return 1
            held+=("$n")
        done
        redis-cli -u "$TEMPEST_REDIS_URL" RPUSH "$list" "$tag $(IFS=/; printf '%s' "${held[*]}")" >/dev/null || return 1
        tempest_http 200 "recorded" Content-Type text/plain
        ;;
    /slow)
        tempest_log info "slow job started"
        sleep 1
        tempest_http 200 "slow done" Content-Type text/plain
        ;;
    *)
        tempest_http 200 "hello $path" Content-Type text/plain
        ;;
    esac
}

digest() {  # digest READER: the body as the handler reads it: its form (the env's key), size and SHA-256
    local form=none key sum size status
    for key in body_file body_key body_base64 body; do
        if tempest_json_get "$TEMPEST_ENV" "$key" >/dev/null 2>&1; then form=$key; break; fi
    done
    rm -f "$_tempest_tmp/digest.body"
    if [[ $1 == file ]]; then
        tempest_body "$_tempest_tmp/digest.body"
        status=$?
    else
        tempest_body | tee "$_tempest_tmp/digest.body" >/dev/null  # through a pipe (its message on stderr only)
        status=${PIPESTATUS[0]}
    fi
    if ((status == 2)); then
        tempest_http 410 "BodyGone: $TEMPEST_BODY_ERROR" Content-Type text/plain
        return 0
    fi
    ((status == 0)) || return 1
    sum=$(sha256sum <"$_tempest_tmp/digest.body") size=$(stat -c %s "$_tempest_tmp/digest.body")
    printf '[200,{"Content-Type":"application/json"},%s]\n' \
        "$(tempest_json_quote "{\"form\":\"$form\",\"size\":$size,\"sha256\":\"${sum%% *}\"}")"
}

greet() {
    local path
    path=$(tempest_json_text "$1" path) || return 1
    tempest_http 200 "greeted $path by shell" Content-Type text/plain
}

tempest_on url site
tempest_on greet greet
tempest_run "${flags[@]}" "${queues[@]}"
