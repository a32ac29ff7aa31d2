"""The user's code behind one guard (sys.exit, sys.argv, exceptions, prints), data-dependent forwards refused,
the work of deriving a traced space bounded, and derived traced spaces cached on disk."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import prunenas.surgery
from prunenas.cli import main
from prunenas.cost import genotype_cost
from prunenas.errors import PrunenasError, SpaceError
from prunenas.spaces import get_space
from prunenas.spaces.registry import clear_cache

FACTORIES = Path(__file__).resolve().parent / "factories.py"

# A small CNN; each test writes it to a file of its own with the user code it tries.
NET = """
import sys
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def net(num_classes=10):
    return Net(num_classes)
"""

# A CIFAR ShuffleNetV2 as third-party model zoos write it: channel split, concatenation and channel shuffle
# by view/permute/reshape. Torch-Pruning's walk of its groups grows with every block (13k entries in one
# group at two blocks per stage, without end at the zoo's 3/7/3).
SHUFFLENET = """
import torch
import torch.nn.functional as F
from torch import nn


def shuffle(x, groups=2):
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class Basic(nn.Module):
    def __init__(self, c):
        super().__init__()
        c //= 2
        self.conv1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        c = x.size(1) // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return shuffle(torch.cat([x1, out], 1))


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin)
        self.conv2, self.bn2 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = nn.Conv2d(mid, mid, 1, bias=False), nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10, widths=(16, 32, 64), blocks=2):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24)
        layers, cin = [], 24
        for cout in widths:
            layers += [Down(cin, cout)] + [Basic(cout) for _ in range(blocks)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.conv2, self.bn2 = nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128)
        self.linear = nn.Linear(128, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def shufflenet(num_classes=10):
    return ShuffleNetV2(num_classes)
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A derived-space cache of this test's own, and no space remembered from another test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(folder))
    monkeypatch.delenv("PRUNENAS_MAX_GROUP_ENTRIES", raising=False)
    clear_cache()
    yield folder
    clear_cache()


def factory(tmp_path: Path, extra: str = "", name: str = "user_net.py", base: str = NET) -> Path:
    path = tmp_path / name
    path.write_text(base + extra)
    return path


def propose(space: str, *extra: str) -> list[str]:
    return ["propose", "--space", space, "--proposer", "uniform", "--ratio", "0.5", *extra]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], flag: str = "--space") -> str:
    """Run the CLI and check the bad-input contract: exit 2, one line on stderr naming `flag`, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("prunenas: error: "), err
    assert "Traceback" not in err and flag in err, err
    return err


# -- cause 3: the user's code runs behind one guard -------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("\nsys.exit(0)\n", "importing"),  # a script that exits at import: was exit 0, silently
        ("\nraise SystemExit('no GPU here')\n", "importing"),
        ("\ndef bye(num_classes=10):\n    sys.exit(3)\n", "calling 'bye'"),
    ],
    ids=["exit-0-at-import", "exit-message-at-import", "exit-in-factory"],
)
def test_sys_exit_in_user_code_is_one_line(tmp_path, capsys, extra, said):
    path = factory(tmp_path, extra)
    fn = "bye" if "def bye" in extra else "net"
    err = one_line_error(capsys, propose(f"{path}:{fn}@32"))
    assert "called sys.exit(" in err and said in err and "__main__" in err


def test_sys_exit_in_the_forward_is_one_line(tmp_path, capsys):
    body = NET.replace("        return self.fc(", "        if not torch.jit.is_scripting():\n            sys.exit(5)\n"
                       "        return self.fc(")  # fmt: skip
    path = factory(tmp_path, base=body)
    err = one_line_error(capsys, propose(f"{path}:net@32"))
    assert "sys.exit(5)" in err


def test_a_module_that_parses_the_command_line_at_import_sees_a_clean_argv(tmp_path, capsys):
    parses = "\nimport argparse\n_p = argparse.ArgumentParser()\n_p.add_argument('--depth', type=int, default=2)\n"
    parses += "ARGS = _p.parse_args()\nSEEN = list(sys.argv)\n"
    path = factory(tmp_path, parses)
    before = list(sys.argv)
    code = main(propose(f"{path}:net@32", "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "usage:" not in captured.err and "unrecognized arguments" not in captured.err
    assert sys.argv == before  # restored
    loaded = [m for m in sys.modules.values() if getattr(m, "__file__", None) == str(path)]
    assert loaded and [str(path)] == loaded[0].SEEN  # it saw only its own file, none of prunenas's flags


def test_a_module_whose_command_line_parsing_fails_is_one_line_not_its_usage(tmp_path, capsys):
    parses = "\nimport argparse\n_p = argparse.ArgumentParser()\n_p.add_argument('--data', required=True)\n"
    parses += "ARGS = _p.parse_args()\n"
    path = factory(tmp_path, parses)
    err = one_line_error(capsys, propose(f"{path}:net@32"))
    assert "sys.exit(2)" in err and "the following arguments are required: --data" in err
    assert "usage:" not in err.split("after printing", 1)[0]


def test_what_user_code_prints_never_reaches_stdout(tmp_path, capsys):
    noisy = NET.replace("    return Net(num_classes)", "    print('building my net')\n    return Net(num_classes)")
    path = factory(tmp_path, "\nprint('imported my module')\n", base=noisy)
    code = main(propose(f"{path}:net@32", "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    json.loads(captured.out)  # the command's JSON, nothing else
    assert "imported my module" in captured.err and "building my net" in captured.err


def test_a_toml_spaces_factory_is_guarded_and_named_by_its_key(tmp_path, capsys):
    path = factory(tmp_path, "\nsys.exit(0)\n")
    toml = tmp_path / "my_space.toml"
    toml.write_text(f'family = "traced"\nname = "my_space"\n[model]\nfactory = "{path}:net"\ninput_size = 32\n')
    err = one_line_error(capsys, propose(str(toml)), flag="[model] factory")
    assert "called sys.exit(0)" in err and "my_space.toml" in err


def test_the_python_api_raises_the_projects_error(tmp_path):
    path = factory(tmp_path, "\nsys.exit(0)\n")
    with pytest.raises(SpaceError, match=r"called sys\.exit\(0\)"):
        get_space(f"{path}:net@32")


def test_a_module_missing_a_dependency_is_not_called_missing_itself(tmp_path, capsys):
    path = factory(tmp_path, "\nimport no_such_dependency_xyz\n")
    err = one_line_error(capsys, propose(f"{path}:net@32"))
    assert "no_such_dependency_xyz" in err


# -- cause 3: a forward whose path depends on the input values is refused ---------------------------------------
BRANCHY = """

