"""The models that ship with lofi-live: each ``NAME.json`` here with its ``NAME.onnx`` (and ``NAME.step.onnx``).

This folder is a package only so that its model files install with lofi-live as package data (``setup.cfg``
ships every ``*.json``, ``*.onnx`` and ``*.md`` in it) and are found through :mod:`importlib.resources`
wherever lofi-live is installed; :func:`lofi_live.model.loader.resolve_model_path` looks up ``--model NAME`` here.
It holds no code.
"""
