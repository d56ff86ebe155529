#!/usr/bin/env bash
# Verifies river's issued certificates with an independent tool (openssl): chains, purposes, key
# usage, subject alternative names, lifetimes and key file modes. Starts a throwaway one-machine
# cluster with `river up --detach` and stops it again. Usage: pki/verify.sh [path/to/river]
set -euo pipefail
RIVER=$(realpath "${1:-target/debug/river}")
command -v openssl >/dev/null || { echo "SKIP pki/verify.sh: needs openssl"; exit 0; }

T=$(mktemp -d /tmp/river-pki.XXXXXX)
export RIVER_CONFIG_DIR=$T/cli
cleanup() { "$RIVER" down --state-dir "$T/state" >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$RIVER" up --detach --state-dir "$T/state" --listen "127.0.0.1:$port" >/dev/null

CA=$T/state/host/ca.crt
HOST=$T/state/host/host.crt
NODE=$T/state/runner/identity/cert.pem
USER=$T/cli/cert.pem
PASS=0 FAIL=0
check() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok - $what"; PASS=$((PASS + 1)); else echo "not ok - $what"; FAIL=$((FAIL + 1)); fi
}
text() { openssl x509 -in "$1" -noout -text; }
has() { text "$1" | grep -q -- "$2"; }
lacks() { ! has "$1" "$2"; }
days_left() { echo $(( ($(date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s) - $(date +%s)) / 86400 )); }
between() { local v; v=$(days_left "$1"); [[ $v -ge $2 && $v -le $3 ]]; }
mode_is() { [[ $(stat -c %a "$1") == "$2" ]]; }

check "CA is self-signed and valid" openssl verify -CAfile "$CA" "$CA"
check "CA may sign certificates, one level deep" has "$CA" "CA:TRUE, pathlen:0"
check "CA key usage: certificate and CRL signing" has "$CA" "Certificate Sign, CRL Sign"
check "CA lives about 10 years" between "$CA" 3640 3660
check "host certificate chains to the CA as a TLS server" openssl verify -purpose sslserver -CAfile "$CA" "$HOST"
check "host certificate names host.river" has "$HOST" "DNS:host.river"
check "host certificate names loopback" has "$HOST" "IP Address:127.0.0.1"
check "host certificate carries river://host" has "$HOST" "URI:river://host"
check "host certificate is not a CA" has "$HOST" "CA:FALSE"
check "node certificate is not a CA" has "$NODE" "CA:FALSE"
check "host certificate lives about a year" between "$HOST" 363 366
check "node certificate chains to the CA as a TLS client" openssl verify -purpose sslclient -CAfile "$CA" "$NODE"
check "node certificate is not valid for TLS servers" bash -c "! openssl verify -purpose sslserver -CAfile '$CA' '$NODE'"
check "node certificate names the node" has "$NODE" "URI:river://node/"
check "node certificate: client auth only" lacks "$NODE" "TLS Web Server Authentication"
check "node certificate: digital signature key usage" has "$NODE" "Digital Signature"
check "node certificate lives 30 days" between "$NODE" 29 30
check "user certificate chains to the CA as a TLS client" openssl verify -purpose sslclient -CAfile "$CA" "$USER"
check "user certificate names the admin user" has "$USER" "URI:river://user/admin"
check "user certificate lives 7 days" between "$USER" 6 7
check "CA key is 0600" mode_is "$T/state/host/ca.key" 600
check "host key is 0600" mode_is "$T/state/host/host.key" 600
check "node key is 0600" mode_is "$T/state/runner/identity/key.pem" 600
check "user key is 0600" mode_is "$T/cli/key.pem" 600
check "host state directory is 0700" mode_is "$T/state/host" 700
check "node key matches its certificate" bash -c "[[ \$(openssl pkey -in '$T/state/runner/identity/key.pem' -pubout) == \$(openssl x509 -in '$NODE' -noout -pubkey) ]]"
check "HTTPS API serves the host certificate" bash -c "echo | openssl s_client -connect 127.0.0.1:$port -CAfile '$CA' -verify_return_error -servername host.river 2>/dev/null | grep -q 'Verify return code: 0'"
echo
echo "pki: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
