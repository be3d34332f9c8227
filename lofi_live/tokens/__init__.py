"""Token rules: the seed's note/chord tokens, the 0.5-beat grid with hold and rest, MIDI to tokens."""
