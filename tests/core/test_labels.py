import numpy as np

from activeseg.core.labels import LabelState
from activeseg.core.partition import Region


def test_cost_counts_newly_revealed_pixels_only():
    state = LabelState.empty({"a": (8, 8)})
    first = Region("a", 0, 0, 4, 4)
    overlap = Region("a", 2, 2, 6, 6)
    assert state.reveal(first, np.ones((4, 4), np.uint8), 0, "test") == 16
    assert state.new_pixels(overlap) == 12  # 16 minus the 2x2 already known
    assert state.reveal(overlap, np.zeros((4, 4), np.uint8), 1, "test") == 12
    assert state.revealed_pixels() == 28
    # known labels are never overwritten by a later, overlapping region
    assert state.labels["a"][2:4, 2:4].tolist() == [[1, 1], [1, 1]]


def test_padded_region_costs_only_in_image_pixels():
    state = LabelState.empty({"a": (6, 6)})
    padded = Region("a", 4, 4, 8, 8)
    assert state.new_pixels(padded) == 4
    assert state.reveal(padded, np.ones((2, 2), np.uint8), 0, "test") == 4


def test_pseudo_labels_cost_nothing_and_yield_to_human_labels():
    state = LabelState.empty({"a": (4, 4)})
    region = Region("a", 0, 0, 4, 4)
    assert state.set_pseudo(region, np.ones((4, 4), np.uint8), origin="model-1") == 16
    assert state.revealed_pixels() == 0
    assert state.pseudo_regions[region.id]["origin"] == "model-1"
    state.reveal(Region("a", 0, 0, 2, 4), np.zeros((2, 4), np.uint8), 1, "oracle")
    assert state.pseudo_known["a"].sum() == 8 and not state.pseudo_known["a"][:2].any()


def test_save_and_load_round_trip(tmp_path):
    state = LabelState.empty({"a": (5, 7), "b": (3, 3)})
    state.reveal(Region("a", 1, 1, 4, 5), np.full((3, 4), 1, np.uint8), 0, "test")
    state.set_pseudo(Region("b", 0, 0, 3, 3), np.ones((3, 3), np.uint8), "m")
    state.save(tmp_path)
    back = LabelState.load(tmp_path)
    for stem in ("a", "b"):
        assert np.array_equal(back.known[stem], state.known[stem])
        assert np.array_equal(back.labels[stem], state.labels[stem])
        assert np.array_equal(back.pseudo_known[stem], state.pseudo_known[stem])
    assert back.history == state.history and back.pseudo_regions == state.pseudo_regions
