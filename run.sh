#!/usr/bin/env bash
# Set-up and entry point for a fresh machine.
#   ./run.sh play [lofi-live run options]   install the runtime and play live on the shipped default model
#                                           (on Linux without an ALSA sequencer: install jackd2, start a JACK server;
#                                           with --web: the [web] extra too)
#   ./run.sh test [pytest options]          install everything (training extras, JACK for real MIDI ports, Chromium
#                                           for the browser tests) and run the tests
# Both are idempotent: a second call reuses the virtual environments.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

apt_install() {
  # apt_install WHY TOOL:PACKAGE...: install the Debian packages of the missing tools (as root or with sudo);
  # without apt-get, say what to install and WHY.
  local why=$1 missing=()
  shift
  for tool in "$@"; do command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}"); done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "run.sh: please install ${missing[*]}: $why" >&2
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

needs_jack() {
  # Linux without an ALSA sequencer (containers, CI) has no MIDI system unless a JACK server runs.
  [[ $(uname -s) == Linux && ! -e /dev/snd/seq ]]
}

start_jack_if_needed() {
  # Run a JACK server with the dummy driver (no sound card needed) when none is running. It keeps running
  # after `play` ends, so a second `play` (or a synth's client) finds it; the message says how to stop it.
  needs_jack && command -v jackd >/dev/null && command -v jack_wait >/dev/null || return 0
  # `jack_wait -c` prints "running" or "not running": compare the whole answer.
  [[ $(jack_wait -c 2>/dev/null) == running ]] && return 0
  local log="${TMPDIR:-/tmp}/lofi-live-jackd-${JACK_DEFAULT_SERVER:-default}.log"
  JACK_NO_AUDIO_RESERVATION=1 nohup jackd --no-realtime -d dummy -r 48000 -p 64 >"$log" 2>&1 &
  local pid=$!
  if ! jack_wait -w -t 10 >/dev/null 2>&1; then
    kill "$pid" 2>/dev/null || true
    echo "run.sh: the JACK server did not start within 10 s (log: $log)" >&2
    exit 1
  fi
  echo "run.sh: started a JACK server with the dummy driver (pid $pid, log $log);" \
    "it keeps running: stop it with \`kill $pid\`" >&2
  export LOFI_LIVE_MIDI_BACKEND=${LOFI_LIVE_MIDI_BACKEND:-jack}
}

case "${1:-}" in
  play)
    shift
    if needs_jack; then
      apt_install "without an ALSA sequencer, play needs a JACK server for its MIDI ports" jackd:jackd2 jack_wait:jackd2
    fi
    extras=""
    for arg in "$@"; do [[ $arg == --web || $arg == --web=* ]] && extras="[web]"; done  # the control surface's extra
    venv .venv-runtime "$extras"
    start_jack_if_needed
    exec .venv-runtime/bin/lofi-live run "$@"
    ;;
  test)
    shift
    apt_install "the real MIDI port tests are skipped without JACK" \
      jackd:jackd2 jack_midi_dump:jackd2 jack_midi_clock:jack-midi-clock
    apt_install "the control surface's browser tests are skipped without Chromium" \
      chromium:chromium chromedriver:chromium-driver
    venv .venv "[train,plot,dev,cluster,link,web]"
    # The runtime must install and run without TensorFlow: check it in its own environment.
    venv .venv-runtime ""
    .venv-runtime/bin/python -c "import sys, lofi_live.model.loader, lofi_live.commands.run; assert 'tensorflow' not in sys.modules"
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
