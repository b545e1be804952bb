"""The live pipeline's pure decisions, from tables of cases (acquisition/_batching.py)."""

import numpy as np
import pytest
import useq

from sn2n_live.acquisition._batching import (
    RAW_BACKLOG_HOLD,
    Admission,
    SetTag,
    admit,
    complete_batch,
    hold_for_raw,
    preview_batch,
    preview_due,
    preview_keep,
    set_tag,
)


def _tags(spec: str, size: int = 3) -> list[SetTag]:
    """One tag per character: the letter names the set (all of ``size`` frames)."""
    return [SetTag(size, (("t", ord(c)),)) for c in spec]


def _singles(n: int) -> list[SetTag]:
    return [SetTag(1, (("t", i),)) for i in range(n)]


@pytest.mark.parametrize(
    ("spec", "ending", "max_batch", "take"),
    [
        ("", False, 16, 0),  # nothing queued
        ("a", False, 16, 0),  # an unfinished set waits
        ("aa", True, 16, 2),  # ... unless nothing more comes
        ("aaa", False, 16, 3),  # a whole set
        ("aaab", False, 16, 3),  # the next set has only begun
        ("aab", False, 16, 2),  # a set cut short by the next one counts as whole
        ("aaabbbccc", False, 6, 6),  # whole sets up to max_batch
        ("aaabbbccc", False, 5, 3),  # a set never splits over two batches
        ("aaabbb", False, 2, 3),  # a set larger than max_batch is still one batch
        ("aaabbbc", True, 16, 7),  # ending: the rest, partial set included
    ],
)
def test_complete_batches_take_whole_sets_from_the_front(spec, ending, max_batch, take):
    assert complete_batch(_tags(spec), ending, max_batch) == take


@pytest.mark.parametrize(
    ("n", "ending", "max_batch", "take"),
    [(0, False, 4, 0), (1, False, 4, 1), (3, False, 4, 3), (9, False, 4, 4), (9, True, 16, 9)],
)
def test_complete_batches_of_single_frames(n, ending, max_batch, take):
    assert complete_batch(_singles(n), ending, max_batch) == take


@pytest.mark.parametrize(
    ("spec", "in_memory", "ending", "skip", "take"),
    [
        ("", "", False, 0, 0),
        ("aa", "11", False, 0, 0),  # growing: keep it, nothing to show yet
        ("aa", "11", True, 2, 0),  # it will never be whole: skip it
        ("aaa", "111", False, 0, 3),
        ("aaabbbc", "1111111", False, 3, 3),  # the newest whole set; older ones skipped
        ("aaabb", "11111", False, 0, 3),  # b still growing: show a, keep b
        ("aaabbb", "111101", False, 0, 3),  # b lost a frame to eviction: show a
        ("aaab", "0111", False, 3, 0),  # a is not in memory; b grows
        ("aabbb", "11111", False, 2, 3),  # a was cut short (never complete)
    ],
)
def test_previews_denoise_the_newest_whole_set(spec, in_memory, ending, skip, take):
    flags = [c == "1" for c in in_memory]
    assert preview_batch(_tags(spec), flags, ending) == (skip, take)


@pytest.mark.parametrize(
    ("policy", "queued", "nbytes", "budget", "decision"),
    [
        ("complete", 0, 10, 10, Admission.QUEUE),  # exactly fits
        ("complete", 1, 10, 10, Admission.SPILL),
        ("preview", 1, 10, 10, Admission.DROP),
        ("preview", 0, 5, 10, Admission.QUEUE),
        ("complete", 0, 11, 10, Admission.SPILL),  # a frame larger than the budget
    ],
)
def test_admission_within_the_memory_budget(policy, queued, nbytes, budget, decision):
    assert admit(policy, queued, nbytes, budget) is decision


@pytest.mark.parametrize(
    ("acquiring", "backlog", "alive", "hold"),
    [
        (True, RAW_BACKLOG_HOLD + 1, True, True),
        (True, RAW_BACKLOG_HOLD, True, False),
        (False, 10 * RAW_BACKLOG_HOLD, True, False),  # after the acquisition: catch up
        (True, 10 * RAW_BACKLOG_HOLD, False, False),  # a dead raw writer: never wait on it
    ],
)
def test_denoising_waits_only_for_a_live_raw_writer_while_acquiring(
    acquiring, backlog, alive, hold
):
    assert hold_for_raw(acquiring, backlog, alive) is hold


