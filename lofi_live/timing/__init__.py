"""Time: the internal, MIDI-clock and Link clocks, swing and dynamics."""
