"""The example plugin, tested the way a plugin author would: with astroingest.testing."""

from collections.abc import Callable

import astroingest_example
from astroingest._archive_server import ArchiveServer
from astroingest._report import RunReport


def test_listing_fetches_every_named_file(
    local_archive: ArchiveServer,
    register_plugin: Callable[..., str],
    astroingest_run: Callable[..., RunReport],
) -> None:
    register_plugin(astroingest_example, "example")
    local_archive.add("survey/a.csv", b"ra,dec\n1.0,2.0\n", content_type="text/csv")
    local_archive.add("survey/deep/b.csv", b"ra,dec\n3.0,4.0\n", content_type="text/csv")
    listing = local_archive.add(
        "survey/FILES.txt",
        b"# survey files\na.csv\ndeep/b.csv  # the deep field\n",
        content_type="text/plain",
    )

    report = astroingest_run(f"""
        [sources.survey]
        plugin = "example.listing"
        listing = "{listing}"
    """)

    assert report.status == "ok"
    assert sorted(a.key for a in report.assets if a.status == "stored") == ["a.csv", "deep/b.csv"]


def test_listing_must_be_a_url(
    register_plugin: Callable[..., str], astroingest_run: Callable[..., RunReport]
) -> None:
    import pytest

    from astroingest import ConfigError

    register_plugin(astroingest_example, "example")
    with pytest.raises(ConfigError, match=r"\[sources.survey\] listing"):
        astroingest_run("""
            [sources.survey]
            plugin = "example.listing"
            listing = "ftp://nope"
        """)
