# shellcheck shell=bash
# Sourced by every script in tpu_scripts/: settings, flag parsing, --dry-run, and the gcloud calls
# that address the TPU (a TPU VM, or a queued resource with one or more slices).
#
# Settings come from, highest precedence first: flags, the environment, the env file (--env FILE,
# else $ORCA_TPU_ENV, else tpu_scripts/orca_tpu.env when it exists). orca_tpu.env.example lists them.

SCRIPT=$(basename "$0")
TPU_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_DIR=$(dirname "$TPU_SCRIPTS_DIR")

SETTING_VARS=(ORCA_TPU_PROJECT ORCA_TPU_ZONE ORCA_TPU_NAME ORCA_TPU_BUCKET ORCA_TPU_ACCELERATOR
  ORCA_TPU_RUNTIME ORCA_TPU_PROVISIONING ORCA_TPU_QUEUED ORCA_TPU_NUM_SLICES ORCA_TPU_SOURCE
  ORCA_TPU_GIT_URL ORCA_TPU_GIT_REF ORCA_TPU_PYTHON)

COMMON_HELP="common flags (settings may also come from the env file or the environment):
  --env FILE         settings file (default: \$ORCA_TPU_ENV, else tpu_scripts/orca_tpu.env if present)
  --project ID       Google Cloud project               (ORCA_TPU_PROJECT)
  --zone ZONE        zone of the TPU, e.g. us-central2-b (ORCA_TPU_ZONE)
  --name NAME        TPU VM or queued resource name     (ORCA_TPU_NAME)
  --queued           the TPU is a queued resource       (ORCA_TPU_QUEUED=1)
  --num_slices N     slices of a multislice queued resource; N > 1 implies --queued (ORCA_TPU_NUM_SLICES)
  --dry-run          print the commands (prefixed '+ ') instead of running them
  --help             this text
Flags take '-' or '_' between words and '--flag value' or '--flag=value'."

die() { echo "$SCRIPT: $*" >&2; exit 2; }  # usage and settings errors
fail() { echo "$SCRIPT: $*" >&2; exit 1; }

# A flag's name without the leading dashes, '-' turned into '_', any '=value' dropped; '--' stays
# '--', and an argument that is not a flag is '@'.
flag_name() {
  local k=${1%%=*}
  if [[ $1 == -- ]]; then
    printf -- --
  elif [[ $k == --?* ]]; then
    k=${k#--}
    printf '%s' "${k//-/_}"
  else
    printf @
  fi
}

# Sets VAL to the flag's value and N to the number of arguments it used: value_of "$@"; shift "$N".
value_of() {
  if [[ $1 == *=* ]]; then
    VAL=${1#*=} N=1
  elif (($# >= 2)) && [[ $2 != --* ]]; then
    VAL=$2 N=2
  else
    die "$1 needs a value (see --help)"
  fi
}

unknown_flag() { die "unknown argument '$1' (see --help)"; }

# Parses the common flags, loads the settings, and leaves the script's own arguments in REST.
init() {
  local env_file="" from_flags=() rest=() saved=() f v s
  DRY_RUN=0
  while (($#)); do
    f=$(flag_name "$1")
    case $f in
      help) printf '%s\n\n%s\n' "$USAGE" "$COMMON_HELP"; exit 0 ;;
      dry_run) DRY_RUN=1; shift ;;
      env) value_of "$@"; env_file=$VAL; shift "$N" ;;
      project | zone | name | num_slices)
        value_of "$@"
        from_flags+=("ORCA_TPU_$(tr '[:lower:]' '[:upper:]' <<<"$f")=$VAL")
        shift "$N" ;;
      queued) from_flags+=(ORCA_TPU_QUEUED=1); shift ;;
      --) rest+=("$@"); break ;;  # the script's own, verbatim (launch.sh: orca-train's flags)
      *) rest+=("$1"); shift ;;
    esac
  done
  REST=(${rest[@]+"${rest[@]}"})

  if [[ -z $env_file && -n ${ORCA_TPU_ENV-} ]]; then env_file=$ORCA_TPU_ENV; fi
  if [[ -n $env_file ]]; then
    [[ -r $env_file && ! -d $env_file ]] || die "env file $env_file does not exist or cannot be read"
  elif [[ -f $TPU_SCRIPTS_DIR/orca_tpu.env ]]; then
    env_file=$TPU_SCRIPTS_DIR/orca_tpu.env
  fi
  ENV_FILE=$env_file
  if [[ -n $env_file ]]; then
    for v in "${SETTING_VARS[@]}"; do
      if [[ -n ${!v-} ]]; then saved+=("$v=${!v}"); fi
    done
    # shellcheck source=/dev/null
    source "$env_file"
    for s in ${saved[@]+"${saved[@]}"}; do printf -v "${s%%=*}" '%s' "${s#*=}"; done
  fi
  for s in ${from_flags[@]+"${from_flags[@]}"}; do printf -v "${s%%=*}" '%s' "${s#*=}"; done

  ORCA_TPU_NUM_SLICES=${ORCA_TPU_NUM_SLICES:-1}
  ORCA_TPU_QUEUED=${ORCA_TPU_QUEUED:-0}
  [[ $ORCA_TPU_NUM_SLICES =~ ^[1-9][0-9]*$ ]] || die "--num_slices must be a positive integer, not '$ORCA_TPU_NUM_SLICES'"
  [[ $ORCA_TPU_QUEUED == [01] ]] || die "ORCA_TPU_QUEUED must be 0 or 1, not '$ORCA_TPU_QUEUED'"
  if ((ORCA_TPU_NUM_SLICES > 1)); then ORCA_TPU_QUEUED=1; fi
}

