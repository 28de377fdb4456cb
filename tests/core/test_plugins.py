"""The plugin host: built-ins, conflicts, broken plugins, and real entry-point discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from astroingest import Asset, PlanContext, PluginConflictError, SourceConfig, SourceType, hookimpl
from astroingest._plugins import Host
from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "astroingest-example-plugin"


async def _no_assets(config: SourceConfig, ctx: PlanContext) -> AsyncIterator[Asset]:
    for _ in ():
        yield _


class ClashingPlugin:
    @hookimpl
    def astroingest_source_types(self) -> list[SourceType[Any]]:
        return [SourceType("http", SourceConfig, _no_assets)]


class BrokenHookPlugin:
    @hookimpl
    def astroingest_source_types(self) -> list[SourceType[Any]]:
        raise RuntimeError("boom")


def test_builtins_are_ordinary_plugins(astroingest_host: Host) -> None:
    assert {"http", "files"} <= set(astroingest_host.source_types())
    assert "file" in astroingest_host.stores()
    assert {"csv", "fits", "votable"} <= set(astroingest_host.validators())
    assert any(limit.host == "eutils.ncbi.nlm.nih.gov" for limit in astroingest_host.host_limits())
    assert all(info.builtin for info in astroingest_host.infos.values())


def test_conflicting_names_fail_naming_both(
    astroingest_host: Host, register_plugin: Callable[..., str]
) -> None:
    register_plugin(ClashingPlugin(), "clash")
    with pytest.raises(PluginConflictError) as info:
        astroingest_host.source_types()
    message = str(info.value)
    assert "source type 'http' is registered twice" in message
    assert "astroingest_plugins.http" in message and "'clash'" in message


def test_a_plugin_whose_hook_raises_is_reported_and_skipped(
    astroingest_host: Host, register_plugin: Callable[..., str]
) -> None:
    name = register_plugin(BrokenHookPlugin(), "broken")
    astroingest_host.infos[name] = astroingest_host.infos[name].__class__(
        name, "broken-dist", "1.0", False
    )
    types = astroingest_host.source_types()
    assert "http" in types
    assert [b.name for b in astroingest_host.broken] == ["broken"]
    assert astroingest_host.pm.get_plugin("broken") is None


def test_register_plugin_fixture_unregisters_after_the_test(astroingest_host: Host) -> None:
    assert astroingest_host.pm.get_plugin("clash") is None


def test_hookspec_docstrings_carry_a_complete_example() -> None:
    from astroingest import hookspecs

    hooks = [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("astroingest_")]
    assert len(hooks) >= 4
    for hook in hooks:
        doc = textwrap.dedent(hook.__doc__.split("Example::", 1)[1])
        compile(doc, hook.__name__, "exec")  # the example is valid Python
        assert "@astroingest.hookimpl" in doc and f"def {hook.__name__}" in doc


# --- real entry points: distributions installed with pip into a directory on PYTHONPATH ---


def _pip_target(project: Path, target: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return target


def _make_project(root: Path, dist: str, module: str, body: str) -> Path:
    project = root / dist
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(textwrap.dedent(body))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [project]
        name = "{dist}"
        version = "2.0.1"
        [project.entry-points.astroingest]
        {module} = "{module}"
        [tool.hatch.build.targets.wheel]
        packages = ["{module}"]
    """)
    )
    return project


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dists")
    broken = _make_project(
        root,
        "astroingest-broken",
        "broken_plugin",
        "raise ImportError('missing dependency: libfoo')\n",
    )
    clash = _make_project(
        root,
        "astroingest-clash",
        "clash_plugin",
        """
        from astroingest import SourceConfig, SourceType, hookimpl
        async def plan(config, ctx):
            return
            yield
        @hookimpl
        def astroingest_source_types():
            return [SourceType("example.listing", SourceConfig, plan)]
    """,
    )
    return {
        "example": _pip_target(EXAMPLE, root / "site-example"),
        "broken": _pip_target(broken, root / "site-broken"),
        "clash": _pip_target(clash, root / "site-clash"),
    }


def _env(*paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ASTROINGEST_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    env.update(extra)
    return env


def _listing(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_entry_point_plugin_is_discovered(installed: dict[str, Path]) -> None:
    listing = _listing(run_cli(["plugins", "--json"], env=_env(installed["example"])))
    [example] = [p for p in listing["plugins"] if p["name"] == "example"]
    assert example["distribution"] == "astroingest-example"
    assert example["version"] == "0.1.0"
    assert example["source_types"] == ["example.listing"]
    assert example["hooks"] == ["astroingest_source_types"]
    assert example["builtin"] is False


@pytest.mark.parametrize("how", ["env", "flag"])
def test_plugins_can_be_blocked(installed: dict[str, Path], how: str) -> None:
    if how == "env":
        result = run_cli(
            ["plugins", "--json"],
            env=_env(installed["example"], ASTROINGEST_DISABLE_PLUGINS="example"),
        )
    else:
        result = run_cli(["plugins", "--json", "--no-plugins"], env=_env(installed["example"]))
    names = [p["name"] for p in _listing(result)["plugins"]]
    assert "example" not in names and "astroingest_plugins.http" in names


def test_broken_plugin_is_reported_and_skipped(installed: dict[str, Path], tmp_path: Path) -> None:
    env = _env(installed["example"], installed["broken"])
    listing = _listing(run_cli(["plugins", "--json"], env=env))
    assert listing["broken"] == [
        {
            "name": "broken_plugin",
            "distribution": "astroingest-broken",
            "error": "ImportError: missing dependency: libfoo",
        }
    ]
    assert "example" in [p["name"] for p in listing["plugins"]]
    (tmp_path / "sources.toml").write_text(
        '[sources.a]\nplugin = "example.listing"\nlisting = "https://x.org/l.txt"\n'
    )
    checked = run_cli(["check", "--sources", str(tmp_path / "sources.toml")], env=env)
    assert checked.returncode == 0, checked.stderr
    assert "skipping broken plugin 'broken_plugin' from astroingest-broken" in checked.stderr


def test_conflict_between_distributions_names_both(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "sources.toml").write_text("")
    result = run_cli(
        ["check", "--sources", str(tmp_path / "sources.toml")],
        env=_env(installed["example"], installed["clash"]),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "example.listing" in lines[0]
    assert "astroingest-example 0.1.0" in lines[0] and "astroingest-clash 2.0.1" in lines[0]
