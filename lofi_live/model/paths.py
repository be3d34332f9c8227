"""Where a model is found: ``--model`` as a path or a shipped model's name, ``$LOFI_LIVE_MODEL``, the default.

Split from :mod:`lofi_live.model.loader`, which re-exports these names.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from lofi_live.errors import LofiError

#: Environment variable naming the model used when ``--model`` is not given.
MODEL_ENV = "LOFI_LIVE_MODEL"
#: The shipped model used when neither ``--model`` nor ``$LOFI_LIVE_MODEL`` names one.
DEFAULT_MODEL = "lofi"
#: The package whose data files are the shipped models (the top-level ``exported_models/`` folder).
SHIPPED_MODELS_PACKAGE = "exported_models"


#: The ``--model`` help text of every command.
MODEL_HELP = ("exported model: a shipped model's name (e.g. lofi, lofi-seed) or a path NAME, NAME.json or NAME.onnx "
              f"(default: ${MODEL_ENV}, else the shipped {DEFAULT_MODEL})")


def shipped_models_dir() -> Path:
    """The folder of the shipped models: the checkout's ``exported_models/``, or its installed copy.

    Found through :mod:`importlib.resources` rather than next to this file, because a wheel installs
    ``exported_models`` as a package of its own beside ``lofi_live``. pip installs packages as plain
    folders, so the result is a real folder holding each model's three files side by side.
    """
    try:
        return Path(str(resources.files(SHIPPED_MODELS_PACKAGE)))
    except ModuleNotFoundError:
        raise LofiError(f"the shipped models are not installed (no {SHIPPED_MODELS_PACKAGE} package); "
                        "reinstall lofi-live or pass --model") from None


def shipped_model_names() -> list[str]:
    """The names ``--model`` accepts without a path: every ``NAME.json`` among the shipped models."""
    return sorted(path.stem for path in shipped_models_dir().glob("*.json"))


def default_model_path() -> Path:
    """The model used when ``--model`` is not given: ``$LOFI_LIVE_MODEL`` when set, else the shipped ``lofi``.

    The variable is read as ``--model`` is (a path or a shipped model's name) by :func:`resolve_model_path`.
    """
    override = os.environ.get(MODEL_ENV, "").strip()
    return Path(override).expanduser() if override else shipped_models_dir() / DEFAULT_MODEL


def resolve_model_path(arg: str | os.PathLike | None = None) -> Path:
    """The ``NAME.json`` of a model given as a path or as the name of a shipped model.

    A path is ``NAME``, ``NAME.json``, ``NAME.onnx``, ``NAME.step.onnx`` or a folder holding exactly one
    ``*.json`` model. A bare name (no folder part) that is no model in the current folder is looked up among
    the shipped models, so ``--model lofi`` works from any folder and in an installed wheel; a file of that
    name in the current folder comes first, as any path does. ``None`` means :func:`default_model_path`.
    """
    text = os.fspath(default_model_path() if arg in (None, "") else arg)
    path = _model_json(Path(text).expanduser())
    if path.exists() or Path(text).name != text:
        return path
    shipped = _model_json(shipped_models_dir() / text)
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_model_names()) or "none"
    raise LofiError(f"{text}: no such model, neither a file here nor a shipped model (shipped: {names}); "
                    "give a path or a shipped model's name")


def _model_json(path: Path) -> Path:
    """``path`` (any of the forms :func:`resolve_model_path` accepts) as the path of its ``NAME.json``."""
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) == 1:
            return found[0]
        raise LofiError(f"{path}: a folder; give the model as NAME, NAME.json or NAME.onnx")
    name = path.name
    for suffix in (".step.onnx", ".onnx", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")
