"""A player on JACK in its own process, as a keyboard or a DAW's MIDI track would be, so a test can
make it quit and come back (and it dies with its server without taking the test's process along).

    python tests/jack_player.py "Player Name"

It opens a virtual output, the client ``NAME`` with the port ``NAME``, prints ``ready`` and then
obeys one command a line on stdin, printing ``done`` after each:

* ``phrase P1 P2 ...``: the notes 0.25 s apart, each 0.2 s long;
* ``on P`` / ``off P``: one note-on (velocity 80) or note-off;
* ``quit``.

The JACK server is the environment's (``$JACK_DEFAULT_SERVER``), as for every JACK client.
"""

from __future__ import annotations

import sys
import time

import mido


def main() -> int:
    name = sys.argv[1]
    port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(name, virtual=True, client_name=name)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "phrase":
            start = time.perf_counter()
            for i, pitch in enumerate(int(word) for word in words[1:]):
                while time.perf_counter() < start + i * 0.25:
                    time.sleep(0.002)
                port.send(mido.Message("note_on", note=pitch, velocity=80))
                while time.perf_counter() < start + i * 0.25 + 0.2:
                    time.sleep(0.002)
                port.send(mido.Message("note_off", note=pitch, velocity=0))
        elif words[0] in ("on", "off"):
            port.send(mido.Message(f"note_{words[0]}", note=int(words[1]), velocity=80 if words[0] == "on" else 0))
        print("done", flush=True)
    time.sleep(0.1)  # JACK delivers from its next cycle
    port.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
