#!/usr/bin/env bash
# Shows the orca logs of one worker or of all, once or following them.
set -euo pipefail

USAGE="usage: logs.sh [--run NAME] [--mode train|eval] [--worker N|all] [--follow] [--lines N] [common flags]

Prints the last lines of each worker's log (gcloud ... ssh --worker=all, or --worker=N), each line
prefixed [workerW]. With --follow, keeps streaming until the job exits (Ctrl-C stops the stream only).

  --run NAME        the run launch.sh started (default: the newest log on each worker)
  --mode MODE       train (default) or eval
  --worker N|all    which worker (default all; on multislice, worker N of every slice)
  --follow          follow the logs (tail -F) until the job exits
  --lines N         lines of history to show (default 100)"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
run="" mode=train worker=all follow=0 lines=100
while (($#)); do
  case $(flag_name "$1") in
    run) value_of "$@"; run=$VAL; shift "$N" ;;
    mode) value_of "$@"; mode=$VAL; shift "$N" ;;
    worker) value_of "$@"; worker=$VAL; shift "$N" ;;
    follow) follow=1; shift ;;
    lines) value_of "$@"; lines=$VAL; shift "$N" ;;
    *) unknown_flag "$1" ;;
  esac
done
require_target
if [[ -n $run ]]; then check_run_name "$run"; fi
[[ $mode == train || $mode == eval ]] || die "--mode is train or eval, not '$mode'"
[[ $worker == all || $worker =~ ^[0-9]+$ ]] || die "--worker is a worker index or all, not '$worker'"
[[ $lines =~ ^[0-9]+$ ]] || die "--lines is a number, not '$lines'"

params="RUN=$run MODE=$mode FOLLOW=$follow LINES=$lines"
remote="$REMOTE_PRELUDE; $params; $(oneline <<'REMOTE'
if [ -n "$RUN" ]; then LOG=$L/$RUN.$MODE.$TAG.log; else LOG=$(ls -t "$L"/*."$TAG".log 2>/dev/null | head -n 1); fi
if [ -z "$LOG" ] || [ ! -e "$LOG" ]; then echo "[$TAG] no log ${LOG:-in $L}" >&2; exit 1; fi
P=$(cat "${LOG%.log}.pid" 2>/dev/null || true)
if [ "$FOLLOW" = 1 ]; then tail -n "$LINES" -F ${P:+--pid="$P"} "$LOG" 2>/dev/null | sed -u "s/^/[$TAG] /"; else tail -n "$LINES" "$LOG" | sed "s/^/[$TAG] /"; fi
REMOTE
)"
tpu_ssh "$worker" "$remote"
