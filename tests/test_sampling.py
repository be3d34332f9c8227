"""Sampling: argmax, temperature, top-k, seeded reproducibility, repetition guard, key lock, key finding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError
from lofi_live.model.sampling import (
    DEFAULT_MAX_REPEAT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    Sampler,
    ScaleLock,
    detect_key,
    parse_key,
    parse_scale,
    scale_mask,
)
from model_fixtures import VOCABULARY

probabilities = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40).map(np.array)


@st.composite
def probs_and_mask(draw):
    probs = draw(probabilities)
    mask = np.array(draw(st.lists(st.booleans(), min_size=len(probs), max_size=len(probs))), dtype=bool)
    return probs, mask


@settings(max_examples=200, deadline=None)
@given(probs_and_mask(), st.floats(0, 3), st.one_of(st.none(), st.integers(1, 10)), st.integers(0, 2**32))
def test_choice_is_in_range_and_allowed(data, temperature, top_k, seed):
    probs, mask = data
    sampler = Sampler(temperature, top_k, seed)
    for _ in range(3):
        choice = sampler.choose(probs, mask)
        assert 0 <= choice < len(probs)
        if mask.any():
            assert mask[choice]


@settings(max_examples=100, deadline=None)
@given(probabilities, st.floats(0.05, 3), st.one_of(st.none(), st.integers(1, 10)), st.integers(0, 2**32))
def test_same_seed_same_choices(probs, temperature, top_k, seed):
    first = Sampler(temperature, top_k, seed)
    second = Sampler(temperature, top_k, seed)
    assert [first.choose(probs) for _ in range(20)] == [second.choose(probs) for _ in range(20)]


@settings(max_examples=100, deadline=None)
@given(probs_and_mask())
def test_temperature_zero_is_argmax(data):
    probs, mask = data
    sampler = Sampler(0.0, None, None)
    assert sampler.choose(probs) == int(np.argmax(probs))
    if mask.any():
        assert sampler.choose(probs, mask) == int(np.argmax(np.where(mask, probs, -1)))


@settings(max_examples=100, deadline=None)
@given(probabilities, st.floats(0.1, 3))
def test_top_k_one_is_argmax(probs, temperature):
    floored = np.maximum(probs, 1e-30)
    if (floored == floored.max()).sum() > 1:
        return  # ties: any of the maxima may come out
    sampler = Sampler(temperature, 1, 0, max_repeat=None)
    assert sampler.choose(probs) == int(np.argmax(probs))


def test_top_k_limits_the_choices():
    probs = np.linspace(1, 2, 20)
    sampler = Sampler(5.0, 3, 0, max_repeat=None)
    assert {sampler.choose(probs) for _ in range(300)} == {17, 18, 19}


def test_temperature_sharpens_and_flattens():
    probs = np.array([0.6, 0.3, 0.1])
    cold = Sampler(0.2, None, 1, max_repeat=None)
    hot = Sampler(3.0, None, 1, max_repeat=None)
    cold_picks = [cold.choose(probs) for _ in range(2000)]
    hot_picks = [hot.choose(probs) for _ in range(2000)]
    assert cold_picks.count(0) > 1900
    assert 390 < hot_picks.count(2) < 560  # 0.1^(1/3) / (0.6^(1/3) + 0.3^(1/3) + 0.1^(1/3)) = 0.235
    hot.temperature = 0  # changed at run time, as a MIDI CC does
    assert hot.choose(probs) == 0


def test_repetition_guard():
    probs = np.array([0.97, 0.01, 0.01, 0.01])
    sampler = Sampler(1.0, None, 0, max_repeat=3)
    picks = [sampler.choose(probs) for _ in range(500)]
    run = longest = 0
    for previous, pick in zip([None] + picks, picks):
        run = run + 1 if pick == previous else 1
        longest = max(longest, run)
    assert longest == 3
    argmax = Sampler(0.0, None, 0, max_repeat=3)  # temperature 0 stays the seed's plain argmax
    assert {argmax.choose(probs) for _ in range(10)} == {0}


def test_bad_settings():
    with pytest.raises(LofiError):
        Sampler(-1, None, None)
    with pytest.raises(LofiError):
        Sampler(1, 0, None)


def test_defaults_are_sane():
    assert 0.5 <= DEFAULT_TEMPERATURE <= 1.5
    assert DEFAULT_TOP_K is None or 3 <= DEFAULT_TOP_K <= 40
    assert DEFAULT_MAX_REPEAT is None or DEFAULT_MAX_REPEAT <= 8


def test_parse_key_and_scale():
    assert parse_key("A") == 9 and parse_key("Bb") == 10 and parse_key("B-") == 10
    assert parse_key("a#") == 10 and parse_key("Cb") == 11 and parse_key("C#") == 1
    assert parse_scale("Minor") == "minor" and parse_scale("pentatonic-minor") == "pentatonic_minor"
    assert parse_scale("aeolian") == "minor"
    with pytest.raises(LofiError):
        parse_key("H")
    with pytest.raises(LofiError):
        parse_scale("lydian dominant")


def test_scale_mask_a_minor():
    mask = scale_mask(VOCABULARY, 9, "minor")
    a_minor = {9, 11, 0, 2, 4, 5, 7}
    for token, allowed in zip(VOCABULARY, mask):
        assert allowed == (token_rules.token_pitch_classes(token) <= a_minor)
    assert mask[VOCABULARY.index("9.0.4")] and not mask[VOCABULARY.index("F#4")]


def test_scale_lock_is_never_empty():
    vocabulary = ["C#4", "F#4", "1.5.8", "6.10.1"]  # nothing fits C major
    lock = ScaleLock(vocabulary, 0, "major")
    assert not lock.strict.any() and lock.mask.any()
    assert lock.mask.tolist() == [True, True, False, False]
    assert lock.fit(2) in (0, 1)
    full = ScaleLock(VOCABULARY, 9, "minor")
    assert full.mask.tolist() == full.strict.tolist()
    assert full.mask[full.fit(VOCABULARY.index("G#4"))]


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5", "0.4.7", "5.9.0", "7.11.2", "0.4.7"], (0, "major")),
        (["9.0.4", "2.5.9", "4.8.11", "9.0.4", "A3", "C4", "E4", "A4", "B3", "G#3"], (9, "minor")),
        (["4.7.11", "9.0.4", "E4", "G4", "B4", "E5", "F#4", "D#4"], (4, "minor")),
    ],
)
def test_detect_key(tokens, expected):
    assert detect_key(tokens) == expected


def test_detect_key_without_notes():
    assert detect_key([]) == (0, "major")
    assert detect_key(["nonsense"]) == (0, "major")
