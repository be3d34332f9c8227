"""`lofi-live run --clock midi` following ``jack_midi_clock`` on a JACK server that stalls.

A loaded machine stops JACK's dummy server now and then for up to a tick period or more: every later
process cycle then comes that much later in wall time, while the server's sample clock, by which
``jack_midi_clock`` places its ticks, moves on as if nothing happened. By arrival time alone a stall
of a period is a lost tick, and every later step would go out a tick early. Here the server of
``benchmarks/midi_clock_check.py`` is stopped on purpose (SIGSTOP, SIGCONT) four times in a run, for
0.5 to 1.6 tick periods each; its listener (``jack_midi_dump -a``, frame times) then judges every
gap between the model's onsets: a whole number of 12-tick steps within a quarter tick, all but one.
(Counting by arrival time, as the engine did before, put 6 and 9 gaps of about 40 off, and onsets up
to 4 ticks early. What is left: a tick the engine reads right after a stall can get a late frame stamp
and read as following a lost tick; from then on the count is one ahead, which one gap shows. That
happened in 2 of 8 runs here, docs/BENCHMARKS.md.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from jack_helpers import ROOT

pytestmark = [pytest.mark.jack, pytest.mark.slow]


def test_stalls_of_the_jack_server_put_at_most_one_onset_gap_off_the_clocks_grid():
    missing = [tool for tool in ("jackd", "jack_midi_clock", "jack_midi_dump", "jack_transport") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (./run.sh test installs them): needed for a real JACK clock")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "midi_clock_check.py"), "--runs", "1",
                           "--seconds", "14", "--stalls", "4"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    print(done.stdout, done.stderr)
    run = re.search(r"run 1: (\d+) onsets.*?: (\d+) of (\d+) \(largest.*server stopped 4 times", done.stdout)
    assert run, done.stdout + done.stderr
    assert int(run.group(1)) >= 30 and int(run.group(2)) <= 1, done.stdout