class Branchy(Net):
    def __init__(self, num_classes=10):
        super().__init__(num_classes)
        self.big = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 16, 3, padding=1))

    def forward(self, x):
        y = self.stem(x)
        if x.sum() > 0:  # the path depends on the image
            y = self.big(y)
        return self.fc(self.body(y).mean((2, 3)))


def branchy(num_classes=10):
    return Branchy(num_classes)


class Loops(Net):
    def forward(self, x):
        y = self.stem(x)
        for _ in range(int(x.abs().mean() * 3) % 3):  # as many blocks as the data says
            y = self.stem[2](y)
        return self.fc(self.body(y).mean((2, 3)))


def loops(num_classes=10):
    return Loops(num_classes)


class Checks(Net):
    def forward(self, x):
        if torch.isnan(x).any():  # data-dependent, but every input calls the same layers
            raise ValueError("NaN input")
        return super().forward(x)


def checks(num_classes=10):
    return Checks(num_classes)
"""


@pytest.mark.parametrize("fn", ["branchy", "loops"])
def test_a_data_dependent_forward_is_refused_in_one_line(tmp_path, capsys, fn):
    path = factory(tmp_path, BRANCHY)
    err = one_line_error(capsys, propose(f"{path}:{fn}@32"))
    assert "depends on the input values" in err and "refused" in err


def test_a_forward_that_only_checks_its_input_is_accepted(tmp_path, capsys):
    path = factory(tmp_path, BRANCHY)
    assert main(propose(f"{path}:checks@32")) == 0, capsys.readouterr().err


# -- cause 3: deriving a space is bounded ------------------------------------------------------------------------
def test_a_shufflenet_whose_grouping_explodes_is_refused_at_the_bound(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNENAS_MAX_GROUP_ENTRIES", "1000")
    path = factory(tmp_path, base=SHUFFLENET, name="shufflenetv2.py")
    err = one_line_error(capsys, propose(f"{path}:shufflenet@32"))
    assert "grew past 1000 entries" in err and "PRUNENAS_MAX_GROUP_ENTRIES" in err
    # the same bound leaves a well-behaved model (a residual stream, depthwise, grouped, concatenation) alone
    assert main(propose(f"{FACTORIES}:tiny_net@32")) == 0, capsys.readouterr().err


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "1e4"])
def test_a_bad_bound_is_refused_naming_the_variable(capsys, monkeypatch, value):
    monkeypatch.setenv("PRUNENAS_MAX_GROUP_ENTRIES", value)
    err = one_line_error(capsys, propose(f"{FACTORIES}:tiny_net@32"), flag="PRUNENAS_MAX_GROUP_ENTRIES")
    assert repr(value) in err and ">= 1" in err
    with pytest.raises(PrunenasError, match="PRUNENAS_MAX_GROUP_ENTRIES"):
        get_space(f"{FACTORIES}:tiny_net@32")


# -- the derived-space cache --------------------------------------------------------------------------------------
@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the traces of Torch-Pruning's dependency groups (the expensive part of deriving a space)."""
    calls: list[int] = []
    real = prunenas.surgery.channel_groups

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prunenas.surgery, "channel_groups", counted)
    return calls


