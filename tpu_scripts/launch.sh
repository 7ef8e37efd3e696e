#!/usr/bin/env bash
# Starts orca-train or orca-eval on every worker, in the background, and streams their logs.
set -euo pipefail

USAGE="usage: launch.sh train|eval --run NAME [--bucket gs://BUCKET] [--detach] [common flags] \\
         --gin_file=FILE [--gin_file=FILE ...] [--gin.NAME=VALUE ...] [-- other orca flags]

Runs the same orca-train (or orca-eval) command on every worker of every slice (gcloud ... ssh
--worker=all), from ~/orca_jax (so --gin_file=configs/... resolves there) under nohup: the job
outlives the ssh session. Each worker writes its own log, ~/orca_logs/NAME.MODE.workerW.log
(sliceS.workerW on multislice), and its pid next to it. Then, unless --detach, every worker tails
its log with each line prefixed [workerW]; gcloud merges the workers' output into one stream.
Ctrl-C stops the stream, not the job (logs.sh resumes it, stop.sh stops the job).

Added to the orca command unless given:
  --distributed=on                          every worker joins jax.distributed (the workers of a
                                            TPU VM find each other from its metadata)
  --gin.MODEL_DIR=BUCKET/runs/NAME          (train) where checkpoints and metrics go
  --gin.CHECKPOINT_DIR=BUCKET/runs/NAME     (eval) the run to evaluate
  --gin.MeshConfig.dcn_data=N               with N > 1 slices: data parallelism across slices

  --run NAME          names the logs and the run folder (letters, digits, '_', '.', '-')
  --bucket gs://B[/PREFIX]  where runs go (ORCA_TPU_BUCKET)
  --detach            start the job and return without streaming its logs
  --gin_file F, --gin.NAME=VALUE, --gin_search_paths P, and everything after '--': passed to orca"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
mode="" run="" follow=1 orca=()
while (($#)); do
  f=$(flag_name "$1")
  case $f in
    @)
      [[ -z $mode ]] || die "unexpected argument '$1' (orca flags are --gin_file=..., --gin.NAME=VALUE; others go after '--')"
      mode=$1
      shift ;;
    run) value_of "$@"; run=$VAL; shift "$N" ;;
    bucket) value_of "$@"; ORCA_TPU_BUCKET=$VAL; shift "$N" ;;
    detach) follow=0; shift ;;
    gin_file | gin_search_paths)
      value_of "$@"; orca+=("--$f=$VAL"); shift "$N" ;;
    gin.*) orca+=("$1"); shift ;;
    --) shift; orca+=("$@"); break ;;
    *) unknown_flag "$1" ;;
  esac
done
case $mode in
  train) binary=orca-train dir_macro=MODEL_DIR ;;
  eval) binary=orca-eval dir_macro=CHECKPOINT_DIR ;;
  *) die "the first argument is train or eval (see --help)" ;;
esac
require_target
[[ -n $run ]] || die "missing --run NAME (it names the logs and, with the bucket, the run folder)"
check_run_name "$run"

# has PREFIX: true when an orca argument starts with PREFIX.
has() {
  local a
  for a in ${orca[@]+"${orca[@]}"}; do [[ $a == "$1"* ]] && return 0; done
  return 1
}
has "--gin_file" || die "no --gin_file given (for example --gin_file=configs/runs/orca_stage1.gin)"
has "--distributed" || orca+=(--distributed=on)
if ! has "--gin.$dir_macro="; then
  require BUCKET bucket
  bucket=${ORCA_TPU_BUCKET%/}
  orca+=("--gin.$dir_macro=gs://${bucket#gs://}/runs/$run")
fi
if ((ORCA_TPU_NUM_SLICES > 1)) && ! has "--gin.MeshConfig.dcn_data="; then
  orca+=("--gin.MeshConfig.dcn_data=$ORCA_TPU_NUM_SLICES")
fi

# First every worker checks that no orca job is running there, so that a busy worker cannot leave
# the others waiting for it in jax.distributed; then every worker starts the job. A run launched
# again (to resume) appends to its log, after a header line; the stream starts at that header.
params="set -- $(printf '%q ' "${orca[@]}"); BIN=$binary JOB=$run.$mode FOLLOW=$follow"
start="$REMOTE_PRELUDE; $params; $(oneline <<'REMOTE'
mkdir -p "$L"
LOG=$L/$JOB.$TAG.log
B=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $BIN $*" >> "$LOG"
cd "$HOME/orca_jax"
PYTHONUNBUFFERED=1 nohup "$HOME/orca_venv/bin/$BIN" "$@" >> "$LOG" 2>&1 < /dev/null & echo $! > "$L/$JOB.$TAG.pid"
echo "[$TAG] $BIN started, pid $(cat "$L/$JOB.$TAG.pid"), log $LOG"
if [ "$FOLLOW" = 1 ]; then tail -c "+$B" -F --pid="$(cat "$L/$JOB.$TAG.pid")" "$LOG" 2>/dev/null | sed -u "s/^/[$TAG] /"; fi
REMOTE
)"
echo "launch: $binary on every worker of $ORCA_TPU_NAME, run $run" >&2
tpu_ssh all "$REMOTE_PRELUDE; $REMOTE_IDLE" || fail "a worker is busy or unreachable; nothing was started"
tpu_ssh all "$start"
if ((follow == 0)); then
  echo "launch: started; follow with logs.sh --run $run --follow, stop with stop.sh --run $run" >&2
fi
