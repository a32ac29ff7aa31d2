"""Property-based checks of the bad-input contract (Hypothesis).

Generated genotype JSON, TOML spaces, recipe values and limit strings either work (exit 0, or a valid
object from the API) or are refused in one line: `prunenas: error: ...` on stderr, exit 2, no traceback.
Any other exception escapes `main()` and fails the test, so "never a traceback" is what is checked.

The examples are derandomized (the same ones on every run, so CI is stable) and nothing is stored in
a `.hypothesis` folder.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prunenas.cli import main
from prunenas.errors import PrunenasError
from prunenas.spaces import get_space

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SPACES = ("resnet20_channels", "resnet20_density", "resnet56_stages", "vgg16_channels")

# values a user might put anywhere: numbers of every kind, text, booleans, null, lists, objects
ANY_VALUE = st.one_of(
    st.integers(min_value=-5, max_value=10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-3, max_value=99), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def assert_contract(code: int, err: str, out: str) -> None:
    """Exit 0, or exit 2 with exactly one error line on stderr; never a traceback."""
    assert "Traceback" not in err and "Traceback" not in out
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("prunenas: error: "), err
        assert len(lines[0]) > len("prunenas: error: ") + 10, err
    else:
        assert out.strip(), "exit 0 with nothing printed"


@st.composite
def genotype_documents(draw: st.DrawFn) -> Any:
    """A genotype JSON document: a reference genotype with some genes changed, dropped or added, or a
    document of the wrong shape altogether."""
    shape = draw(st.sampled_from(["genes", "genes", "genes", "top", "space"]))
    space = draw(st.sampled_from(SPACES))
    genes: dict[str, Any] = dict(get_space(space).reference().genes)
    if shape == "top":
        return draw(st.one_of(ANY_VALUE, st.just({"space": space}), st.just({"space": space, "genes": [1, 2]})))
    names = sorted(genes)
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        genes[name] = draw(ANY_VALUE)
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        if draw(st.booleans()):
            genes.pop(name, None)
    if draw(st.booleans()):
        genes[draw(st.text(min_size=1, max_size=8))] = draw(ANY_VALUE)
    doc: dict[str, Any] = {"space": space, "genes": genes}
    if shape == "space":
        doc["space"] = draw(st.one_of(st.sampled_from(["resnet999", "", "torchvision:nope", "x.toml"]), ANY_VALUE))
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["provenance", "schema", "note", "format_version"]))] = draw(ANY_VALUE)
    return doc


@PROPERTY
@given(doc=genotype_documents())
def test_genotype_json_is_costed_or_refused_in_one_line(doc: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "genotype.json"
        path.write_text(json.dumps(doc), encoding="utf-8")  # NaN/Infinity tokens too, as a user's file may hold
        code = main(["cost", str(path)])
    captured = capsys.readouterr()
    assert_contract(code, captured.err, captured.out)


@PROPERTY
@given(data=st.binary(max_size=64))
def test_a_genotype_file_of_any_bytes_is_refused_in_one_line(data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "genotype.json"
        path.write_bytes(data)
        code = main(["cost", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert_contract(code, captured.err, captured.out)


def toml_value(value: Any) -> str:
    """A TOML literal for a generated value (TOML has nan and inf; strings are written as JSON strings,
    which TOML's basic strings read the same way for the characters generated here)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


# small numbers: a depth or width drawn at random must not build a model the size of a data centre
SMALL = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.floats(min_value=-2.0, max_value=4.0),
    st.sampled_from([float("nan"), float("inf"), 0.0, 1e-9]),
    st.text(alphabet="abcAB1_", max_size=4),
    st.booleans(),
    st.lists(st.integers(min_value=-2, max_value=24), max_size=4),
)

MODEL_KEYS = {
    "cifar_resnet": ["depth", "shortcut", "widths", "max_width_multiplier", "init"],
    "cifar_vgg": ["depth", "cfg", "classifier", "max_width_multiplier", "conv_bias", "init"],
    "cifar_preresnet": ["depth", "block", "widths", "selection", "init", "bn_weight", "max_width_multiplier"],
    "cifar_densenet": ["depth", "growth_rate", "stem_width", "bottleneck", "compression", "selection",
                       "max_width_multiplier"],
}  # fmt: skip
SMALL_DEFAULTS = {
    "cifar_resnet": {"depth": 8, "widths": [4, 6, 8]},
    "cifar_vgg": {"depth": 11, "cfg": [8, "M", 8, "M", 16, "M"]},
    "cifar_preresnet": {"depth": 11, "widths": [4, 6, 8]},
    "cifar_densenet": {"depth": 10, "growth_rate": 4, "stem_width": 8},
}
RECIPE_KEYS = ["epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones", "gamma", "nesterov",
               "label_smoothing", "warmup_epochs"]  # fmt: skip


