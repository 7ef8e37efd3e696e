#!/usr/bin/env bash
# Shows the TPU's state and the orca jobs on its workers.
set -euo pipefail

USAGE="usage: status.sh [common flags]

Describes the TPU VM or queued resource (gcloud ... describe), then lists, on every worker of every
slice (gcloud ... ssh --worker=all), the orca jobs launch.sh started there: running or exited, with
the last line of each log."

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
if (($#)); then unknown_flag "$1"; fi
require_target

tpu_gcloud describe
remote="$REMOTE_PRELUDE; $(oneline <<'REMOTE'
N=0
for f in "$L"/*."$TAG".pid; do if [ -e "$f" ]; then N=$((N + 1)); J=$(basename "$f" ".$TAG.pid"); p=$(cat "$f"); if alive "$p"; then ST="running, pid $p"; else ST=exited; fi; echo "[$TAG] $J: $ST | $(tail -n 1 "$L/$J.$TAG.log" 2>/dev/null || true)"; fi; done
if [ "$N" = 0 ]; then echo "[$TAG] no orca jobs"; fi
REMOTE
)"
tpu_ssh all "$remote" || fail "could not reach the workers (is the TPU READY, the queued resource ACTIVE?)"