def forget_module(path: Path) -> None:
    """Drop the imported factory module: a new process imports the file as it is now."""
    for name in [n for n, m in sys.modules.items() if getattr(m, "__file__", None) == str(path)]:
        del sys.modules[name]


def derive(name: str) -> Any:
    clear_cache()  # a new command (or worker): nothing in memory
    return get_space(name)


def test_the_second_derivation_reads_the_cache_and_gives_the_same_space(tmp_path, derivations, own_cache):
    name = f"{factory(tmp_path)}:net@32"
    first = derive(name)
    second = derive(name)
    assert len(derivations) == 1
    assert list(own_cache.glob("traced/*.json")) and not list(own_cache.rglob("*.tmp"))
    assert second.genes == first.genes and second.describe() == first.describe()
    g = first.make({x.name: x.snap(x.reference / 2) for x in first.genes})
    assert genotype_cost(second, g) == genotype_cost(first, g)
    assert second.analytic_macs(g) == first.analytic_macs(g)
    built = []
    for space in (first, second):
        torch.manual_seed(3)
        built.append(space.build(g).state_dict())
    assert all(torch.equal(built[0][k], built[1][k]) for k in built[0])


def test_a_changed_source_derives_again(tmp_path, derivations):
    path = factory(tmp_path)
    derive(f"{path}:net@32")
    wider = NET.replace("nn.Conv2d(16, 32, 3", "nn.Conv2d(16, 48, 3").replace("nn.Linear(32,", "nn.Linear(48,")
    path.write_text(wider + "# wider\n")
    forget_module(path)
    changed = derive(f"{path}:net@32")
    assert len(derivations) == 2
    assert changed.gene("body.0").reference == 48


def test_a_changed_module_the_factory_imports_derives_again(tmp_path, derivations):
    (tmp_path / "blocks_mod.py").write_text("WIDTH = 32\n")
    body = NET.replace("import torch\n", "import torch\nfrom blocks_mod import WIDTH\n", 1)
    body = body.replace("nn.Conv2d(16, 32, 3", "nn.Conv2d(16, WIDTH, 3").replace("nn.Linear(32,", "nn.Linear(WIDTH,")
    path = factory(tmp_path, base=body)
    sys.path.insert(0, str(tmp_path))
    try:
        derive(f"{path}:net@32")
        derive(f"{path}:net@32")
        assert len(derivations) == 1
        (tmp_path / "blocks_mod.py").write_text("WIDTH = 40  # wider\n")
        sys.modules.pop("blocks_mod", None)
        forget_module(path)
        assert derive(f"{path}:net@32").gene("body.0").reference == 40
        assert len(derivations) == 2
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("blocks_mod", None)


@pytest.mark.parametrize(
    "content",
    [b"\x00garbage", b'{"format": 1, "data": {"genes": []}}', b'{"format": 1, "data": {"genes": [{"x": 1}]}}', b""],
    ids=["binary", "no-genes", "bad-gene", "empty"],
)
def test_a_corrupt_entry_is_ignored_and_rewritten(tmp_path, derivations, own_cache, content):
    name = f"{factory(tmp_path)}:net@32"
    first = derive(name)
    (entry,) = own_cache.glob("traced/*.json")
    entry.write_bytes(content)
    again = derive(name)
    assert len(derivations) == 2 and again.genes == first.genes
    assert json.loads(entry.read_text())["data"]["genes"]  # rewritten whole
    derive(name)
    assert len(derivations) == 2


def test_no_cache_when_off_or_unwritable(tmp_path, derivations, monkeypatch):
    name = f"{factory(tmp_path)}:net@32"
    monkeypatch.setenv("PRUNENAS_COST_CACHE", "off")
    derive(name)
    derive(name)
    assert len(derivations) == 2
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PRUNENAS_COST_CACHE", str(blocker))
    assert derive(name).genes  # the cache cannot be written: no error, only the derivation again


def test_the_cli_reads_the_cache_in_a_later_command(tmp_path, derivations, capsys):
    name = f"{factory(tmp_path)}:net@32"
    outputs = []
    for _ in range(2):
        clear_cache()
        assert main(["spaces", "show", name, "--json"]) == 0, capsys.readouterr().err
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and len(derivations) == 1
