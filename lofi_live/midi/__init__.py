"""MIDI files and ports: reading and writing .mid, opening ports, the live session's ports, watching the MIDI system."""
