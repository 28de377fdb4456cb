"""sources.toml is hostile input: every mistake is one clear line naming file, source and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from astroingest import ConfigError
from astroingest._config import load_config
from astroingest._plugins import Host

Write = Callable[..., Path]


def error_of(path: Path, host: Host) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, host)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_design_shape_loads(write_toml: Write, astroingest_host: Host, tmp_path: Path) -> None:
    path = write_toml("""
        [store]
        raw   = "file://./astroingest-data/raw"
        cubes = "file://./astroingest-data/cubes"
        logs  = "file://./astroingest-data/logs"

        [defaults]
        concurrency = 16
        retries = 5
        min_quality = 0.95

        [sources.mirror]
        plugin = "http"
        urls = ["https://example.org/a.fits", "https://example.org/b.nc"]
        concurrency = 4
        rate = 2
        enabled = true
    """)
    config = load_config(path, astroingest_host)
    assert config.store.raw == (tmp_path / "astroingest-data/raw").as_uri()
    assert config.defaults.concurrency == 16
    assert config.sources["mirror"].type.name == "http"
    assert config.sources["mirror"].config.rate == 2.0
    assert config.quarantine_url.endswith("/astroingest-data/logs/quarantine")


def test_an_empty_file_gets_the_default_local_store(
    write_toml: Write, astroingest_host: Host, tmp_path: Path
) -> None:
    config = load_config(write_toml(""), astroingest_host)
    assert config.store.raw == (tmp_path / "astroingest-data" / "raw").as_uri()
    assert config.sources == {}


def test_toml_syntax_error_names_the_line(write_toml: Write, astroingest_host: Host) -> None:
    message = error_of(write_toml('[sources.a]\nplugin = "http"\nurls = [\n'), astroingest_host)
    assert message == "sources.toml: line 3: TOML syntax error: Invalid value at end of file"
    message = error_of(write_toml("[sources.a]\nplugin = http\n"), astroingest_host)
    assert message == "sources.toml: line 2: TOML syntax error: Invalid value"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[defaults]\nconcurrency = "16"',
            "sources.toml: [defaults] concurrency: Input should be a valid integer (line 2)",
        ),
        (
            "[defaults]\nconcurrency = 0",
            "[defaults] concurrency: Input should be greater than or equal to 1",
        ),
        (
            "[defaults]\nmin_quality = 1.5",
            "[defaults] min_quality: Input should be less than or equal to 1",
        ),
        ("[defaults]\nretries = true", "[defaults] retries: Input should be a valid integer"),
        ("[defaults]\nspeed = 3", "[defaults] speed: unknown key (line 2)"),
        (
            '[sources.a]\nplugin = "http"\nurls = ["https://x.org/a"]\nconcurrency = "4"',
            "[sources.a] concurrency: Input should be a valid integer (line 4)",
        ),
        ('[sources.a]\nplugin = "http"\nurls = "https://x.org/a"', "[sources.a] urls"),
        ('[sources.a]\nplugin = "http"\nurls = ["ftp://x.org/a"]', "[sources.a] urls"),
        ('[sources.a]\nplugin = "http"', "[sources.a]: give either urls"),
        (
            '[sources.a]\nplugin = "http"\nurls = ["https://x.org/a"]\ncolour = "red"',
            "[sources.a] colour: unknown key (line 4)",
        ),
        ('[sources.a]\nurls = ["https://x.org/a"]', "[sources.a] plugin: required"),
        (
            '[sources.a]\nplugin = "nasa.nope"',
            "[sources.a] plugin: unknown source type 'nasa.nope'",
        ),
        (
            '[sources."../etc"]\nplugin = "http"\nurls = ["https://x.org/a"]',
            "[sources.../etc]: source names are",
        ),
        (
            '[sources.Data]\nplugin = "http"\nurls = ["https://x.org/a"]\n[sources.data]\nplugin = "http"\nurls = ["https://x.org/b"]',
            "[sources.data]: collides with [sources.Data]",
        ),
        ('[store]\nraw = "file://./data/../../etc"', "[store] raw: '..' is not allowed"),
        ('[store]\nraw = "gopher://x/raw"', "[store] raw: unsupported URL"),
        ('[store]\nraw = "file://./x?y=1"', "[store] raw: store URLs take no query"),
        ('[store]\nendpoint_url = "127.0.0.1:9000"', "[store] endpoint_url: must be an http"),
        ('[hosts."eutils.ncbi.nlm.nih.gov"]\nrate = -1', "[hosts] eutils.ncbi.nlm.nih.gov.rate"),
        ("[mystery]\nx = 1", "[mystery]: unknown key"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(
    write_toml: Write, astroingest_host: Host, body: str, expected: str
) -> None:
    assert expected in error_of(write_toml(body), astroingest_host)


def test_missing_file(tmp_path: Path, astroingest_host: Host) -> None:
    message = error_of(tmp_path / "nope.toml", astroingest_host)
    assert "cannot read" in message


def test_env_interpolation_from_environment_and_dotenv(
    write_toml: Write, astroingest_host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ARCHIVE_TOKEN=from-dotenv-123\nHOST=dotenv.example.org\n")
    monkeypatch.setenv("HOST", "env.example.org")
    config = load_config(
        write_toml("""
            [sources.a]
            plugin = "http"
            urls = ["https://${HOST}/a.csv"]
            headers = { Authorization = "Bearer ${ARCHIVE_TOKEN}" }
        """),
        astroingest_host,
    )
    source = config.sources["a"].config
    assert source.urls == ["https://env.example.org/a.csv"]  # type: ignore[attr-defined]
    assert source.headers == {"Authorization": "Bearer from-dotenv-123"}  # type: ignore[attr-defined]
    assert "from-dotenv-123" in config.secrets


def test_undefined_variable_is_an_error(
    write_toml: Write, astroingest_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_XYZ", raising=False)
    message = error_of(
        write_toml('[sources.a]\nplugin = "http"\nurls = ["https://x.org/${NO_SUCH_TOKEN_XYZ}"]'),
        astroingest_host,
    )
    assert message.startswith(
        "sources.toml: [sources.a] urls.0: undefined variable ${NO_SUCH_TOKEN_XYZ}"
    )


def test_disabled_sources_may_name_unset_variables(
    write_toml: Write, astroingest_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_TOKEN_UNSET", raising=False)
    body = '[sources.a]\nplugin = "http"\nurls = ["https://x.org/${CDS_TOKEN_UNSET}"]\n'
    config = load_config(write_toml(body + "enabled = false\n"), astroingest_host)
    assert config.sources["a"].config.urls == ["https://x.org/${CDS_TOKEN_UNSET}"]  # type: ignore[attr-defined]
    assert "undefined variable ${CDS_TOKEN_UNSET}" in error_of(write_toml(body), astroingest_host)


def test_dollar_dollar_is_a_literal_dollar(write_toml: Write, astroingest_host: Host) -> None:
    config = load_config(
        write_toml('[sources.a]\nplugin = "http"\nurls = ["https://x.org/a?$$top=5"]'),
        astroingest_host,
    )
    assert config.sources["a"].config.urls == ["https://x.org/a?$top=5"]  # type: ignore[attr-defined]


def test_secret_valued_keys_are_redacted_even_when_literal(
    write_toml: Write, astroingest_host: Host
) -> None:
    config = load_config(
        write_toml(
            '[sources.a]\nplugin = "http"\nurls = ["https://x.org/a"]\nheaders = { Authorization = "Bearer literal-secret" }'
        ),
        astroingest_host,
    )
    assert "Bearer literal-secret" in config.secrets


def test_absolute_file_urls_are_kept(
    write_toml: Write, astroingest_host: Host, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere" / "raw"
    config = load_config(write_toml(f'[store]\nraw = "{target.as_uri()}"'), astroingest_host)
    assert config.store.raw == target.as_uri()


def test_endpoint_urls_named_like_secrets_are_not_secrets(
    write_toml: Write, astroingest_host: Host
) -> None:
    config = load_config(
        write_toml(
            '[sources.a]\nplugin = "copernicus.cdse"\ncollection = "SENTINEL-2"\nstart = "2024-01-01T00:00:00Z"\n'
            'username = "u"\npassword = "pw-secret-1"\ntoken_url = "https://id.example.org/token"\n'
        ),
        astroingest_host,
    )
    assert "pw-secret-1" in config.secrets
    assert "https://id.example.org/token" not in config.secrets


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (
            'raw = "file://./data"\nquarantine = "file://./data"',
            "[store] quarantine: must not be the raw store",
        ),
        (
            'raw = "file://./data"\nquarantine = "file://./data/q"',
            "[store] quarantine: must not be the raw store",
        ),
        (
            'raw = "file://./data/raw"\nlogs = "file://./data"',
            "[store] logs: must not be the raw store",
        ),
        ('raw = "file://data/raw"', "[store] raw: file URLs name a local path"),
    ],
)
def test_store_roles_do_not_overlap(
    write_toml: Write, astroingest_host: Host, store: str, expected: str
) -> None:
    assert expected in error_of(write_toml(f"[store]\n{store}\n"), astroingest_host)


def test_file_localhost_urls_are_absolute(
    write_toml: Write, astroingest_host: Host, tmp_path: Path
) -> None:
    config = load_config(
        write_toml(f'[store]\nraw = "file://localhost{tmp_path}/abs/raw"\n'), astroingest_host
    )
    assert config.store.raw == (tmp_path / "abs" / "raw").as_uri()


def test_unreadable_dotenv_is_one_line(
    write_toml: Write, astroingest_host: Host, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_bytes(b"TOKEN=\xff\xfe\n")
    assert "cannot read" in error_of(write_toml(""), astroingest_host)


def test_errors_naming_a_secret_are_scrubbed(
    write_toml: Write, astroingest_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_SECRET_X", "wJalrXUtnFEMI-K7MDENG")
    message = error_of(
        write_toml('[store]\nraw = "gopher://AKIA:${STORE_SECRET_X}@bucket/raw"\n'),
        astroingest_host,
    )
    assert "wJalrXUtnFEMI" not in message
    assert "***" in message
