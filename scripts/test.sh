#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian/Ubuntu; a
# Docker engine and a busybox test image through scripts/docker-env.sh), then runs format and lint
# checks, unit and in-process tests (containers against the real engine), the openssl checks of
# issued certificates and the network-namespace tests with the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

install_needs() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v tmux >/dev/null || missing+=(tmux)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
  if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "== installing ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "missing: ${missing[*]}; install them (tests that need them will say they are skipped)"
    fi
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
  rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true
}

install_needs
if [[ $EUID -eq 0 ]]; then
  # A real Docker engine and the busybox test image; the container tests must then run, not skip.
  bash scripts/docker-env.sh
  export RIVER_REQUIRE_DOCKER=1
  # The dashboard's tests drive a real browser; they must run, not skip.
  export RIVER_REQUIRE_BROWSER=1
fi
# The API's property-based check (schemathesis, from PyPI, pinned) in a virtualenv of its own;
# as root its test must then run, not skip.
st_venv=target/schemathesis-venv
if [[ ! -x $st_venv/bin/st ]]; then
  echo "== installing schemathesis"
  if ! { python3 -m venv "$st_venv" && "$st_venv/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5; }; then
    [[ $EUID -ne 0 ]] || exit 1
    echo "schemathesis could not be installed: its test will say it is skipped"
  fi
fi
export RIVER_SCHEMATHESIS=$PWD/$st_venv/bin/st
if [[ $EUID -eq 0 ]]; then
  export RIVER_REQUIRE_SCHEMATHESIS=1
else
  echo "not root: Docker tests will say they are skipped"
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== unit and in-process tests"
cargo test --workspace --locked
echo "== build the river binary for the process-level tests"
cargo build --locked -p river
echo "== pki: issued certificates checked with openssl"
bash pki/verify.sh target/debug/river
echo "== netns: real binaries in network namespaces"
bash netns-tests/run.sh target/debug/river
