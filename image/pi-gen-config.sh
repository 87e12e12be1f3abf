#!/bin/bash
# pi-gen config for a synch image: Raspberry Pi OS Lite (stage0..2) plus the synch stage.
# Usage: image/pi-gen-config.sh /abs/path/to/pi-gen-stage > config; then in pi-gen:
#   ./build.sh -c config        (or ./build-docker.sh -c config)
set -euo pipefail
stage="${1:?absolute path of pi-gen-stage}"
cat <<CONF
IMG_NAME=synch
RELEASE=trixie
STAGE_LIST="stage0 stage1 stage2 $stage"
TARGET_HOSTNAME=synch-branch
FIRST_USER_NAME=${FIRST_USER_NAME:-synch}
ENABLE_SSH=1
${PUBKEY_SSH_FIRST_USER:+PUBKEY_SSH_FIRST_USER="$PUBKEY_SSH_FIRST_USER"}
${PUBKEY_SSH_FIRST_USER:+PUBKEY_ONLY_SSH=1}
DEPLOY_COMPRESSION=xz
CONF
