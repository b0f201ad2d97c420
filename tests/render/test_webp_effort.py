"""The WebP effort a render node picks from the number of encodes in flight."""

from __future__ import annotations

import pytest

from daemons.render.imaging.webp_effort import FAST_METHOD, WebpEffort


def test_the_configured_method_while_the_node_keeps_up_then_fast_until_it_drains():
    effort = WebpEffort(method=2, busy_above=2)
    with effort.slot() as first, effort.slot() as second:
        assert (first, second) == (2, 2)
        with effort.slot() as third:
            assert third == FAST_METHOD
    with effort.slot() as calm:
        assert calm == 2
    assert effort.fast_encodes == 1


def test_zero_never_adapts_and_a_failed_encode_frees_its_slot():
    never = WebpEffort(method=4, busy_above=0)
    with never.slot(), never.slot(), never.slot() as method:
        assert method == 4
    effort = WebpEffort(method=2, busy_above=1)
    with pytest.raises(RuntimeError), effort.slot():
        raise RuntimeError("encoder failed")
    with effort.slot() as method:
        assert method == 2


def test_a_configured_method_below_the_fast_one_is_kept():
    effort = WebpEffort(method=0, busy_above=1)
    with effort.slot(), effort.slot() as method:
        assert method == 0
