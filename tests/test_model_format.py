"""One rule per concept: the model format, the input encodings and the provider list, each written once."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from lofi_live.model import format as model_format
from lofi_live.errors import LofiError
from lofi_live.model.loop_cache import LoopCache
from lofi_live.model.loader import PROVIDERS, Model
from lofi_live.model.format import Graph, check, describe, encode_inputs, encode_tokens
from lofi_live.tokens.rules import TokenError
from model_fixtures import VOCABULARY, build_model
from training.fit import sequences

WHERE = Path("models/x.json")


def _description(**changes) -> dict:
    fields = dict(
        name="x", preset="small", window=4, tokens="grid", encoding="scaled", vocabulary=["C4", "0.4.7", "hold", "rest"],
        window_graph=Graph.of("x.onnx", b"window"), step_graph=Graph.of("x.step.onnx", b"step", [8, 6]),
        seed_windows=[[0, 1, 2, 3]], loop_cache=LoopCache(0.25, 0.8),
        baselines={"unigram_counts": [3, 2, 1, 0], "bigram_next": [1, 2, 3, -1],
                   "onset_bigram_next": [1, 0, -1, -1], "bigram_rhythm_next": [0, 1, 2, -1]},
        data={"files": 1}, metrics={"epochs": 1}, training={"command": "lofi-train fit"},
    )
    fields.update(changes)
    return describe(**fields)


def test_what_the_export_describes_the_runtime_reads_back() -> None:
    """``describe`` (the export) and ``check`` (the runtime) are one description of the format."""
    read = check(_description(), WHERE)
    assert (read.name, read.window, read.tokens, read.encoding) == ("x", 4, "grid", "scaled")
    assert read.vocabulary == ["C4", "0.4.7", "hold", "rest"] and read.grid_beats == 0.5
    assert read.window_graph == Graph.of("x.onnx", b"window") and read.window_graph.input == "tokens"
    assert read.step_graph.states == (("h0", 8), ("c0", 8), ("h1", 6), ("c1", 6))
    assert read.loop_cache == LoopCache(0.25, 0.8) and read.seed_windows == [[0, 1, 2, 3]]
    assert read.baselines["bigram_rhythm_next"] == [0, 1, 2, -1]
    assert "step" not in _description(step_graph=None)["graphs"]


@pytest.mark.parametrize("change, words", [
    ({"window": 0}, "window 0 out of range"),
    ({"seed_windows": [[0, 1, 2]]}, "seed_windows"),
    ({"window_graph": Graph("../x.onnx", "0" * 64, "tokens", "probs")}, "plain file name"),
    ({"baselines": {"unigram_counts": [1, 1, 1, 1], "bigram_next": [0, 0, 0, 0], "bigram_rhythm_next": [3, 0, 0, 0]}},
     "bigram_rhythm_next"),
])
def test_a_description_the_runtime_would_refuse_is_refused_by_the_same_check(change, words) -> None:
    with pytest.raises(LofiError, match=words):
        check(_description(**change), WHERE)


def test_one_token_encoding_on_both_sides(tmp_path: Path) -> None:
    """Model.encode and training's encoder are encode_tokens: nearest known token, malformed refused."""
    vocabulary = VOCABULARY
    index = {token: i for i, token in enumerate(vocabulary)}
    tokens = ["C4", "C#7", "0.4.7.10", "hold"]
    expected = encode_tokens(tokens, vocabulary, index)
    model = Model.load(build_model(tmp_path, window=8), provider="cpu")
    assert model.encode(tokens) == expected.tolist()
    assert sequences.encoder(vocabulary)(tokens).tolist() == expected.tolist()
    assert vocabulary[expected[2]] == "0.4.7"
    for encode in (model.encode, sequences.encoder(vocabulary)):
        with pytest.raises(TokenError, match="H9"):
            encode(["C4", "H9"])


def test_one_scaled_encoding(tmp_path: Path) -> None:
    """The scaled input is i / V in float32 with a trailing axis, and the runtime feeds exactly that."""
    indices = np.array([[0, 1, 33, 34]])
    scaled = encode_inputs(indices, "scaled", 35)
    assert scaled.shape == (1, 4, 1) and scaled.dtype == np.float32
    assert scaled[0, :, 0].tolist() == [np.float32(i) / np.float32(35) for i in (0, 1, 33, 34)]
    assert encode_inputs(indices, "index", 35).dtype == np.int32
    model = Model.load(build_model(tmp_path, window=8, encoding="scaled"), provider="cpu")
    assert np.array_equal(model.feed(indices), encode_inputs(indices, "scaled", len(VOCABULARY)))
    with pytest.raises(ValueError):
        encode_inputs(indices, "onehot", 35)


def test_state_names_are_one_rule() -> None:
    assert model_format.state_names([4, 2]) == [("h0", 4), ("c0", 4), ("h1", 2), ("c1", 2)]
    assert model_format.state_output("c1") == "c1_out"


@pytest.mark.parametrize("command", ["run", "evaluate", "bench"])
def test_every_command_offers_the_one_provider_list(command: str) -> None:
    from lofi_live.cli import COMMANDS, build_parser

    parser = build_parser("lofi-live", COMMANDS, "", [command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    provider = next(a for a in sub._actions if "--provider" in a.option_strings)
    assert provider.choices is PROVIDERS


def test_the_modes_are_one_table() -> None:
    """``run --mode`` and the config/controls checks offer the conductor's own list of modes."""
    from lofi_live.live import conductor
    from lofi_live.live import controls
    from lofi_live.cli import COMMANDS, build_parser

    parser = build_parser("lofi-live", COMMANDS, "", ["run"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    assert next(a for a in sub._actions if "--mode" in a.option_strings).choices is conductor.MODES
    assert controls.MODES is conductor.MODES
