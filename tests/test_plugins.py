"""Plugins: a third-party space is one class plus one `prunenas.spaces` entry-point line (GUIDE section 2).

The distribution in tests/plugin_fixture/ is "installed" by writing its dist-info (METADATA and
entry_points.txt, from the fixture's pyproject.toml) and module into tmp_path and putting that on sys.path.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from prunenas import plugins
from prunenas.cli import main
from prunenas.cost import analytic_macs_by_layer, fvcore_macs_by_layer, genotype_cost
from prunenas.errors import GenotypeError
from prunenas.evaluators import Evaluator
from prunenas.genotype import Genotype
from prunenas.metrics import Metric
from prunenas.proposers.base import Proposer
from prunenas.spaces import Space, get_space, registry, space_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURE = Path(__file__).parent / "plugin_fixture"
MODULE = "tinyspace_plugin"
BUILTIN_FAMILIES = {"cifar_resnet", "cifar_resnet_stages", "cifar_vgg", "density"}


def fixture_entry_points() -> dict[str, str]:
    with (FIXTURE / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]["entry-points"]["prunenas.spaces"]


def install_dist(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """Write NAME-0.1.dist-info with METADATA and entry_points.txt, as pip would."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[prunenas.spaces]\n{lines}", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path/site on sys.path, registry caches cleared before and after."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("PRUNENAS_SPACES_PATH", raising=False)
    sys.modules.pop(MODULE, None)
    registry.clear_cache()
    yield site
    registry.clear_cache()
    sys.modules.pop(MODULE, None)


@pytest.fixture
def tiny(site: Path) -> Path:
    """The fixture distribution installed into `site`."""
    shutil.copy(FIXTURE / f"{MODULE}.py", site / f"{MODULE}.py")
    install_dist(site, MODULE, fixture_entry_points())
    return site


def test_fixture_is_one_class_and_one_entry_point_line() -> None:
    assert fixture_entry_points() == {"tiny": "tinyspace_plugin:TinySpace"}
    text = (FIXTURE / f"{MODULE}.py").read_text(encoding="utf-8")
    assert text.count("\nclass ") == 1


def test_space_names_include_the_plugin(tiny: Path) -> None:
    names = space_names()
    assert "tiny" in names
    assert "resnet56_channels" in names
    fams = registry.families()
    assert set(fams) >= BUILTIN_FAMILIES
    cls = fams["tiny"]
    assert issubclass(cls, Space)
    assert cls.family == "tiny"
    assert Path(sys.modules[MODULE].__file__).parent == tiny  # loaded from the installed copy


def test_get_space_builds_and_counts_macs(tiny: Path) -> None:
    space = get_space("tiny")
    assert space.name == "tiny"
    assert (space.family, space.kind) == ("tiny", "channels")
    assert space.config == {"width": 8}
    assert space.source == "entry point tiny"
    assert space.description == "A tiny two-conv network for plugin tests."
    assert [(g.name, g.low, g.high, g.reference) for g in space.genes] == [("conv1", 1, 8, 8), ("conv2", 1, 8, 8)]

    g = space.make([4, 6], proposer="test")
    model = space.build(g)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    cost = genotype_cost(space, g)
    assert cost.macs == 32 * 32 * 4 * 3 * 9 + 32 * 32 * 6 * 4 * 9 + 6 * 10
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.reference_macs == 32 * 32 * 8 * 3 * 9 + 32 * 32 * 8 * 8 * 9 + 8 * 10
    assert fvcore_macs_by_layer(model, space.input_shape) == analytic_macs_by_layer(model, space.input_shape)
    with pytest.raises(GenotypeError, match="'conv2' = 9"):
        space.make([4, 9])


def test_plugin_overrides(tiny: Path) -> None:
    wide = get_space("tiny", overrides={"width": 16})
    assert wide.config == {"width": 16}
    assert wide.gene("conv1").high == 16
    assert get_space("tiny").gene("conv1").high == 8


