#!/usr/bin/env bash
# Installs orca_jax on every worker: ~/orca_jax (the source) and ~/orca_venv (its virtualenv).
set -euo pipefail

USAGE="usage: setup.sh [--source git|local] [--git_url URL] [--git_ref REF] [--python EXE] [common flags]

Installs orca_jax on every worker of every slice (gcloud ... ssh --worker=all): the source in
~/orca_jax, a virtualenv ~/orca_venv with 'pip install -e ~/orca_jax jax[tpu]==<setup.py's jax pin>'.
Run it again to update; it replaces ~/orca_jax, and refuses to while a job launch.sh started runs.

  --source git      clone --git_url at --git_ref on each worker (default; ORCA_TPU_SOURCE)
  --source local    pack this checkout's files (tracked and untracked, not ignored; uncommitted
                    changes included) and copy the tarball to every worker (gcloud ... scp --worker=all)
  --git_url URL     default: this checkout's 'origin' remote (ORCA_TPU_GIT_URL); the workers must be
                    able to clone it (a public URL, or use --source local)
  --git_ref REF     commit, tag or branch; default: this checkout's HEAD commit (ORCA_TPU_GIT_REF)
  --python EXE      interpreter for the virtualenv (default python3.11, apt-installed when missing;
                    ORCA_TPU_PYTHON)"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $(flag_name "$1") in
    source) value_of "$@"; ORCA_TPU_SOURCE=$VAL; shift "$N" ;;
    git_url) value_of "$@"; ORCA_TPU_GIT_URL=$VAL; shift "$N" ;;
    git_ref) value_of "$@"; ORCA_TPU_GIT_REF=$VAL; shift "$N" ;;
    python) value_of "$@"; ORCA_TPU_PYTHON=$VAL; shift "$N" ;;
    *) unknown_flag "$1" ;;
  esac
done
require_target
source_kind=${ORCA_TPU_SOURCE:-git}
python=${ORCA_TPU_PYTHON:-python3.11}

jax_version=$(sed -n 's/^ *"jax==\([^"]*\)".*/\1/p' "$REPO_DIR/setup.py")
[[ -n $jax_version ]] || die "no \"jax==VERSION\" pin found in $REPO_DIR/setup.py"

url="" ref=""
case $source_kind in
  git)
    url=${ORCA_TPU_GIT_URL-}
    if [[ -z $url ]]; then
      url=$(git -C "$REPO_DIR" remote get-url origin 2>/dev/null) ||
        die "missing setting ORCA_TPU_GIT_URL: this checkout has no 'origin' remote; pass --git_url URL, set ORCA_TPU_GIT_URL, or use --source local"
    fi
    ref=${ORCA_TPU_GIT_REF-}
    if [[ -z $ref ]]; then
      ref=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null) ||
        die "missing setting ORCA_TPU_GIT_REF: $REPO_DIR is not a git checkout; pass --git_ref REF or use --source local"
      if [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no) ]]; then
        echo "$SCRIPT: warning: this checkout has uncommitted changes; the workers get commit $ref" \
          "without them (--source local copies them)" >&2
      fi
    fi
    ;;
  local)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Tracked and untracked files that git does not ignore and that exist in the working tree.
    git -C "$REPO_DIR" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do if [[ -e $REPO_DIR/$f ]]; then printf '%s\0' "$f"; fi; done >"$tmp/files"
    run tar -czf "$tmp/orca_jax.tar.gz" -C "$REPO_DIR" --null -T "$tmp/files"
    tpu_scp_all "$tmp/orca_jax.tar.gz" orca_jax.tar.gz
    ;;
  *) die "--source must be git or local, not '$source_kind'" ;;
esac

# On each worker: python and venv (apt when missing), the source in ~/orca_jax, pip install.
params="SRC=$source_kind URL=$(printf %q "$url") REF=$(printf %q "$ref") PY=$(printf %q "$python") JAX=$(printf %q "jax[tpu]==$jax_version")"
remote="$REMOTE_PRELUDE; $REMOTE_IDLE; $params; $(oneline <<'REMOTE'
R=$HOME/orca_jax
V=$HOME/orca_venv
if ! "$PY" -c 'import ensurepip, venv' > /dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PY" "$PY-venv"; fi
rm -rf "$R"
if [ "$SRC" = git ]; then git clone -q "$URL" "$R" && git -C "$R" checkout -q "$REF"; else mkdir -p "$R" && tar -xzf "$HOME/orca_jax.tar.gz" -C "$R" && rm -f "$HOME/orca_jax.tar.gz"; fi
"$PY" -m venv "$V"
"$V/bin/pip" install -q --upgrade pip
"$V/bin/pip" install -q -e "$R" "$JAX"
"$V/bin/orca-train" --help > /dev/null
echo "[$TAG] orca_jax installed in $R, $("$V/bin/python" -c 'import jax; print("jax", jax.__version__)')"
REMOTE
)"
tpu_ssh all "$remote"
