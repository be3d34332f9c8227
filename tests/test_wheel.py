"""The built wheel, installed alone in a fresh virtual environment, plays on its shipped model from any folder.

The wheel is built from a copy of the checkout's source files (those git tracks or would track, so stale
build output cannot slip into it), installed with its runtime dependencies from PyPI into a new venv without
system site packages, and the commands a new user types are run from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mido
import pytest

from lofi_live.model.loader import DEFAULT_MODEL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "exported_models"
#: The suffixes setup.cfg ships from exported_models/ (``.step.onnx`` ends in ``.onnx``).
MODEL_SUFFIXES = (".json", ".onnx", ".md")
#: What the wheel may weigh beyond the shipped model files: the code and its small data files.
CODE_BYTES = 2_000_000


def _check(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _source_copy(destination: Path) -> Path:
    """The files of a fresh clone (tracked, or new and not ignored) copied to ``destination``."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the source files from build output")
    for name in listing.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # a tracked file deleted in the working tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = _source_copy(base / "src")
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(source)])
    (built,) = (base / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new venv (no system site packages) holding only the wheel and its runtime dependencies."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    _check([sys.executable, "-m", "venv", str(folder)])
    _check([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], env=_user_env())
    return folder


def _user_env(**extra: str) -> dict[str, str]:
    """The environment of a user who never saw the checkout: no PYTHONPATH, no model or backend chosen."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "LOFI_LIVE_MODEL", "LOFI_LIVE_MIDI_BACKEND")}
    return {**env, **extra}


def _lofi_live(venv: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "lofi-live"), *args], cwd=cwd, env=_user_env(**env),
                          capture_output=True, text=True, timeout=300)


def _note_ons(path: Path) -> int:
    return sum(1 for track in mido.MidiFile(path).tracks for m in track if m.type == "note_on" and m.velocity > 0)


def test_the_wheel_carries_every_shipped_model_file_and_little_else(wheel):
    model_files = [path for path in SHIPPED.iterdir() if path.is_file() and path.name.endswith(MODEL_SUFFIXES)]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"exported_models/{path.name}" for path in model_files} | {"exported_models/__init__.py"} <= names
    models = sum(path.stat().st_size for path in model_files)
    size = wheel.stat().st_size
    print(f"\n{wheel.name}: {size / 1e6:.2f} MB, of which shipped model files {models / 1e6:.2f} MB")
    assert size < models + CODE_BYTES, f"the wheel weighs {size} bytes, the models {models}: what else is in it?"


def test_installed_wheel_generates_and_benches_on_the_shipped_model_from_another_folder(venv, tmp_path):
    imported = "import exported_models, lofi_live; print(exported_models.__file__); print(lofi_live.__file__)"
    where = _check([str(venv / "bin" / "python"), "-c", imported], cwd=tmp_path, env=_user_env())
    for line in where.stdout.split():
        assert Path(line).is_relative_to(venv), f"imported from outside the venv: {line}"

    generated = _lofi_live(venv, tmp_path, "generate", "--steps", "64", "-o", "x.mid")
    assert generated.returncode == 0, generated.stderr
    assert f"model {DEFAULT_MODEL} " in generated.stdout
    assert _note_ons(tmp_path / "x.mid") > 0

    bench = _lofi_live(venv, tmp_path, "bench", "--json")
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout)
    assert figures["model"] == DEFAULT_MODEL
    assert figures["onnx_step"]["median_ms"] > 0 and figures["generate_500_s"] > 0


def test_installed_wheel_takes_a_shipped_name_a_path_or_the_environment(venv, tmp_path):
    named = _lofi_live(venv, tmp_path, "generate", "--model", DEFAULT_MODEL, "--steps", "32", "-o", "named.mid")
    assert named.returncode == 0, named.stderr
    assert _note_ons(tmp_path / "named.mid") > 0

    from_env = _lofi_live(venv, tmp_path, "generate", "--steps", "32", "-o", "env.mid", LOFI_LIVE_MODEL=DEFAULT_MODEL)
    assert from_env.returncode == 0, from_env.stderr

    # A path wins over the shipped names: a copy of the model in a folder of its own.
    (tmp_path / "mine").mkdir()
    for path in SHIPPED.glob(f"{DEFAULT_MODEL}.*"):
        shutil.copy(path, tmp_path / "mine" / path.name)
    by_path = _lofi_live(venv, tmp_path, "generate", "--model", f"mine/{DEFAULT_MODEL}", "--steps", "32",
                         "-o", "path.mid")
    assert by_path.returncode == 0, by_path.stderr
    lookup = f"from lofi_live.model.loader import resolve_model_path; print(resolve_model_path({DEFAULT_MODEL!r}))"
    for cwd, expected in ((tmp_path, venv), (tmp_path / "mine", tmp_path / "mine" / f"{DEFAULT_MODEL}.json")):
        found = _check([str(venv / "bin" / "python"), "-c", lookup], cwd=cwd, env=_user_env()).stdout.strip()
        assert Path(cwd, found).resolve().is_relative_to(expected.resolve()), (cwd, found)

    unknown = _lofi_live(venv, tmp_path, "generate", "--model", "no-such-model", "--steps", "32", "-o", "n.mid")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "no such model" in unknown.stderr
    listed = re.search(r"\(shipped: ([^)]*)\)", unknown.stderr)
    assert listed and DEFAULT_MODEL in listed.group(1).split(", "), unknown.stderr


@pytest.mark.jack
def test_installed_wheel_plays_live_on_a_jack_server(venv, tmp_path):
    """``lofi-live run --duration 3`` from the wheel, on a JACK server of its own (stopped by its PID)."""
    if not (shutil.which("jackd") and shutil.which("jack_wait")):
        pytest.skip("jackd not installed (apt-get install jackd2): the live check needs a JACK server")
    jack = {"JACK_DEFAULT_SERVER": f"lofi-wheel-{os.getpid()}"}
    server = subprocess.Popen(["jackd", "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
                              env=_user_env(JACK_NO_AUDIO_RESERVATION="1", **jack),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _check(["jack_wait", "-w", "-t", "10"], env=_user_env(**jack))
        played = _lofi_live(venv, tmp_path, "run", "--duration", "3", **jack)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert played.returncode == 0, played.stderr
    assert "ports (jack): play into 'LoFi Live:LoFi Live'" in played.stdout
    assert f"model {DEFAULT_MODEL} " in played.stdout