def test_cli_lists_and_costs_the_plugin(tiny: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    capsys.readouterr()
    assert main(["spaces"]) == 0
    out, err = capsys.readouterr()
    assert any(line.split()[:3] == ["tiny", "tiny", "channels"] for line in out.splitlines() if line.strip())
    assert "warning" not in err

    assert main(["spaces", "--json"]) == 0
    rows = {r["space"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny"]["family"] == "tiny"
    assert rows["tiny"]["genes"] == 2
    assert rows["tiny"]["reference_macs"] == 32 * 32 * 8 * 3 * 9 + 32 * 32 * 8 * 8 * 9 + 8 * 10
    assert "resnet56_channels" in rows

    assert main(["spaces", "show", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in info["genes"]] == ["conv1", "conv2"]

    path = tmp_path / "tiny_g.json"
    Genotype("tiny", {"conv1": 2, "conv2": 3}, {"proposer": "me"}).save(path)
    assert main(["cost", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == 32 * 32 * 2 * 3 * 9 + 32 * 32 * 3 * 2 * 9 + 3 * 10


def test_toml_naming_the_plugin_family(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny_narrow.toml"
    path.write_text('family = "tiny"\ndescription = "narrow tiny"\n[model]\nwidth = 4\n[recipe]\nepochs = 3\n')
    space = get_space(str(path))
    assert space.name == "tiny_narrow"
    assert isinstance(space, registry.families()["tiny"])
    assert space.description == "narrow tiny"
    assert space.recipe == {"epochs": 3}
    assert [g.high for g in space.genes] == [4, 4]
    assert genotype_cost(space, space.reference()).macs == 32 * 32 * 4 * 3 * 9 + 32 * 32 * 4 * 4 * 9 + 4 * 10


def test_broken_plugins_warn_but_do_not_break(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(FIXTURE / f"{MODULE}.py", site / f"{MODULE}.py")
    install_dist(site, MODULE, fixture_entry_points())
    install_dist(
        site,
        "brokenspace_plugin",
        {
            "broken": "no_such_module_for_prunenas_tests:Space",
            "notaspace": "json:dumps",
        },
    )
    capsys.readouterr()
    names = space_names()
    err = capsys.readouterr().err
    assert "resnet56_channels" in names
    assert "tiny" in names  # a good plugin still loads beside a broken one
    assert "broken" not in names
    assert "notaspace" not in names
    assert "prunenas: warning: cannot load space plugin 'broken'" in err
    assert "no_such_module_for_prunenas_tests" in err
    assert "prunenas: warning: space plugin 'notaspace' is not a Space subclass" in err
    assert "Traceback" not in err
    assert get_space("resnet20_channels").build() is not None


# -- the package's own plugins: registered once, in plugins.BUILTINS -------------------------------------
PLUGIN_GROUPS = (plugins.SPACES, plugins.PROPOSERS, plugins.METRICS, plugins.EVALUATORS)


@pytest.mark.parametrize("group", PLUGIN_GROUPS)
def test_every_builtin_reference_imports(group: str) -> None:
    base = {plugins.SPACES: Space, plugins.PROPOSERS: Proposer, plugins.METRICS: Metric, plugins.EVALUATORS: Evaluator}[
        group
    ]
    for name, ref in plugins.BUILTINS[group].items():
        obj = plugins.load_ref(ref)
        assert isinstance(obj, type) and issubclass(obj, base), f"{name} = {ref} is not a {base.__name__} subclass"
        assert f"{obj.__module__}:{obj.__qualname__}" == ref


def test_builtins_are_what_their_labels_say() -> None:
    """A space family's label is its `family` (what TOML files name), a metric's its `name`; proposers are told
    apart by (name, kind), so no two built-ins may share both."""
    for name, ref in plugins.BUILTINS[plugins.SPACES].items():
        assert plugins.load_ref(ref).family == name
    for group in (plugins.METRICS, plugins.EVALUATORS):
        for name, ref in plugins.BUILTINS[group].items():
            assert plugins.load_ref(ref).name == name
    keys = [(cls.name, cls.kind) for cls in map(plugins.load_ref, plugins.BUILTINS[plugins.PROPOSERS].values())]
    assert all(name for name, _ in keys) and len(set(keys)) == len(keys)
    assert set(registry.families()) >= set(plugins.BUILTINS[plugins.SPACES])


def test_pyproject_registers_no_builtin() -> None:
    """BUILTINS is the one registry of the built-ins: the package's own pyproject.toml lists none of them."""
    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as fh:
        declared = tomllib.load(fh)["project"].get("entry-points", {})
    refs = [ref for group in PLUGIN_GROUPS for ref in declared.get(group, {}).values()]
    assert not [ref for ref in refs if ref.startswith("prunenas.")]


def test_a_third_party_entry_point_replaces_a_builtin_of_its_name(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURE / f"{MODULE}.py", site / f"{MODULE}.py")
    install_dist(site, MODULE, {"cifar_vgg": "tinyspace_plugin:TinySpace"})
    fams = registry.families()
    assert fams["cifar_vgg"] is sys.modules[MODULE].TinySpace
    assert fams["cifar_resnet"] is plugins.load_ref(plugins.BUILTINS[plugins.SPACES]["cifar_resnet"])
    assert "warning" not in capsys.readouterr().err


def test_entry_points_of_prunenas_itself_are_not_read(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The metadata of an install made when pyproject.toml still listed the built-ins (here: one that no longer
    imports) is not read: BUILTINS decides what is built in."""
    install_dist(site, "prunenas", {"stale": "prunenas.no_such_module:Gone"})
    assert [ep.name for ep in entry_points(group=plugins.SPACES) if ep.dist and ep.dist.name == "prunenas"]
    names = space_names()
    assert "stale" not in registry.families()
    assert "resnet56_channels" in names
    assert "warning" not in capsys.readouterr().err


METRIC_PLUGIN = '''
"""A third-party metric: one class plus one entry-point line."""
from prunenas.metrics import Metric, MetricContext


class Channels(Metric):
    name = "channels"
    direction = "minimize"
    unit = "channels"
    label = "output channels of all convolutions"

    def measure(self, ctx: MetricContext) -> float:
        model = ctx.space.build(ctx.genotype, num_classes=ctx.num_classes)
        return float(sum(m.out_channels for m in model.modules() if hasattr(m, "out_channels")))
'''


def test_metric_plugin_is_an_objective_and_a_limit(site: Path, tmp_path: Path, tiny_toml: Path) -> None:
    """A metric plugin (one class, one entry-point line) becomes a search objective, a limit, a column."""
    from prunenas import metrics
    from prunenas.data import load_dataset
    from prunenas.search import SearchConfig, run_search

    (site / "channels_metric.py").write_text(METRIC_PLUGIN, encoding="utf-8")
    dist = site / "channels_metric-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: channels_metric\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[prunenas.metrics]\nchannels = channels_metric:Channels\n")
    metrics.clear_cache()
    try:
        assert "channels" in metrics.metric_names()
        space = get_space(str(tiny_toml))
        config = SearchConfig(
            space=space.name, data={"dataset": "digits"}, run={"quiet": True},
            search={
                "study": "m", "out": str(tmp_path / "m"), "final": False, "budget": "smoke", "trials": 3,
                "proxy_epochs": 1, "seed_targets": (0.5,), "top_k": 1, "proposers": ("uniform",),
                "objectives": ("val_acc", "channels"), "max": ("channels=0.9x",),
            },
        )  # fmt: skip
        data = load_dataset("digits", seed=0, train_subset=64, val_size=32)
        outcome = run_search(config, space, data, log=lambda _m: None)
        assert outcome.study is not None and outcome.study.metric_names == ["val_acc", "channels"]
        header = (tmp_path / "m" / "trials.csv").read_text().splitlines()[0].split(",")
        assert "channels" in header and "channels_ratio" in header
        rows = json.loads((tmp_path / "m" / "trials.json").read_text())
        for r in rows:
            assert r["infeasible"] == (r["channels_ratio"] > 0.9)
    finally:
        metrics.clear_cache()