@pytest.mark.parametrize(("size", "keep"), [(1, 1), (3, 5), (15, 29)])
def test_a_preview_queue_keeps_one_set_and_the_next_one_growing(size, keep):
    assert preview_keep(size) == keep


@pytest.mark.parametrize(
    ("metadata", "index", "size", "key"),
    [
        ({}, {"t": 2}, 1, (("t", 2),)),
        ({"sim": {"set_size": 9}}, {"t": 1, "a": 2, "h": 0}, 9, (("t", 1),)),
        ({"sim": {"set_size": "x"}}, {"t": 0}, 1, (("t", 0),)),  # unreadable: single frames
        ({"sim": {"set_size": 0}}, {"t": 0, "c": 1}, 1, (("c", 1), ("t", 0))),
    ],
)
def test_set_tags_come_from_the_sim_metadata(metadata, index, size, key):
    tag = set_tag(useq.MDAEvent(index=index, metadata=metadata))
    assert tag == SetTag(size, key)


@pytest.mark.parametrize(
    ("wanted", "newest", "shown", "saved_upto", "since", "cost", "due"),
    [
        (True, 10, 5, 3, 1.0, 0.2, True),
        (False, 10, 5, 3, 1.0, 0.2, False),  # nobody watches
        (True, None, -1, -1, 1.0, 0.0, False),  # no frame yet
        (True, 10, 10, 3, 1.0, 0.2, False),  # the newest is shown already
        (True, 10, 5, 11, 1.0, 0.2, False),  # saving is past it: its pair is fresh
        (True, 10, 5, 3, 0.05, 0.0, False),  # not faster than the display
        (True, 10, 5, 3, 0.3, 0.5, False),  # at most half the worker's time
        (True, 10, 5, 3, 0.6, 0.5, True),
    ],
)
def test_the_preview_lane_runs_only_when_watched_and_due(
    wanted, newest, shown, saved_upto, since, cost, due
):
    assert preview_due(wanted, newest, shown, saved_upto, since, cost, 0.1) is due


@pytest.mark.parametrize(
    ("spec", "max_batch", "take"), [("aa", 4, 2), ("aaabbb", 4, 4), ("", 4, 0)]
)
def test_a_watched_run_may_split_sets_into_short_batches(spec, max_batch, take):
    assert complete_batch(_tags(spec), False, max_batch, split_sets=True) == take


def test_byte_rate_is_the_bytes_written_in_its_window():
    from sn2n_live.acquisition._stats import ByteRate

    rate = ByteRate(window_s=2.0)
    assert rate.mib_per_s(now=0.0) == 0.0
    for i in range(11):  # 1 MiB every 0.1 s for 1 s: 10 MiB/s
        rate.add(2**20, t=10.0 + 0.1 * i)
    assert abs(rate.mib_per_s(now=11.0) - 10.0) < 1e-6
    assert rate.mib_per_s(now=20.0) == 0.0  # nothing written in the last 2 s


def test_set_widefield_shows_only_complete_sets():
    from sn2n_live.acquisition._batching import SetTag, SetWidefield

    wf = SetWidefield()
    a, b = SetTag(3, (("t", 0),)), SetTag(3, (("t", 1),))
    wf.add(a, np.full((2, 2), 3, np.uint16))
    wf.add(a, np.full((2, 2), 6, np.uint16))
    assert wf.latest is None  # 2 of 3
    wf.add(b, np.full((2, 2), 9, np.uint16))  # another set: the first cannot complete
    wf.add(b, np.full((2, 2), 9, np.uint16))
    wf.add(b, np.full((2, 2), 12, np.uint16))
    np.testing.assert_array_equal(wf.latest, np.full((2, 2), 10, np.float32))
    wf.add(SetTag(1, ()), np.zeros((2, 2), np.uint16))  # outside SIM: ignored
    np.testing.assert_array_equal(wf.latest, np.full((2, 2), 10, np.float32))
