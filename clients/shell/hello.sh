#!/usr/bin/env bash
# The hello world: answers every HTTP request with "Hello from shell #<n>".
#   bash clients/shell/hello.sh [QUEUE]      (Redis from TEMPEST_REDIS_URL)
source "$(dirname "${BASH_SOURCE[0]}")/tempest-worker.sh"

answers=0
hello() {
    answers=$((answers + 1))
    tempest_http 200 "Hello from shell #$answers" Content-Type text/plain
}

tempest_on url hello
tempest_run "${1:-tempest}"
