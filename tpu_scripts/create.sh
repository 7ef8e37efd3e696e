#!/usr/bin/env bash
# Creates the TPU: a TPU VM, or a queued resource (--queued), with several slices (--num_slices N).
set -euo pipefail

USAGE="usage: create.sh [--accelerator TYPE] [--runtime VERSION] [--spot | --reserved | --on_demand] [common flags]

Creates a TPU VM (gcloud compute tpus tpu-vm create; waits until it is ready), or with --queued or
--num_slices N a queued resource (gcloud compute tpus queued-resources create; returns once it is
queued: status.sh shows when it is ACTIVE). Multislice resources are named NAME-0 ... NAME-(N-1).

  --accelerator TYPE  e.g. v4-64, v5p-128, v5litepod-256   (ORCA_TPU_ACCELERATOR)
  --runtime VERSION   TPU software version, e.g. tpu-ubuntu2204-base (ORCA_TPU_RUNTIME)
  --spot | --reserved | --on_demand
                      capacity to use (ORCA_TPU_PROVISIONING=spot|reserved|on-demand; default on-demand)"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
while (($#)); do
  case $(flag_name "$1") in
    accelerator) value_of "$@"; ORCA_TPU_ACCELERATOR=$VAL; shift "$N" ;;
    runtime) value_of "$@"; ORCA_TPU_RUNTIME=$VAL; shift "$N" ;;
    spot) ORCA_TPU_PROVISIONING=spot; shift ;;
    reserved) ORCA_TPU_PROVISIONING=reserved; shift ;;
    on_demand) ORCA_TPU_PROVISIONING=on-demand; shift ;;
    *) unknown_flag "$1" ;;
  esac
done
require_target
require ACCELERATOR accelerator
require RUNTIME runtime

capacity=()
case ${ORCA_TPU_PROVISIONING:-on-demand} in
  spot) capacity=(--spot) ;;
  reserved) capacity=(--reserved) ;;
  on-demand) ;;
  *) die "ORCA_TPU_PROVISIONING must be spot, reserved or on-demand, not '$ORCA_TPU_PROVISIONING'" ;;
esac

if ((ORCA_TPU_QUEUED)); then
  nodes=(--node-id="$ORCA_TPU_NAME")
  if ((ORCA_TPU_NUM_SLICES > 1)); then
    nodes=(--node-count="$ORCA_TPU_NUM_SLICES" --node-prefix="$ORCA_TPU_NAME")
  fi
  tpu_gcloud create --accelerator-type="$ORCA_TPU_ACCELERATOR" --runtime-version="$ORCA_TPU_RUNTIME" \
    "${nodes[@]}" ${capacity[@]+"${capacity[@]}"}
  echo "queued resource $ORCA_TPU_NAME requested ($ORCA_TPU_NUM_SLICES x $ORCA_TPU_ACCELERATOR);" \
    "status.sh shows its state; run setup.sh once it is ACTIVE" >&2
else
  tpu_gcloud create --accelerator-type="$ORCA_TPU_ACCELERATOR" --version="$ORCA_TPU_RUNTIME" \
    ${capacity[@]+"${capacity[@]}"}
fi
