"""The plugin manager and registry: real pluggy, real entry points of fake distributions."""

from __future__ import annotations

import inspect
import types

import pytest

from shrinkbench_core import hookspecs
from shrinkbench_core.errors import PluginError, UnknownComponentError
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.plugins import PluginSelection, make_plugin_manager
from shrinkbench_core.registry import Registry
from shrinkbench_core.specs import StrategySpec

GOOD_PLUGIN = """
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    return [StrategySpec(name="{name}", summary="test strategy", scope="global",
                         factory="shrinkbench_strategies.magnitude:GlobalMagWeight")]
"""


def registry(**selection) -> Registry:
    return Registry(make_plugin_manager(PluginSelection(**selection)))


def statuses(reg: Registry) -> dict[str, dict]:
    return {p["name"]: p for p in reg.plugins()}


def test_builtin_and_installed_plugins_load():
    reg = registry()
    plugins = statuses(reg)
    assert plugins["builtin"]["status"] == "ok"
    assert plugins["builtin"]["distribution"] == "shrinkbench-core"
    for name in ("shrinkbench-strategies", "shrinkbench-cifar", "shrinkbench-imagenet"):
        assert plugins[name]["status"] == "ok", plugins[name]
    assert reg.get("strategies", "GlobalMagWeight").plugin == "shrinkbench-strategies"
    assert reg.get("datasets", "digits").plugin == "builtin"


def test_provenance_is_filled_by_the_core(fake_dists):
    fake_dists.add("sb-good", "sb_good", GOOD_PLUGIN.format(name="MyStrategy"), version="2.5")
    spec = registry().get("strategies", "MyStrategy")
    assert (spec.plugin, spec.distribution, spec.version) == ("sb-good", "sb-good", "2.5")


def test_import_error_is_isolated(fake_dists, capsys):
    fake_dists.add("sb-broken", "sb_broken", "import not_a_module_anywhere\n")
    fake_dists.add("sb-good", "sb_good", GOOD_PLUGIN.format(name="MyStrategy"))
    reg = registry()
    plugins = statuses(reg)
    assert plugins["sb-broken"]["status"] == "error"
    assert "not_a_module_anywhere" in plugins["sb-broken"]["error"]
    assert reg.get("strategies", "MyStrategy")  # the other plugin still works
    warnings = [line for line in capsys.readouterr().err.splitlines() if "sb-broken" in line]
    assert len(warnings) == 1 and "failed to load" in warnings[0]


def test_hook_raising_breaks_only_its_plugin(fake_dists):
    fake_dists.add(
        "sb-raises",
        "sb_raises",
        """
from shrinkbench_core.hookspecs import hookimpl

@hookimpl
def shrinkbench_register_strategies():
    raise RuntimeError("boom in hook")
""",
    )
    reg = registry()
    assert "boom in hook" in statuses(reg)["sb-raises"]["error"]
    assert reg.get("strategies", "GlobalMagWeight")
    with pytest.raises(PluginError, match="boom in hook"):
        reg.get("strategies", "sb-raises:Anything")


def test_invalid_spec_names_plugin_and_field(fake_dists):
    fake_dists.add(
        "sb-invalid",
        "sb_invalid",
        """
from shrinkbench_core.hookspecs import hookimpl

@hookimpl
def shrinkbench_register_strategies():
    return [{"name": "Bad", "summary": "x", "factory": "no colon here", "scope": "global"}]
""",
    )
    error = statuses(registry())["sb-invalid"]["error"]
    assert "factory" in error and "Bad" in error


def test_unknown_field_in_spec_is_rejected(fake_dists):
    fake_dists.add(
        "sb-extra",
        "sb_extra",
        """
from shrinkbench_core.hookspecs import hookimpl

@hookimpl
def shrinkbench_register_models():
    return [{"name": "m", "summary": "x", "factory": "a:b", "colour": "red"}]
""",
    )
    error = statuses(registry())["sb-extra"]["error"]
    assert "colour" in error


def test_duplicate_name_inside_one_plugin_is_an_error(fake_dists):
    fake_dists.add(
        "sb-dup",
        "sb_dup",
        """
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    spec = dict(name="Twice", summary="x", scope="global", factory="a:b")
    return [StrategySpec(**spec), StrategySpec(**spec)]
""",
    )
    error = statuses(registry())["sb-dup"]["error"]
    assert "more than once" in error and "Twice" in error


def test_clash_across_plugins_keeps_both(fake_dists):
    fake_dists.add("sb-one", "sb_one", GOOD_PLUGIN.format(name="Same"))
    fake_dists.add("sb-two", "sb_two", GOOD_PLUGIN.format(name="Same"))
    reg = registry()
    assert {"sb-one:Same", "sb-two:Same"} <= set(reg.names("strategies"))
    with pytest.raises(UnknownComponentError, match="ambiguous.*sb-one:Same.*sb-two:Same"):
        reg.get("strategies", "Same")
    assert reg.get("strategies", "sb-two:Same").plugin == "sb-two"


