"""Offline training: MIDI folder -> tokens -> Keras LSTM -> ONNX (heavy dependencies).

Uses :mod:`lofi_live.tokens.rules` so that a token means the same thing here and at run time.
"""
