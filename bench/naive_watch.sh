#!/bin/bash
# The watcher an operator would otherwise write: grep the log every few seconds, post with curl.
# Benchmarked beside the real watcher (bench/bench_watchers.py); not used by anything else.
#   NAIVE_LOG    the run's log            NAIVE_URL    the webhook
#   NAIVE_BUILD  the build name           NAIVE_EVERY  seconds between looks (default 1)
while sleep "${NAIVE_EVERY:-1}"; do
    if grep -q '(Run Finished)' "$NAIVE_LOG" 2>/dev/null; then
        state=COMPLETED
        grep -qE '[0-9]+ of [0-9]+ failed' "$NAIVE_LOG" && state=FAILED
        curl -s -o /dev/null -H 'Content-Type: application/json' \
            -d "{\"text\": \"[naive] ATVM run $state: $NAIVE_BUILD\"}" "$NAIVE_URL"
        exit 0
    fi
done