@st.composite
def toml_spaces(draw: st.DrawFn) -> str:
    """A space file: a small model of a known family (or an unknown one) with some settings changed to
    generated values, unknown keys added, and a [recipe] table of generated values."""
    family = draw(st.sampled_from([*MODEL_KEYS, "mlp", ""]))
    model: dict[str, Any] = dict(SMALL_DEFAULTS.get(family, {}))
    for key in draw(st.lists(st.sampled_from(MODEL_KEYS.get(family, ["depth"])), max_size=2, unique=True)):
        model[key] = draw(SMALL)
    if draw(st.integers(0, 4)) == 0:
        model[draw(st.sampled_from(["widht", "layers", "Depth"]))] = draw(SMALL)
    recipe = {k: draw(SMALL) for k in draw(st.lists(st.sampled_from(RECIPE_KEYS), max_size=2, unique=True))}
    lines = [f"family = {json.dumps(family)}", "", "[model]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in model.items()]
    if recipe:
        lines += ["", "[recipe]", *(f"{k} = {toml_value(v)}" for k, v in recipe.items())]
    return "\n".join(lines) + "\n"


@PROPERTY
@given(text=toml_spaces())
def test_toml_space_is_shown_or_refused_in_one_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.toml"
        path.write_text(text, encoding="utf-8")
        code = main(["spaces", "show", str(path)])
    captured = capsys.readouterr()
    assert_contract(code, captured.err, captured.out)


def test_the_toml_generator_reaches_valid_spaces_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The property above is only worth something if some generated files are valid: the small defaults
    of every family must show."""
    for family, model in SMALL_DEFAULTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{family}.toml"
            body = "\n".join(f"{k} = {toml_value(v)}" for k, v in model.items())
            path.write_text(f'family = "{family}"\n[model]\n{body}\n', encoding="utf-8")
            code = main(["spaces", "show", str(path)])
        captured = capsys.readouterr()
        assert code == 0, (family, captured.err)


LIMIT_TEXT = st.one_of(
    st.text(alphabet="macsparmltenyvl_=0123456789.eE-+xkMGTb ", max_size=14),
    st.builds(
        lambda metric, amount, unit: f"{metric}={amount}{unit}",
        st.sampled_from(["macs", "params", "latency", "val_acc", "MACS", "bogus", ""]),
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.integers(min_value=-10, max_value=10**12).map(str),
            st.sampled_from(["", "0", "-0", "1e400", ".5", "5.", "nan", "0x10"]),
        ),
        st.sampled_from(["", "x", "X", "M", "G", "k", "ms", "%", " x"]),
    ),
)


@PROPERTY
@given(text=LIMIT_TEXT, flag=st.sampled_from(["--max", "--min"]))
def test_limit_strings_parse_to_a_positive_limit_or_are_refused(text: str, flag: str) -> None:
    from prunenas.metrics import Limit

    try:
        limit = Limit.parse(text, flag)
    except PrunenasError as exc:
        message = str(exc)
        assert "\n" not in message and flag in message, message
        return
    assert math.isfinite(limit.value) and limit.value > 0
    assert limit.lower == (flag == "--min")
    again = Limit.parse(limit.text(), flag)  # what the study records parses back to the same limit
    assert again == limit


def _recipe_keys() -> list[str]:
    from prunenas.recipes import recipe_settings

    return [*recipe_settings(), "warp", "Lr", "name", ""]


PLAUSIBLE = st.sampled_from(["0.05", "64", "0.9", "3", "0.1", "1", "true", "false", "[0.5, 0.75]"])
VALUE_TEXT = st.one_of(
    PLAUSIBLE,
    PLAUSIBLE,
    st.integers(min_value=-10, max_value=10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "true", "no", "1", "0", "null", "[0.5, 0.75]", "[]", "[2]", "1e400", "-0", "cosine", "{}"]),
    st.text(alphabet="abc019.,[]-e ", max_size=8),
)


@PROPERTY
@given(
    pairs=st.lists(st.tuples(st.sampled_from(_recipe_keys()), VALUE_TEXT), min_size=1, max_size=3),
    recipe=st.sampled_from(["standard", "scratch-b", "finetune", "proxy"]),
)
@example(pairs=[("warmup_epochs", "160")], recipe="standard")  # found by CI: the message named no --set
def test_recipe_values_make_a_recipe_or_are_refused(pairs: list[tuple[str, str]], recipe: str) -> None:
    """`prunenas train ... --recipe R --set KEY=VALUE`, up to the recipe the run would train with."""
    from prunenas.cli import build_parser
    from prunenas.cli.common import recipe_from_args
    from prunenas.recipes import Recipe

    argv = ["train", "resnet20_channels", "--recipe", recipe]
    for key, value in pairs:
        argv += ["--set", f"{key}={value}"]
    args = build_parser().parse_args(argv)
    space = get_space("resnet20_channels")
    try:
        made = recipe_from_args(args, space, space.reference())
    except PrunenasError as exc:
        message = str(exc)
        assert "\n" not in message and ("--set" in message or "--recipe" in message), message
        return
    assert isinstance(made, Recipe)
    assert made.epochs >= 1 and made.batch_size >= 1 and math.isfinite(made.lr) and made.lr > 0
