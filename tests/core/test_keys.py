"""Remote names are untrusted: keys never escape their prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astroingest import UnsafeKeyError
from astroingest._keys import MAX_SEGMENT, sanitize_key
from astroingest.stores.local import LocalStore


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("a.fits", "a.fits"),
        ("dir/sub/b.nc", "dir/sub/b.nc"),
        ("../../etc/passwd", "etc/passwd"),
        ("/abs/path.csv", "abs/path.csv"),
        ("..\\..\\windows\\system.ini", "windows/system.ini"),
        (".hidden", "hidden"),
        ("a/./b/../c", "a/b/c"),
        ("sp ace&q=1;rm -rf", "sp_ace_q=1_rm_-rf"),
        ("..../x", "x"),
    ],
)
def test_sanitize(name: str, key: str) -> None:
    assert sanitize_key(name) == key


@pytest.mark.parametrize("name", ["", "/", "..", "../..", "./."])
def test_nothing_usable_is_an_error(name: str) -> None:
    with pytest.raises(UnsafeKeyError):
        sanitize_key(name)


def test_long_segments_stay_distinct() -> None:
    a, b = sanitize_key("x" * 300 + "a"), sanitize_key("x" * 300 + "b")
    assert a != b
    assert len(a) <= MAX_SEGMENT


@given(st.text(min_size=1, max_size=80))
def test_no_name_escapes_the_store(name: str) -> None:
    root = Path("/srv/astroingest/raw")
    store = LocalStore(root)
    try:
        path = store.path_for(name)
    except UnsafeKeyError:
        return
    assert path.is_relative_to(root)
    assert path != root
    assert ".." not in path.relative_to(root).parts