# require SETTING FLAG: exits 2 with one line naming the flag and the variable when it is unset.
require() {
  local var=ORCA_TPU_$1
  [[ -n ${!var-} ]] && return 0
  local where=${ENV_FILE:-tpu_scripts/orca_tpu.env (see orca_tpu.env.example)}
  die "missing setting $var: pass --$2 or set $var in $where"
}

require_target() { require PROJECT project; require ZONE zone; require NAME name; }

# Runs a command, echoing it to stderr as '+ cmd'; under --dry-run prints it to stdout instead.
run() {
  if ((DRY_RUN)); then
    printf '+ %s\n' "$(shell_quote "$@")"
  else
    if ! command -v "$1" >/dev/null; then
      if [[ $1 == gcloud ]]; then fail "gcloud is not on PATH: install the Google Cloud CLI"; fi
      fail "$1 is not on PATH"
    fi
    printf '+ %s\n' "$(shell_quote "$@")" >&2
    "$@"
  fi
}

shell_quote() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# gcloud for the TPU: tpu-vm or queued-resources, with the project and zone.
tpu_gcloud() {
  local verb=$1
  shift
  local kind=tpu-vm
  if ((ORCA_TPU_QUEUED)); then kind=queued-resources; fi
  run gcloud compute tpus "$kind" "$verb" "$ORCA_TPU_NAME" --project="$ORCA_TPU_PROJECT" --zone="$ORCA_TPU_ZONE" "$@"
}

# Runs a remote script on WORKER (all, or an index) of every slice.
tpu_ssh() {
  local worker=$1 script=$2 nodes=()
  if ((ORCA_TPU_QUEUED)); then nodes=(--node=all); fi
  tpu_gcloud ssh --worker="$worker" ${nodes[@]+"${nodes[@]}"} --command="$script"
}

# Copies a local file to DEST (relative to the home folder) on every worker of every slice.
tpu_scp_all() {
  local src=$1 dest=$2 nodes=() kind=tpu-vm
  if ((ORCA_TPU_QUEUED)); then nodes=(--node=all) kind=queued-resources; fi
  run gcloud compute tpus "$kind" scp "$src" "$ORCA_TPU_NAME:$dest" --project="$ORCA_TPU_PROJECT" \
    --zone="$ORCA_TPU_ZONE" --worker=all ${nodes[@]+"${nodes[@]}"}
}

# Joins a remote script's lines (each a complete command) into one line, so that --dry-run prints
# one line per gcloud command. Blank lines are dropped; leading blanks trimmed.
oneline() {
  local line joined=""
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    [[ -z $line ]] && continue
    joined+="${joined:+; }$line"
  done
  printf '%s' "$joined"
}

# Remote preamble: TAG names this worker (workerW, or sliceS.workerW on a multislice resource) from
# the TPU VM's metadata; L is the log folder; alive PID is true for a live (non-zombie) orca process.
# shellcheck disable=SC2034  # used by the scripts that source this file
REMOTE_PRELUDE=$(oneline <<'REMOTE'
set -eu
md() { curl -sf -m 5 -H Metadata-Flavor:Google "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }
W=$(md agent-worker-number || hostname)
S=$(md tpu-env | sed -n "s/^MEGASCALE_SLICE_ID: *'*\([0-9]*\).*/\1/p" || true)
TAG=worker$W
if [ -n "$S" ]; then TAG=slice$S.worker$W; fi
L=$HOME/orca_logs
alive() { case "$(ps -o stat= -p "$1" 2>/dev/null)" in ""|*Z*) return 1;; esac; case "$(ps -ww -o args= -p "$1")" in *orca-*) return 0;; esac; return 1; }
REMOTE
)

# Remote: fails when an orca job that launch.sh started on this worker is still running.
# shellcheck disable=SC2016,SC2034  # expanded remotely; used by the scripts that source this file
REMOTE_IDLE='for f in "$L"/*.pid; do if [ -e "$f" ] && alive "$(cat "$f")"; then echo "[$TAG] $(basename "$f" ".$TAG.pid") is still running (pid $(cat "$f")): stop it first (stop.sh)" >&2; exit 1; fi; done'

# Run names become file names and gs:// folders.
check_run_name() {
  [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "run name '$1': use letters, digits, '_', '.', '-'"
}
