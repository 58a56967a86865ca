#!/usr/bin/env bash
# Run a rule's command with all its output in the rule's log; when it fails, show the log's
# last lines on the terminal (the profiles' `quiet: rules` hides Snakemake's own error
# block with the log):   bash logged.sh LOG COMMAND [ARGS...]
log=$1
shift
"$@" >"$log" 2>&1 && exit 0
rc=$?
{
    echo "cifarlab: $1 $2 $3 failed (exit $rc); the last lines of $log:"
    tail -n 30 "$log" | sed 's/^/    /'
} >&2
exit $rc
