#!/usr/bin/env bash
# Stops the orca jobs on every worker: SIGTERM (orca-train saves a checkpoint), wait, then SIGKILL.
set -euo pipefail

USAGE="usage: stop.sh [--run NAME] [--timeout SECONDS] [common flags]

Sends SIGTERM to the orca-train / orca-eval processes that launch.sh started, on every worker of
every slice at once (gcloud ... ssh --worker=all): orca-train saves a checkpoint at the step it is
on and exits. Waits for them to exit; one still running after --timeout gets SIGKILL, and the
script exits 1 (that job saved no checkpoint).

  --run NAME         only that run's jobs (default: every job launch.sh started)
  --timeout SECONDS  how long to wait after SIGTERM (default 600: a 13B checkpoint takes minutes)"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
run="" timeout=600
while (($#)); do
  case $(flag_name "$1") in
    run) value_of "$@"; run=$VAL; shift "$N" ;;
    timeout) value_of "$@"; timeout=$VAL; shift "$N" ;;
    *) unknown_flag "$1" ;;
  esac
done
require_target
if [[ -n $run ]]; then check_run_name "$run"; fi
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout is a number of seconds, not '$timeout'"

params="RUN=$run TIMEOUT=$timeout"
remote="$REMOTE_PRELUDE; $params; $(oneline <<'REMOTE'
P=""
for f in "$L"/${RUN:-*}.*."$TAG".pid; do if [ -e "$f" ] && alive "$(cat "$f")"; then kill -TERM "$(cat "$f")"; P="$P $(cat "$f")"; echo "[$TAG] SIGTERM to $(basename "$f" ".$TAG.pid") (pid $(cat "$f"))"; fi; done
if [ -z "$P" ]; then echo "[$TAG] no orca job running"; exit 0; fi
t=0
while [ "$t" -lt $((TIMEOUT * 5)) ]; do A=""; for p in $P; do if alive "$p"; then A="$A $p"; fi; done; if [ -z "$A" ]; then break; fi; sleep 0.2; t=$((t + 1)); done
A=""; for p in $P; do if alive "$p"; then A="$A $p"; fi; done
if [ -n "$A" ]; then kill -KILL $A; echo "[$TAG] still running after ${TIMEOUT}s: SIGKILL to$A, no checkpoint saved" >&2; exit 1; fi
echo "[$TAG] stopped"
REMOTE
)"
tpu_ssh all "$remote"
