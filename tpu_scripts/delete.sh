#!/usr/bin/env bash
# Deletes the TPU VM, or the queued resource with its slices, without asking.
set -euo pipefail

USAGE="usage: delete.sh [common flags]

Deletes the TPU VM (gcloud compute tpus tpu-vm delete --quiet) or, with --queued / --num_slices, the
queued resource and its TPU VMs (gcloud compute tpus queued-resources delete --force --quiet).
It does not ask for confirmation: run stop.sh first so that a training job saves a checkpoint."

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
init "$@"
set -- ${REST[@]+"${REST[@]}"}
if (($#)); then unknown_flag "$1"; fi
require_target

if ((ORCA_TPU_QUEUED)); then
  tpu_gcloud delete --force --quiet
else
  tpu_gcloud delete --quiet
fi
