"""lofi-live: a real-time LoFi MIDI continuation instrument.

The runtime package: it reads exported ONNX models and talks MIDI. It never imports
TensorFlow or the ``training`` package, so it installs with light dependencies only.
"""

__version__ = "0.1.0"
