#!/bin/sh
# /usr/local/bin/scheduler-daemon: the CLI of the systemd install (README "Running under systemd").
# Operator commands read the service's config, and through it the admin token, without -c:
#   sudo scheduler-daemon status
: "${SCHEDULER_CONFIG:=/etc/scheduler-daemon/config.yaml}"
export SCHEDULER_CONFIG
exec /opt/scheduler-daemon/bin/scheduler-daemon "$@"
