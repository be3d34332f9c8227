"""The loop rule of ``generate`` (:class:`LoopFollower`) and the clip/loop timing under it (tokens/loops.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lofi_live.errors import LofiError
from lofi_live.midi.files import NoteEvent
from lofi_live.model.loop_follow import LoopFollower, parse_variation
from lofi_live.model.sampling import Sampler
from lofi_live.tokens import loops
from lofi_live.tokens import rules as token_rules
from model_fixtures import GRID_VOCABULARY

INDEX = {t: i for i, t in enumerate(GRID_VOCABULARY)}
#: Two bars: C major held, A minor held with a melody note, F major, G major (4 chords, 16 steps).
LOOP = (["0.4.7", "hold", "hold", "rest", "9.0.4", "hold", "E4", "hold",
         "5.9.0", "hold", "hold", "rest", "7.11.2", "hold", "hold", "hold"])


def _ids(tokens):
    return [INDEX[t] for t in tokens]


def test_the_period_of_a_loop_heard_twice_and_of_a_phrase_heard_once():
    follower = LoopFollower(GRID_VOCABULARY, variation=0.5)
    follower.hear(_ids(LOOP * 2))
    assert follower.period == 16 and follower.loop == _ids(LOOP)
    # heard once, the whole phrase is the cycle; a rhythm repeated under other chords is no 4-step loop
    follower.hear(_ids(LOOP))
    assert follower.period == 16
    follower.hear(_ids(["0.4.7", "hold", "hold", "rest"] * 6))
    assert follower.period == 4
    follower.hear(_ids(["hold", "rest"]))
    assert not follower.active


def test_variation_zero_replays_the_loop_exactly():
    follower = LoopFollower(GRID_VOCABULARY, variation=0.0)
    follower.hear(_ids(LOOP * 2))
    sampler = Sampler(1.0, 24, seed=0, max_repeat=None)
    rng = np.random.default_rng(0)
    chosen = []
    for _ in range(48):
        probs, mask = follower.shape(rng.dirichlet(np.ones(len(GRID_VOCABULARY))))
        chosen.append(sampler.choose(probs, mask))
        follower.add(chosen[-1])
    assert [GRID_VOCABULARY[i] for i in chosen] == LOOP * 3


def test_variations_keep_to_the_chord_sounding_at_that_point():
    follower = LoopFollower(GRID_VOCABULARY, variation=1.0, groove=0.0)
    follower.hear(_ids(LOOP * 2))
    # what the tokens sound: an onset until the next onset or rest (E4 alone at steps 6-7)
    sounding = ([{0, 4, 7}] * 3 + [{0, 4, 7, 9}] + [{9, 0, 4}] * 2 + [{4}] * 2 + [{5, 9, 0}] * 3
                + [{5, 9, 0, 7, 11, 2}] + [{7, 11, 2}] * 4)
    rng = np.random.default_rng(1)
    sampler = Sampler(1.0, None, seed=1, max_repeat=None)
    for step in range(160):
        probs, mask = follower.shape(rng.dirichlet(np.ones(len(GRID_VOCABULARY))))
        choice = sampler.choose(probs, mask)
        follower.add(choice)
        token = GRID_VOCABULARY[choice]
        if not token_rules.is_rhythm(token):
            where = step % 16
            # at a rest (step 3, 11) the onsets on either side are the chord; elsewhere the one sounding
            assert token_rules.token_pitch_classes(token) <= sounding[where], (step, token)


def test_groove_damps_onsets_where_the_loop_has_none():
    follower = LoopFollower(GRID_VOCABULARY, variation=1.0, groove=0.8)
    follower.hear(_ids(LOOP * 2))
    flat = np.full(len(GRID_VOCABULARY), 1.0 / len(GRID_VOCABULARY))
    probs, _ = follower.shape(flat)  # step 0: the loop strikes C major
    follower.add(INDEX["0.4.7"])
    onset = np.array([not token_rules.is_rhythm(t) for t in GRID_VOCABULARY])
    held, _ = follower.shape(flat)  # step 1: the loop holds
    assert held[onset].sum() < probs[onset].sum() and held[INDEX["hold"]] > probs[INDEX["hold"]]
    free = LoopFollower(GRID_VOCABULARY, variation=1.0, groove=0.0)
    free.hear(_ids(LOOP * 2))
    free.shape(flat)
    free.add(INDEX["0.4.7"])
    undamped, _ = free.shape(flat)
    assert held[onset].sum() < 0.5 * undamped[onset].sum()


def test_bad_settings_are_refused():
    with pytest.raises(LofiError):
        LoopFollower(GRID_VOCABULARY, variation=1.5)
    with pytest.raises(ValueError):
        parse_variation("-0.1")
    assert parse_variation("0.25") == 0.25


def test_loop_notes_cycle_and_cut():
    notes = [NoteEvent(0.0, 3.0, 60), NoteEvent(0.0, 3.0, 64), NoteEvent(3.5, 1.0, 67), NoteEvent(6.0, 4.0, 57)]
    assert loops.loop_steps(notes) == 24  # notes to beat 10: three bars
    cut = loops.cut_loop(notes, 1)
    assert [(n.start, n.duration, n.pitch) for n in cut] == [(0.0, 3.0, 60), (0.0, 3.0, 64), (3.5, 0.5, 67)]
    cycle = loops.cycle_pitch_classes(cut, 8)
    assert cycle[0] == cycle[5] == {0, 4} and cycle[6] == set() and cycle[7] == {7}
    twice = loops.looped_tokens(cut, 8)
    assert twice.tokens[:8] == twice.tokens[8:] and twice.end_step == 16
    # a note held over the loop's end sounds again at its start
    assert loops.cycle_pitch_classes([NoteEvent(3.0, 2.0, 62)], 8)[0] == {2}


def test_without_replay_only_the_chords_and_groove_shape_the_network():
    """For a network with a copy gate: no replayed token is mixed in, the network's choice is only restricted."""
    follower = LoopFollower(GRID_VOCABULARY, variation=0.0, groove=0.0, replay=False)
    follower.hear(_ids(LOOP * 2))
    network = np.full(len(GRID_VOCABULARY), 1.0 / len(GRID_VOCABULARY))
    probs, mask = follower.shape(network)
    onset = np.array([not token_rules.is_rhythm(t) for t in GRID_VOCABULARY])
    # step 0 (C major sounds): every allowed chord keeps the same share, the loop's own chord gets no extra weight
    # (single notes are weighted toward the last note heard, E4)
    chords = np.array([token_rules.is_chord(t) for t in GRID_VOCABULARY])
    allowed = np.flatnonzero(mask & onset & chords)
    assert INDEX["0.4.7"] in allowed and INDEX["9.0.4"] not in allowed and len(allowed) >= 1
    assert np.allclose(probs[allowed], probs[INDEX["0.4.7"]]) and probs.sum() == pytest.approx(1.0)
    notes = np.flatnonzero(mask & onset & ~chords)
    assert probs[INDEX["E4"]] == probs[notes].max()
    replaying = LoopFollower(GRID_VOCABULARY, variation=0.0, groove=0.0)
    replaying.hear(_ids(LOOP * 2))
    assert replaying.shape(network)[0][INDEX["0.4.7"]] == pytest.approx(1.0)
