"""The one exception type the command line turns into a one-line message and exit code 2."""


class LofiError(Exception):
    """A problem the user can fix (bad file, bad model, missing port): shown as one line, exit 2.

    The message should name the file or thing at fault and the reason, e.g.
    ``"song.mid: not a MIDI file (no MThd header)"``.
    """

    exit_code = 2
