# tempest-worker.sh: a Tempest worker in bash, with nothing but redis-cli (and awk, coreutils).
#
#   source clients/shell/tempest-worker.sh
#   hello() { tempest_http 200 "Hello $(tempest_env_get url)" Content-Type text/plain; }
#   tempest_on url hello
#   tempest_run "${1:-tempest}"
#
# Every Redis command is one redis-cli process: the queues are read with
# `BLPOP <queues...> 1`, answers go to the job's respond_to with `redis-cli -h H -p P -x
# <action> <job_id>` (the JSON from stdin: no quoting, no size limit). Job JSON is taken
# apart by a small JSON scanner in awk (_TEMPEST_AWK below). See README.md for the API.

TEMPEST_REDIS_URL=${TEMPEST_REDIS_URL:-redis://127.0.0.1:6379/0}
TEMPEST_POLL_TIMEOUT=${TEMPEST_POLL_TIMEOUT:-1}   # seconds a BLPOP blocks
TEMPEST_COMMAND_TIMEOUT=${TEMPEST_COMMAND_TIMEOUT:-15}  # seconds any redis-cli may take at most

declare -gA _tempest_handlers=()   # action -> shell function
declare -gA _tempest_declared=()   # respond_to -> 1 once ACTIONS was sent there
declare -gA _tempest_failed=()     # respond_to -> 1 after an answer could not be delivered
_tempest_stopping=0
_tempest_processed=0
_tempest_durable=""                # the cached [pubsub] durable patterns: "pattern history" lines
_tempest_durable_at=0

# ---------------------------------------------------------------- logging and plumbing

tempest_log() {  # tempest_log LEVEL MESSAGE...: one line on stderr
    local level=$1; shift
    printf '%s tempest-worker[%d] %s: %s\n' "$(date '+%H:%M:%S')" "$$" "$level" "$*" >&2
}

# redis-cli, bounded in time by coreutils' timeout when there is one
_tempest_cli() {
    if command -v timeout >/dev/null 2>&1; then
        timeout "$TEMPEST_COMMAND_TIMEOUT" redis-cli --no-auth-warning "$@"
    else
        redis-cli --no-auth-warning "$@"
    fi
}

_tempest_redis() { _tempest_cli -u "$TEMPEST_REDIS_URL" "$@"; }  # raw output (stdout is no tty)

_tempest_endpoint() {  # _tempest_endpoint HOST:PORT ARGS...: a command on an answer endpoint
    local host=${1%:*} port=${1##*:}
    shift
    host=${host#[}; host=${host%]}
    if [[ -n ${TEMPEST_ANSWER_PASSWORD:-} ]]; then
        REDISCLI_AUTH=$TEMPEST_ANSWER_PASSWORD _tempest_cli -h "$host" -p "$port" "$@"
    else
        _tempest_cli -h "$host" -p "$port" "$@"
    fi
}

_tempest_random_id() {  # 128 random bits, URL-safe base64 without padding: 22 characters
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

# ---------------------------------------------------------------- JSON

# The JSON scanner: `awk "$_TEMPEST_AWK" MODE ARGS... < json`, with LC_ALL=C (bytes).
#   job            a job envelope: "ok", action, respond_to ("" for null), job id (its text),
#                  the job id's JSON token, then each of args, one per line (whitespace outside
#                  strings removed, so a value is always one line)
#   items          a JSON list: "ok", then each element, one per line
#   get PATH...    the JSON of the value at PATH (object keys, list indexes from 0); exit 1
#   text PATH...   the same, a string decoded to its text (UTF-8), without a newline
#   header N V     an answer [status, headers, body] with the header N: V added
_TEMPEST_AWK='
function skipws(   c) {
    while (pos <= n) {
        c = substr(s, pos, 1)
        if (c != " " && c != "\t" && c != "\n" && c != "\r") return
        pos++; wsn++
    }
}
function scanstr(   c) {
    pos++
    while (pos <= n) {
        c = substr(s, pos, 1)
        if (c == "\\") pos += 2
        else { pos++; if (c == "\"") return 1 }
    }
    return 0
}
function scan(   c, c2, closer) {
    skipws()
    if (pos > n) return 0
    c = substr(s, pos, 1)
    if (c == "\"") return scanstr()
    if (c == "{" || c == "[") {
        closer = (c == "{") ? "}" : "]"
        pos++; skipws()
        if (substr(s, pos, 1) == closer) { pos++; return 1 }
        for (;;) {
            if (c == "{") {
                skipws()
                if (substr(s, pos, 1) != "\"" || !scanstr()) return 0
                skipws()
                if (substr(s, pos, 1) != ":") return 0
                pos++
            }
            if (!scan()) return 0
            skipws(); c2 = substr(s, pos, 1); pos++
            if (c2 == closer) return 1
            if (c2 != ",") return 0
        }
    }
    if (match(substr(s, pos, 64), /^(-?[0-9][0-9.eE+-]*|true|false|null)/)) { pos += RLENGTH; return 1 }
    return 0
}
# the members of the container at "at": K[i] (key text or index), VS[i], VE[i] (value range),
# VW[i] (whitespace inside); returns their count, -1 if it is not a valid container
function members(at,   c, c2, count, w, ks) {
    pos = at; skipws()
    c = substr(s, pos, 1)
    if (c != "{" && c != "[") return -1
    count = 0; pos++; skipws()
    if (substr(s, pos, 1) == (c == "{" ? "}" : "]")) { pos++; return 0 }
    for (;;) {
        count++
        if (c == "{") {
            skipws(); ks = pos
            if (substr(s, pos, 1) != "\"" || !scanstr()) return -1
            K[count] = decode(substr(s, ks, pos - ks))
            skipws()
            if (substr(s, pos, 1) != ":") return -1
            pos++
        } else K[count] = count - 1
        skipws(); VS[count] = pos; w = wsn
        if (!scan()) return -1
        VE[count] = pos; VW[count] = (wsn != w)
        skipws(); c2 = substr(s, pos, 1); pos++
        if (c2 == (c == "{" ? "}" : "]")) return count
        if (c2 != ",") return -1
    }
}
function strip(a, b,   out, i, c, save) {
    out = ""; i = a
    while (i < b) {
        c = substr(s, i, 1)
        if (c == "\"") { save = pos; pos = i; scanstr(); out = out substr(s, i, pos - i); i = pos; pos = save }
        else { if (c != " " && c != "\t" && c != "\n" && c != "\r") out = out c; i++ }
    }
    return out
}
function value(i) { return VW[i] ? strip(VS[i], VE[i]) : substr(s, VS[i], VE[i] - VS[i]) }
function hex(h,   i, v) {
    v = 0; h = tolower(h)
    for (i = 1; i <= 4; i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
    return v
}
function utf8(cp) {
    if (cp < 128) return sprintf("%c", cp)
    if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
    if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
    return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
}
# the text of a JSON string token (quotes included); any other token unchanged
function decode(t,   out, i, j, c, cp, lo) {
    if (substr(t, 1, 1) != "\"") return t
    t = substr(t, 2, length(t) - 2)
    out = ""
    while ((i = index(t, "\\")) > 0) {
        out = out substr(t, 1, i - 1)
        c = substr(t, i + 1, 1)
        j = i + 2
        if (c == "n") out = out "\n"
        else if (c == "t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "b") out = out "\b"
        else if (c == "f") out = out "\f"
        else if (c == "u") {
            cp = hex(substr(t, i + 2, 4)); j = i + 6
            if (cp >= 55296 && cp < 56320 && substr(t, j, 2) == "\\u") {
                lo = hex(substr(t, j + 2, 4))
                if (lo >= 56320 && lo < 57344) { cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); j += 6 }
            }
            out = out utf8(cp)
        } else out = out c
        t = substr(t, j)
    }
    return out t
}
function walk(   a, i, k, count, found) {  # the range of the value at path P[1..np] into VS[0], VE[0]
    a = 1
    for (k = 1; k <= np; k++) {
        count = members(a)
        found = 0
        for (i = 1; i <= count; i++) if (K[i] "" == P[k] "") { found = i; break }
        if (!found) return 0
        a = VS[found]
    }
    pos = a; skipws(); a = pos; w0 = wsn
    if (!scan()) return 0
    VS[0] = a; VE[0] = pos; VW[0] = (wsn != w0)
    return 1
}
BEGIN {
    mode = ARGV[1]
    np = 0
    for (i = 2; i < ARGC; i++) { P[++np] = ARGV[i]; delete ARGV[i] }
    delete ARGV[1]
}
{ s = (NR == 1) ? $0 : s "\n" $0 }
END {
    n = length(s); pos = 1; wsn = 0
    if (mode == "job") {
        if (members(1) != 4) exit 1
        if (substr(s, VS[1], 1) != "\"" || substr(s, VS[2], 1) != "[") exit 1
        if (substr(s, VS[3], 1) != "\"" && value(3) != "null") exit 1
        action = decode(value(1)); rt = value(3); rt = (rt == "null") ? "" : decode(rt)
        id = value(4); idtext = decode(id)
        if (index(action rt idtext, "\n")) exit 1
        args = VS[2]
        printf "ok\n%s\n%s\n%s\n%s\n", action, rt, idtext, id
        count = members(args)
        if (count < 0) exit 1
        for (i = 1; i <= count; i++) print value(i)
    } else if (mode == "items") {
        count = members(1)
        if (count < 0) exit 1
        print "ok"
        for (i = 1; i <= count; i++) print value(i)
    } else if (mode == "get" || mode == "text") {
        if (!walk()) exit 1
        v = value(0)
        printf "%s", (mode == "text") ? decode(v) : v
    } else if (mode == "xread") {  # redis-cli -2 --json XREAD of one stream: "id TAB part TAB answer"
        if (members(1) < 1 || members(VS[1]) < 2) exit 0
        ne = members(VS[2])
        for (i = 1; i <= ne; i++) ES[i] = VS[i]
        for (i = 1; i <= ne; i++) {
            if (members(ES[i]) < 2) continue
            ID[i] = decode(value(1)); PART[i] = ""; ANS[i] = ""
            nf = members(VS[2])
            for (j = 1; j < nf; j += 2) {
                k = decode(value(j)); v = decode(value(j + 1))
                if (k == "part") PART[i] = v; else if (k == "answer") ANS[i] = v
            }
        }
        for (i = 1; i <= ne; i++) {
            s = ANS[i]; n = length(s); pos = 1
            a = (n && scan() && (skipws() || 1) && pos == n + 1) ? strip(1, n + 1) : "null"
            printf "%s\t%s\t%s\n", ID[i], PART[i], a
        }
    } else if (mode == "header") {
        skipws()
        if (substr(s, pos, 1) != "[" || (count = members(1)) < 1) { printf "%s", s; exit 0 }
        pair = "\"" P[1] "\":\"" P[2] "\""
        if (count == 1) { printf "%s,{%s}%s", substr(s, 1, VE[1] - 1), pair, substr(s, VE[1]); exit 0 }
        h = value(2); c = substr(h, 1, 1)
        if (c == "{") h = (h == "{}") ? "{" pair "}" : substr(h, 1, length(h) - 1) "," pair "}"
        else if (c == "[") h = (h == "[]") ? "[[\"" P[1] "\",\"" P[2] "\"]]" : substr(h, 1, length(h) - 1) ",[\"" P[1] "\",\"" P[2] "\"]]"
        else if (h == "null") h = "{" pair "}"
        printf "%s%s%s", substr(s, 1, VS[2] - 1), h, substr(s, VE[2])
    }
}'

_tempest_awk() { LC_ALL=C awk "$_TEMPEST_AWK" "$@"; }

tempest_json_get() {  # tempest_json_get JSON [KEY|INDEX]...: the JSON of that value
    local json=$1; shift
    printf '%s' "$json" | _tempest_awk get "$@"
}

tempest_json_text() {  # tempest_json_text JSON [KEY|INDEX]...: a string's text, another value's JSON
    local json=$1; shift
    printf '%s' "$json" | _tempest_awk text "$@"
}

tempest_json_items() {  # tempest_json_items JSON: each element of a JSON list, one per line
    local out
    out=$(printf '%s' "$1" | _tempest_awk items) && [[ $out == ok* ]] || return 1
    [[ $out == *$'\n'* ]] && printf '%s\n' "${out#ok$'\n'}"
    return 0
}

tempest_json_quote() {  # tempest_json_quote TEXT: TEXT as a JSON string
    local LC_ALL=C
    local s=$1 i c hex
    s=${s//\\/\\\\}; s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
    if [[ $s == *[$'\001'-$'\037']* ]]; then
        for ((i = 1; i < 32; i++)); do
            printf -v c "\\$(printf '%03o' "$i")"
            printf -v hex '\\u%04x' "$i"
            s=${s//"$c"/$hex}
        done
    fi
    printf '"%s"' "$s"
}

tempest_http() {  # tempest_http STATUS BODY [NAME VALUE]...: prints an HTTP answer's JSON
    local status=$1 body=$2 headers="" sep=""
    shift 2
    while (($# >= 2)); do
        headers+="$sep$(tempest_json_quote "$1"):$(tempest_json_quote "$2")"
        sep=,
        shift 2
    done
    printf '[%s,{%s},%s]\n' "$status" "$headers" "$(tempest_json_quote "$body")"
}

# ---------------------------------------------------------------- the job in hand

tempest_env_get() {  # tempest_env_get KEY...: the text at that path of a url job's env
    [[ -n $TEMPEST_ENV ]] || return 1
    tempest_json_text "$TEMPEST_ENV" "$@"
}

_tempest_with_session_header() {  # the answer JSON, with X-Tempest-Session after a regenerate()
    if [[ -n ${_tempest_regenerated:-} ]]; then
        printf '%s' "$1" | _tempest_awk header X-Tempest-Session "$TEMPEST_SESSION_ID"
    else
        printf '%s' "$1"
    fi
}

_tempest_send() {  # _tempest_send COMMAND PAYLOAD-from-stdin: <command> <job_id> <stdin> to respond_to
    local command=$1 rt=$TEMPEST_RESPOND_TO reply
    [[ -n $rt ]] || return 1
    _tempest_declare "$rt"
    if ! reply=$(_tempest_endpoint "$rt" -x "$command" "$TEMPEST_JOB_ID" 2>&1); then
        tempest_log warning "cannot send $command for job $TEMPEST_JOB_ID to $rt: $reply"
        unset "_tempest_declared[$rt]"
        return 1
    fi
    [[ $reply == OK ]] || tempest_log warning "$rt refused $command for job $TEMPEST_JOB_ID: $reply"
    return 0
}

_tempest_declare() {  # ACTIONS <the handlers' actions but url and ws>, once per endpoint
    local rt=$1 action actions=()
    [[ -n ${_tempest_declared[$rt]:-} ]] && return 0
    for action in "${!_tempest_handlers[@]}"; do
        [[ $action == url || $action == ws ]] || actions+=("$action")
    done
    if ((${#actions[@]})); then
        _tempest_endpoint "$rt" ACTIONS "${actions[@]}" </dev/null >/dev/null 2>&1 || return 0
    fi
    _tempest_declared[$rt]=1
}

tempest_answer() {  # tempest_answer JSON: answer the job (may be called several times)
    _tempest_answered=$((_tempest_answered + 1))
    local data=$1
    [[ $TEMPEST_ACTION == url ]] && data=$(_tempest_with_session_header "$data")
    printf '%s' "$data" | _tempest_send "$TEMPEST_ACTION"
}

tempest_stream_begin() {  # tempest_stream_begin [STATUS [HEADERS_JSON]]: a streamed answer's head
    local status=${1:-200} headers=${2:-"{}"} head
    head="[$status,$headers]"
    _tempest_answered=$((_tempest_answered + 1))
    _tempest_stream_open=1
    head=$(_tempest_with_session_header "$head")
    printf '%s' "$head" | _tempest_send stream
}

tempest_stream_chunk() {  # tempest_stream_chunk [TEXT]: a piece of the body (without TEXT: stdin, any bytes)
    if (($#)); then
        [[ -n $1 ]] || return 0
        printf '%s' "$1" | _tempest_send chunk
    else
        cat >"$_tempest_tmp/chunk" || return 1
        [[ -s $_tempest_tmp/chunk ]] || return 0
        _tempest_send chunk <"$_tempest_tmp/chunk"
    fi
}

tempest_stream_end() {  # the end of the body
    [[ -n ${_tempest_stream_open:-} ]] || return 0
    _tempest_stream_open=
    _tempest_endpoint_command end
}

tempest_stream_abort() {  # give up: the client's body is cut
    [[ -n ${_tempest_stream_open:-} ]] || return 0
    _tempest_stream_open=
    _tempest_endpoint_command end abort
}

_tempest_endpoint_command() {  # end <job_id> [abort], without stdin
    local rt=$TEMPEST_RESPOND_TO reply
    [[ -n $rt ]] || return 1
    if ! reply=$(_tempest_endpoint "$rt" "$1" "$TEMPEST_JOB_ID" "${@:2}" </dev/null 2>&1); then
        tempest_log warning "cannot send $1 for job $TEMPEST_JOB_ID to $rt: $reply"
        return 1
    fi
}

tempest_forward() {  # tempest_forward QUEUE ACTION [ARG_JSON]...: pass the job on; no answer here
    local queue=$1 action=$2 args reply rt=null
    shift 2
    args=$(IFS=,; printf '%s' "$*")
    [[ -n $TEMPEST_RESPOND_TO ]] && rt=$(tempest_json_quote "$TEMPEST_RESPOND_TO")
    _tempest_answered=$((_tempest_answered + 1))  # someone else answers: no 500 when returning 0
    reply=$(printf '[%s,[%s],%s,%s]' "$(tempest_json_quote "$action")" "$args" "$rt" "$_tempest_job_id_json" |
        _tempest_redis -x RPUSH "$queue" 2>&1)
    if [[ ! $reply =~ ^[0-9]+$ ]]; then
        tempest_log error "cannot forward job $TEMPEST_JOB_ID to $queue: $reply"
        return 1
    fi
}

_tempest_now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; printf '%d' $((10#$t / 1000)); }

# tempest_gather TIMEOUT QUEUE ACTION ARGS_JSON [QUEUE ACTION ARGS_JSON]...: fan out, one job per
# part, and print each part's answer (its JSON, null when missing after TIMEOUT seconds), one a line
tempest_gather() {
    local timeout=$1 gid key rt count=0 got=0 deadline left reply last=0-0 id part answer i
    local -a results=()
    shift
    [[ -n $TEMPEST_RESPOND_TO ]] || { tempest_log error "gather needs a job with respond_to"; return 1; }
    gid=$(_tempest_random_id)
    key="tempest:gather:{$gid}"
    rt=$(tempest_json_quote "$TEMPEST_RESPOND_TO")
    _tempest_redis XADD "$key" '*' part -1 </dev/null >/dev/null &&
        _tempest_redis EXPIRE "$key" 300 </dev/null >/dev/null || return 1
    while (($# >= 3)); do
        printf '[%s,%s,%s,"gather:%s:%d"]' "$(tempest_json_quote "$2")" "$3" "$rt" "$gid" "$count" |
            _tempest_redis -x RPUSH "$1" >/dev/null
        results[count++]=""
        shift 3
    done
    local LC_ALL=C ms
    printf -v ms '%.0f' "${timeout}e3" 2>/dev/null || ms=5000
    deadline=$(($(_tempest_now_ms) + ms))
    while ((got < count)) && left=$((deadline - $(_tempest_now_ms))) && ((left > 0)); do
        reply=$(_tempest_redis -2 --json XREAD BLOCK $((left < 1000 ? left : 1000)) STREAMS "$key" "$last" </dev/null) || break
        while IFS=$'\t' read -r id part answer; do
            [[ -n $id ]] || continue
            last=$id
            if [[ $part =~ ^[0-9]+$ ]] && ((part < count)) && [[ -z ${results[part]} ]]; then
                results[part]=$answer
                got=$((got + 1))
            fi
        done < <(printf '%s' "$reply" | _tempest_awk xread)
    done
    _tempest_redis DEL "$key" </dev/null >/dev/null
    ((got < count)) && tempest_log info "gather $gid: $((count - got)) of $count parts missing after ${timeout}s"
    for answer in "${results[@]}"; do printf '%s\n' "${answer:-null}"; done
}

# ---------------------------------------------------------------- sessions (the hash session:<id>)

_TEMPEST_SESSION_WRITE="redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) return redis.call('EXPIRE', KEYS[1], ARGV[1])"

_tempest_session() {  # TEMPEST_SESSION_ID and _TTL from the env, once per job; 1 without a session
    if [[ -z ${_tempest_session_read:-} ]]; then
        _tempest_session_read=1
        if [[ $TEMPEST_ENV == *'"session"'* ]]; then
            TEMPEST_SESSION_ID=$(tempest_env_get session id) || TEMPEST_SESSION_ID=
            TEMPEST_SESSION_TTL=$(tempest_env_get session ttl) || TEMPEST_SESSION_TTL=
            [[ $TEMPEST_SESSION_ID =~ ^[A-Za-z0-9_-]{22}$ ]] || TEMPEST_SESSION_ID=
            [[ $TEMPEST_SESSION_TTL =~ ^[0-9]+ ]] && TEMPEST_SESSION_TTL=${BASH_REMATCH[0]} || TEMPEST_SESSION_TTL=1209600
        fi
    fi
    [[ -n ${TEMPEST_SESSION_ID:-} ]]
}

tempest_session_get_json() {  # tempest_session_get_json FIELD: the value's JSON; 1 if absent
    _tempest_session || return 1
    local raw
    raw=$(_tempest_redis HGET "session:$TEMPEST_SESSION_ID" "$1" </dev/null) && [[ -n $raw ]] || return 1
    printf '%s' "$raw" | _tempest_awk get 0
}

tempest_session_get() {  # tempest_session_get FIELD: a string value's text (another value's JSON)
    local json
    json=$(tempest_session_get_json "$1") || return 1
    printf '%s' "$json" | _tempest_awk text
}

tempest_session_set_json() {  # tempest_session_set_json FIELD JSON: HSET [JSON] and EXPIRE ttl, atomically
    _tempest_session || return 1
    local reply
    reply=$(printf '[%s]' "$2" | _tempest_redis -x EVAL "$_TEMPEST_SESSION_WRITE" 1 \
        "session:$TEMPEST_SESSION_ID" "$TEMPEST_SESSION_TTL" "$1" 2>&1)
    [[ $reply == 1 ]] || { tempest_log error "session write failed: $reply"; return 1; }
}

tempest_session_set() { tempest_session_set_json "$1" "$(tempest_json_quote "$2")"; }  # FIELD TEXT

tempest_session_del() {  # tempest_session_del FIELD...
    _tempest_session || return 1
    _tempest_redis HDEL "session:$TEMPEST_SESSION_ID" "$@" </dev/null >/dev/null
}

tempest_session_has() {  # tempest_session_has FIELD: status 0 when the field exists
    _tempest_session || return 1
    [[ $(_tempest_redis HEXISTS "session:$TEMPEST_SESSION_ID" "$1" </dev/null) == 1 ]]
}

tempest_session_clear() {  # forget every field (logout); regenerate the id too
    _tempest_session || return 1
    _tempest_redis DEL "session:$TEMPEST_SESSION_ID" </dev/null >/dev/null
}

tempest_session_regenerate() {  # a new id for the session, its fields kept (call it at login)
    _tempest_session || return 1  # (in the handler's own shell, not in $(...))
    local new reply
    new=$(_tempest_random_id)
    reply=$(_tempest_redis RENAME "session:$TEMPEST_SESSION_ID" "session:$new" </dev/null 2>&1)
    if [[ $reply != OK && $reply != *"no such key"* ]]; then
        tempest_log error "session regenerate failed: $reply"
        return 1
    fi
    TEMPEST_SESSION_ID=$new
    _tempest_regenerated=1
}

# ---------------------------------------------------------------- publish

_TEMPEST_PUBLISH_DURABLE="local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'm', ARGV[3])
redis.call('PUBLISH', ARGV[2], cjson.encode({'\$durable', id, ARGV[3]}))
return id"

_tempest_durable_history() {  # the history length of a durable channel; 1 for a plain one
    local channel=$1 now pattern history raw item line
    now=${EPOCHSECONDS:-$(date +%s)}
    if ((now - _tempest_durable_at >= 5)); then  # tempest:pubsub:durable, cached 5 s
        _tempest_durable=""
        raw=$(_tempest_redis GET tempest:pubsub:durable </dev/null) || return 1
        if [[ -n $raw ]]; then
            while IFS= read -r item; do
                [[ -n $item ]] || continue
                pattern=$(tempest_json_text "$item" 0) && history=$(tempest_json_text "$item" 1) &&
                    _tempest_durable+="$history $pattern"$'\n'
            done < <(tempest_json_items "$raw")
        fi
        _tempest_durable_at=$now
    fi
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        pattern=${line#* }
        # shellcheck disable=SC2053  # a glob, as fnmatch
        if [[ $channel == $pattern ]]; then
            printf '%s' "${line%% *}"
            return 0
        fi
    done <<<"$_tempest_durable"
    return 1
}

tempest_publish_json() {  # tempest_publish_json CHANNEL JSON [EVENT]; TEMPEST_PUBLISHED: id or count
    local channel=$1 data=$2 message history reply
    if (($# > 2)); then
        if [[ $3 == *[$'\r\n']* ]]; then tempest_log error "bad event name"; return 1; fi
        message="[$(tempest_json_quote "$3"),$data]"
    else
        message="[$data]"
    fi
    if history=$(_tempest_durable_history "$channel"); then
        reply=$(printf '%s' "$message" | _tempest_redis -x EVAL "$_TEMPEST_PUBLISH_DURABLE" 1 \
            "tempest:stream:{$channel}" "$history" "$channel" 2>&1)
        [[ $reply =~ ^[0-9]+-[0-9]+$ ]] || { tempest_log error "publish to $channel failed: $reply"; return 1; }
    else
        reply=$(printf '%s' "$message" | _tempest_redis -x PUBLISH "$channel" 2>&1)
        [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "publish to $channel failed: $reply"; return 1; }
    fi
    TEMPEST_PUBLISHED=$reply
}

tempest_publish() { tempest_publish_json "$1" "$(tempest_json_quote "$2")" "${@:3}"; }  # CHANNEL TEXT [EVENT]

# ---------------------------------------------------------------- the worker

tempest_on() {  # tempest_on ACTION FUNCTION: FUNCTION handles the jobs of ACTION
    _tempest_handlers[$1]=$2
}

tempest_stop() { _tempest_stopping=1; }  # run() returns once the job in hand is done

_tempest_sleep() {  # _tempest_sleep MILLISECONDS, in slices of 0.1 s so that a stop is seen
    local left=$1
    while ((left > 0 && !_tempest_stopping)); do
        sleep 0.1
        left=$((left - 100))
    done
}

_tempest_error() {  # _tempest_error STATUS REASON: the error answer of a job nobody answered
    [[ $TEMPEST_ACTION == ws ]] && return 0
    ((_tempest_answered)) && return 0
    [[ -n ${_tempest_handlers[$TEMPEST_ACTION]:-} ]] || TEMPEST_ACTION=url
    tempest_answer "[$1,{\"Content-Type\":\"text/plain\"},\"$1 $2\\n\"]"
}

tempest_process() {  # tempest_process JOB: run the handler of one job (its JSON envelope)
    local job=$1 lines handler status out
    mapfile -t lines < <(printf '%s' "$job" | _tempest_awk job)
    if [[ ${lines[0]:-} != ok ]]; then
        tempest_log error "dropped malformed job ${job:0:200}"
        return 0
    fi
    _tempest_processed=$((_tempest_processed + 1))
    TEMPEST_ACTION=${lines[1]} TEMPEST_RESPOND_TO=${lines[2]} TEMPEST_JOB_ID=${lines[3]}
    _tempest_job_id_json=${lines[4]}
    local args=("${lines[@]:5}")
    TEMPEST_ARGS="[$(IFS=,; printf '%s' "${args[*]}")]"
    TEMPEST_ENV=""
    [[ $TEMPEST_ACTION == url && ${args[0]:-} == '{'* ]] && TEMPEST_ENV=${args[0]}
    TEMPEST_SESSION_ID="" TEMPEST_SESSION_TTL="" _tempest_session_read="" _tempest_regenerated=""
    _tempest_answered=0 _tempest_stream_open=""
    handler=${_tempest_handlers[$TEMPEST_ACTION]:-}
    if [[ -z $handler ]]; then
        tempest_log error "no handler for action $TEMPEST_ACTION (job $TEMPEST_JOB_ID)"
        _tempest_error 501 "Not Implemented"
        return 0
    fi
    # the handler runs in this shell (its variables persist); what it prints is its answer
    "$handler" "${args[@]}" >"$_tempest_tmp/out"
    status=$?
    if ((status != 0)); then
        tempest_log error "handler $handler of $TEMPEST_ACTION failed (status $status) on job $TEMPEST_JOB_ID"
        tempest_stream_abort  # a stream begun: the client's body is cut
        _tempest_error 500 "Internal Server Error"
        return 0
    fi
    out=$(<"$_tempest_tmp/out")
    [[ -n $out ]] && tempest_answer "$out"
    return 0
}

tempest_run() {  # tempest_run [QUEUE...] [FUNCTION]: take and run jobs until SIGTERM/SIGINT
    local queues child status monitor=${-//[^m]/}
    if (($#)) && declare -F "${!#}" >/dev/null; then  # the last argument, a function: the url handler
        tempest_on url "${!#}"
        set -- "${@:1:$#-1}"
    fi
    queues=("$@")
    ((${#queues[@]})) || queues=(tempest)
    # The worker runs in a subshell in a process group of its own (set -m), this shell only
    # passes a stop on: SIGTERM sent to this shell's group (as tempestd stops its workers)
    # reaches no command of the job in hand, not even a $(...) of a handler, and the job is
    # finished before the worker exits.
    set -m
    _tempest_loop "${queues[@]}" &
    child=$!
    [[ -n $monitor ]] || set +m
    trap 'kill -USR1 "$child" 2>/dev/null' TERM INT
    status=0
    while kill -0 "$child" 2>/dev/null; do
        wait "$child"
        status=$?
    done
    trap - TERM INT
    return "$status"
}

_tempest_loop() {  # the worker: BLPOP, run, answer, until asked to stop (or its parent is gone)
    local queues=("$@") reply rc delay=100 secs err
    set +m
    trap '_tempest_stopping=1' TERM INT USR1
    _tempest_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tempest-worker.XXXXXX") || exit 1
    tempest_log info "worker on ${queues[*]} ($TEMPEST_REDIS_URL): ${!_tempest_handlers[*]}"
    while ((!_tempest_stopping)) && kill -0 "$$" 2>/dev/null; do  # $$: the parent shell
        reply=$(_tempest_redis BLPOP "${queues[@]}" "$TEMPEST_POLL_TIMEOUT" </dev/null 2>"$_tempest_tmp/err")
        rc=$?
        if ((rc != 0)) || [[ -n $reply && $reply != *$'\n'* ]]; then
            err=$(<"$_tempest_tmp/err")
            ((_tempest_stopping)) && break
            printf -v secs '%d.%d' $((delay / 1000)) $((delay % 1000 / 100))
            tempest_log warning "Redis unreachable (${err:-$reply}); retrying in ${secs}s"
            _tempest_sleep "$delay"
            delay=$((delay * 2 > 5000 ? 5000 : delay * 2))
            continue
        fi
        delay=100
        [[ -n $reply ]] && tempest_process "${reply#*$'\n'}"
    done
    rm -rf "$_tempest_tmp"
    tempest_log info "worker stopped after $_tempest_processed jobs"
    exit 0
}
