"""Preparing corpora: MIDI folder to tokens, shards, Dask."""
