#!/usr/bin/env bash
# Set-up and entry point for a fresh machine.
#   ./run.sh play [lofi-live run options]   install the runtime and play live on the shipped default model
#   ./run.sh test [pytest options]          install everything (training extras, JACK for real MIDI ports) and run the tests
# Both are idempotent: a second call reuses the virtual environments.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

apt_install() {
  # Debian packages the real-port tests need (a JACK server and real JACK MIDI clients).
  local missing=()
  for tool in "$@"; do command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}"); done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "run.sh: please install ${missing[*]} (JACK) for the real MIDI port tests; they are skipped without it" >&2
  fi
}

venv() {
  # venv DIR EXTRAS: create DIR once and install the project with EXTRAS into it.
  local dir=$1 extras=$2
  local log="$dir/install.log"
  [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
  if ! { "$dir/bin/python" -m pip install -q --upgrade pip && "$dir/bin/python" -m pip install -q -e ".${extras}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "run.sh: installing into $dir failed (log above, also in $log)" >&2
    exit 1
  fi
}

start_jack_if_needed() {
  # Linux without an ALSA sequencer (containers, CI): run a JACK server with the dummy driver.
  [[ $(uname -s) == Linux && ! -e /dev/snd/seq ]] || return 0
  command -v jackd >/dev/null || return 0
  jack_wait -c 2>/dev/null | grep -q running && return 0
  JACK_NO_AUDIO_RESERVATION=1 nohup jackd --no-realtime -d dummy -r 48000 -p 64 >/tmp/lofi-live-jackd.log 2>&1 &
  jack_wait -w -t 10 >/dev/null 2>&1 || true
  export LOFI_LIVE_MIDI_BACKEND=${LOFI_LIVE_MIDI_BACKEND:-jack}
}

case "${1:-}" in
  play)
    shift
    venv .venv-runtime ""
    start_jack_if_needed
    exec .venv-runtime/bin/lofi-live run "$@"
    ;;
  test)
    shift
    apt_install jackd:jackd2 jack_midi_dump:jackd2 jack_midi_clock:jack-midi-clock
    venv .venv "[train,plot,dev]"
    # The runtime must install and run without TensorFlow: check it in its own environment.
    venv .venv-runtime ""
    .venv-runtime/bin/python -c "import sys, lofi_live.model, lofi_live.live; assert 'tensorflow' not in sys.modules"
    if .venv-runtime/bin/python -c "import tensorflow" 2>/dev/null; then
      echo "run.sh: TensorFlow got into the runtime environment: install_requires must stay light" >&2
      exit 1
    fi
    .venv-runtime/bin/lofi-live generate --steps 100 -o "$(mktemp -d)/runtime-check.mid" >/dev/null
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh play [lofi-live run options] | ./run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