def test_disable_and_load_only(fake_dists):
    fake_dists.add("sb-good", "sb_good", GOOD_PLUGIN.format(name="MyStrategy"))
    reg = registry(disabled={"sb-good"})
    assert statuses(reg)["sb-good"]["status"] == "disabled"
    with pytest.raises(UnknownComponentError):
        reg.get("strategies", "MyStrategy")
    only = registry(load_only={"sb-good"})
    assert only.get("strategies", "MyStrategy")
    assert "GlobalMagWeight" not in only.names("strategies")  # strategies plugin not loaded
    assert only.get("datasets", "digits")  # the core's own plugin always is
    nothing = registry(load_only=set())
    assert nothing.names("strategies") == []


def test_environment_variables_select_plugins():
    selection = PluginSelection.from_environment(
        {
            "SHRINKBENCH_LOAD_PLUGINS": "a, b",
            "SHRINKBENCH_DISABLE_PLUGINS": "b",
            "SHRINKBENCH_STRICT_PLUGINS": "1",
        }
    )
    assert selection.strict and selection.load_only == {"a", "b"} and selection.disabled == {"b"}
    assert selection.allows("a") and not selection.allows("b") and not selection.allows("c")
    assert PluginSelection.from_environment({"SHRINKBENCH_LOAD_PLUGINS": ""}).load_only == set()
    assert PluginSelection.from_environment({}).load_only is None


def test_strict_mode_turns_load_errors_into_failures(fake_dists):
    fake_dists.add("sb-broken", "sb_broken", "raise ImportError('nope')\n")
    with pytest.raises(PluginError, match="sb-broken.*nope"):
        registry(strict=True)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownComponentError, match="Did you mean: GlobalMagWeight"):
        registry().get("strategies", "GlobalMagWieght")


def test_in_memory_plugin_register_and_unregister():
    plugin = types.SimpleNamespace()

    @hookimpl
    def shrinkbench_register_strategies():
        return [StrategySpec(name="InMemory", summary="x", scope="layerwise", factory="m:a")]

    plugin.shrinkbench_register_strategies = shrinkbench_register_strategies
    manager = make_plugin_manager(PluginSelection())
    manager.register_plugin(plugin, "in-memory")
    try:
        assert Registry(manager).get("strategies", "InMemory").plugin == "in-memory"
    finally:
        manager.unregister(name="in-memory")
    with pytest.raises(UnknownComponentError):
        Registry(manager).get("strategies", "InMemory")


HOOKS = [
    name
    for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("shrinkbench_")
]


REGISTRATION_HOOKS = [name for name in HOOKS if name.startswith("shrinkbench_register_")]


def test_every_hook_is_prefixed_and_documented():
    from shrinkbench_core.lifecycle import LIFECYCLE_HOOKS

    assert set(REGISTRATION_HOOKS) == {
        "shrinkbench_register_strategies",
        "shrinkbench_register_datasets",
        "shrinkbench_register_models",
        "shrinkbench_register_metrics",
        "shrinkbench_register_schedules",
        "shrinkbench_register_trackers",
    }
    # the run events, dispatched by RunEvents (exercised in tests/test_run_events.py)
    assert set(HOOKS) - set(REGISTRATION_HOOKS) == set(LIFECYCLE_HOOKS)
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc, name
        if name in LIFECYCLE_HOOKS:  # arguments and when; nothing to return
            assert len(doc) > 150, name
        else:
            assert len(doc) > 200 and "Return" in doc, name


@pytest.mark.parametrize("hook", REGISTRATION_HOOKS)
def test_every_hook_is_exercised(hook):
    kind = hook.removeprefix("shrinkbench_register_")
    facts = {
        "strategies": {"scope": "global"},
        "datasets": {"input_shape": [3, 4, 4], "num_classes": 3},
        "models": {},
        "metrics": {"unit": "count", "higher_is_better": False},
        "schedules": {"during_training": True},
        "trackers": {"requires": ["json"]},
    }[kind]
    plugin = types.SimpleNamespace()
    setattr(
        plugin,
        hook,
        hookimpl(
            lambda: [
                {"name": f"probe_{kind}", "summary": "probe", "factory": "pkg.mod:thing", **facts}
            ]
        ),
    )
    reg = Registry(make_plugin_manager(PluginSelection(), extra_plugins=[("probe", plugin)]))
    spec = reg.get(kind, f"probe_{kind}")
    assert spec.plugin == "probe" and spec.factory == "pkg.mod:thing"
    with pytest.raises(Exception):  # noqa: B017 - specs are frozen
        spec.name = "changed"
