"""Traced spaces: any PyTorch classification model as a channel search space.

A traced space starts from a model factory (`prunenas.spaces.factories`: `torchvision:NAME`,
`timm:NAME`, `package.module:callable`, `path/to/file.py:callable`) and derives its genes from
Torch-Pruning's dependency graph:

* one channel gene per prunable dependency group, named by the module path of the group's root
  layer (never by position), valued in [lowest, reference] in steps of the group's divisor: the
  space's `divisor` (default 8), times the group's own split count (grouped convolutions, GroupNorm),
  reduced to a divisor of the reference width;
* groups that reach the model's output layer (the classifier, Linear or Conv) are never genes, nor
  are groups of `ignored_layers`;
* every candidate group is probed at its lowest width: a group whose pruning fails or changes the
  output shape is fixed and reported with the reason (`prunenas spaces show` lists them).

Building a genotype: a fresh model from the factory (torch's RNG, seeded by the run, decides its
weights), each narrowed group pruned by Torch-Pruning's dependency graph (the last channels of each
split removed: in a fresh init every channel is alike), then re-initialised by this rule: every
conv/linear layer whose shape changed has its weights rescaled so that their standard deviation
follows the family's own init at the new fan, read off its reference model per layer type
(`prunenas.spaces.traced_model`). Then it is checked: each gene's root layer has the
genotype's width and the output shape is (batch, num_classes).

Names: `torchvision:mobilenet_v2` (224-pixel input), `torchvision:mobilenet_v2@32` (32-pixel input),
`density:torchvision:resnet18` (one density gene per conv/linear weight, as the CIFAR density spaces).
A TOML file with `family = "traced"` sets the same things, plus kwargs, ignored layers, divisor and
lowest width fraction, and may `extends` another traced TOML.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from prunenas import surgery  # channel_groups looked up on the module (a test replaces it)
from prunenas.cost import fvcore_macs_by_layer
from prunenas.errors import SpaceError, first_line
from prunenas.genotype import GeneValue, Genotype
from prunenas.spaces.base import Gene, Space, SpaceKind
from prunenas.spaces.cache import derived_key, entry_path, load, store
from prunenas.spaces.factories import factory_source, factory_task, make_model, torchvision_figures, user_code
from prunenas.spaces.traced_model import (
    MAX_GROUP_ENTRIES_ENV,
    LayerFacts,
    call_path,
    detect_init_modes,
    failing_groups,
    fans_of,
    layer_kind,
    max_group_entries,
    path_dependence,
    rescale_to_init,
)
from prunenas.surgery import ChannelGroup, GroupTooLarge, even_drops, prune_channels
from prunenas.tasks import CLASSIFICATION, all_tasks, get_task

if TYPE_CHECKING:
    from prunenas.surgery import ChannelGroup

DEFAULT_DIVISOR = 8
DEFAULT_MIN_FRACTION = 0.125
DEFAULT_INPUT_SIZE = 224
_SPEC = re.compile(r"^(?P<density>density:)?(?P<factory>[^@]+?)(?:@(?P<size>\d+))?$")
#: Attention over shifted windows or grids (Swin, MaxViT): refused before tracing.
WINDOW_ATTENTION = frozenset(
    {"ShiftedWindowAttention", "ShiftedWindowAttentionV2", "PartitionAttentionLayer", "WindowAttention"}
)
#: What a traced space's name may start with (the user-callable forms contain a ':' too).
PREFIXES = ("torchvision:", "timm:", "density:")


def is_factory_name(name: str) -> bool:
    """Whether a --space value names a model factory (rather than a shipped space or a TOML file)."""
    if name.endswith(".toml"):
        return False
    return name.startswith(PREFIXES) or (":" in name and not name.startswith(":"))


@dataclass(frozen=True)
class FactoryName:
    """A traced space's name, parsed: `[density:]FACTORY[@SIZE]`."""

    factory: str
    size: int | None
    density: bool

    @classmethod
    def parse(cls, name: str) -> FactoryName:
        match = _SPEC.match(name)
        if not match or ":" not in match["factory"]:
            raise SpaceError(
                f"space {name!r} is not a model factory name; use torchvision:NAME, timm:NAME, "
                "package.module:callable or path/to/file.py:callable, optionally with @SIZE (input pixels) "
                "and a density: prefix"
            )
        size = int(match["size"]) if match["size"] else None
        if size is not None and not 8 <= size <= 4096:
            raise SpaceError(f"space {name!r}: input size {size} must be in [8, 4096] pixels")
        return cls(match["factory"], size, bool(match["density"]))

    def at_size(self, size: int) -> str:
        return f"{'density:' if self.density else ''}{self.factory}@{size}"


class TracedSpace(Space):
    """Any classification model from a factory, its channel genes derived by Torch-Pruning's dependency graph.

    Config: factory, kwargs, input_size (or input_shape), num_classes, ignored_layers, divisor, min_fraction.
    """

    family: ClassVar[str] = "traced"
    kind: ClassVar[SpaceKind] = "channels"
    config_keys: ClassVar[frozenset[str] | None] = frozenset(
        {"factory", "kwargs", "input_size", "ignored_layers", "divisor", "min_fraction", "task"}
    )

    # -- deriving the genes --------------------------------------------------------------------------------
    def _settings(self) -> None:
        cfg = self.config
        factory = cfg.get("factory")
        if not isinstance(factory, str) or ":" not in factory:
            raise SpaceError(
                f'space {self.name!r}: a traced space needs factory = "torchvision:NAME", "timm:NAME" or '
                f'"package.module:callable" (got {factory!r})'
            )
        self.factory: str = factory
        kwargs = cfg.get("kwargs", {})
        if not isinstance(kwargs, Mapping):
            raise SpaceError(f"space {self.name!r}: kwargs must be a table of factory arguments, got {kwargs!r}")
        self.kwargs: dict[str, Any] = dict(kwargs)
        task = cfg.get("task") or factory_task(factory) or self._task_from_output(factory, cfg)
        if task not in all_tasks():
            raise SpaceError(f"space {self.name!r}: unknown task {task!r}; valid: {', '.join(sorted(all_tasks()))}")
        self.task = str(task)
        self.task_of = get_task(self.task)
        self.recipe = {**self.task_of.recipe, **self.recipe}  # the task's defaults under the space's own
        size = cfg.get("input_size")
        self.sized = size is not None  # a detector's transform is set to it (else the model's own size counts)
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
                raise SpaceError(f"space {self.name!r}: input_size must be an integer in [8, 4096], got {size!r}")
            self.input_shape = (self.input_shape[0] if "input_shape" in cfg else 3, size, size)
        elif "input_shape" not in cfg:
            self.input_shape = (3, self.own_size, self.own_size)
        divisor = cfg.get("divisor", DEFAULT_DIVISOR)
        if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
            raise SpaceError(f"space {self.name!r}: divisor must be an integer >= 1, got {divisor!r}")
        self.divisor: int = divisor
        fraction = cfg.get("min_fraction", DEFAULT_MIN_FRACTION)
        if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise SpaceError(f"space {self.name!r}: min_fraction must be in (0, 1], got {fraction!r}")
        self.min_fraction: float = float(fraction)
        ignored = cfg.get("ignored_layers", [])
        if not isinstance(ignored, list) or not all(isinstance(x, str) for x in ignored):
            raise SpaceError(f"space {self.name!r}: ignored_layers must be a list of module paths, got {ignored!r}")
        self.user_ignored: list[str] = list(ignored)
        self.max_group_entries = max_group_entries()  # checked even when the space comes from the cache

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, *self.input_shape)

    def _task_from_output(self, factory: str, cfg: Mapping[str, Any]) -> str:
        """The task of a user's factory without a `task` setting, told by its model's eval output on zeros:
        {"out": ...} is segmentation, a list of {"boxes", ...} detection, anything else classification."""
        if factory.startswith(("torchvision:", "timm:")):
            return CLASSIFICATION
        size = cfg.get("input_size")
        side = size if isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096 else 224
        with user_code(factory, "telling its task from its output", errors=False):
            model = self._built().eval()
            with torch.no_grad():
                try:
                    out = model(torch.zeros(1, 3, side, side))
                except Exception:  # the space's own checks say what is wrong, with the size to use
                    return CLASSIFICATION
        if isinstance(out, Mapping) and "out" in out:
            return "segmentation"
        if isinstance(out, list | tuple) and out and isinstance(out[0], Mapping) and "boxes" in out[0]:
            return "detection"
        return CLASSIFICATION

    @cached_property
    def own_size(self) -> int:
        """The input pixels the model is documented at: a detector's transform's (read off a built model), else the
        task's default (classification 224, segmentation 520)."""
        own = self.task_of.input_size(self._built()) if self.task != CLASSIFICATION else None
        return own or self.task_of.default_input_size

    def _built(self) -> nn.Module:
        """A throwaway model of the factory (its own settings, e.g. a detector's input size, are read off it)."""
        with torch.random.fork_rng(devices=[]):
            return make_model(self.factory, self.num_classes, self.kwargs)

    def fresh_model(self, num_classes: int | None = None) -> nn.Module:
        """The factory's unpruned model (weights from torch's global RNG); a detector's transform resizes to the
        space's input size when one was given."""
        model = make_model(self.factory, num_classes or self.num_classes, self.kwargs)
        if self.sized:
            self.task_of.set_input_size(model, self.input_shape[-1])
        return model

    def _output(self, model: nn.Module, num_classes: int, what: str) -> Any:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(self.example())
        except Exception as exc:
            first = first_line(exc, type(exc).__name__)
            raise SpaceError(
                f"space {self.name!r}: {what} fails on a {list(self.example().shape)} input ({first}); "
                "use an input size the model accepts (NAME@SIZE or input_size)"
            ) from None
        finally:
            model.train(was)
        wrong = self.task_of.check_output(out, num_classes, self.input_shape)
        if wrong is not None:
            raise SpaceError(
                f"space {self.name!r}: {what} {wrong}: a traced {self.task} space needs a {self.task} model that "
                "takes num_classes (another task: set task in its TOML file)"
            )
        return out

    def _make_genes(self) -> list[Gene]:
        """The genes: from the derived-space cache when an entry for these settings, this factory source and
        these libraries exists, else derived (and stored). The user's code runs behind `user_code`."""
        try:
            self._settings()  # a user's factory without a task setting runs here (its task told by its output)
            with user_code(self.factory, "tracing its model", errors=False):
                source = factory_source(self.factory)
                path = entry_path(self.slug, derived_key(self._derivation_settings(source), source))
                cached = load(path)
                if cached is not None:
                    with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                        return self._restore(cached)  # a malformed entry is derived again and rewritten
                genes = self._derive()
        except SpaceError as exc:
            text = str(exc)
            if self.source != "model factory" and text.startswith("model factory "):  # a TOML file's [model] factory
                raise SpaceError(f"space {self.name!r} ({self.source}): [model] factory {text[14:]}") from None
            raise
        store(path, self.name, self._derived(genes))
        return genes

    def _derivation_settings(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """What the derivation depends on besides the factory's source and the libraries (the cache's key)."""
        factory = self.factory
        if "module" in source:  # a user's file: by its resolved path, whatever folder the spec was given from
            factory = f"{source['module']}:{factory.rpartition(':')[2]}"
        return {
            "family": self.family, "factory": factory, "kwargs": self.kwargs, "input_shape": list(self.input_shape),
            **({"task": self.task} if self.task != CLASSIFICATION else {}),
            "num_classes": self.num_classes, "ignored_layers": self.user_ignored, "divisor": self.divisor,
            "min_fraction": self.min_fraction,
        }  # fmt: skip

    def _derive(self) -> list[Gene]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = self.fresh_model()
        model.eval()
        self._output(model, self.num_classes, f"model {self.factory!r}")
        modules = dict(model.named_modules())
        windowed = sorted({type(m).__name__ for m in modules.values() if type(m).__name__ in WINDOW_ATTENTION})
        if windowed:  # tracing them takes minutes and tens of GB (measured on swin_v2 and maxvit)
            raise SpaceError(
                f"space {self.name!r}: Torch-Pruning cannot group the window attention of {self.factory!r} "
                f"({', '.join(windowed)}); neither its channels nor its density: space (built on the same trace) "
                "can be searched"
            )
        path = call_path(model, self.example())
        order = [n for n in path if isinstance(modules[n], nn.Conv2d | nn.Linear)]
        if not order:
            raise SpaceError(f"space {self.name!r}: model {self.factory!r} has no Conv2d or Linear layer to prune")
        why = path_dependence(model, path, self.input_shape)
        if why:  # data-dependent control flow: MACs and channel groups traced on one input describe one path only
            raise SpaceError(
                f"space {self.name!r}: the forward of {self.factory!r} depends on the input values: {why}; refused, "
                "since MACs and channel groups traced on one input would describe one path only: make the layers "
                "it calls independent of the input values"
            )
        unknown = [n for n in self.user_ignored if n not in modules]
        if unknown:
            raise SpaceError(
                f"space {self.name!r}: ignored_layers {unknown[:3]} are not modules of the model "
                f"(e.g. {', '.join(list(order)[:3])})"
            )
        self.output_layer = order[-1]
        self.heads = [n for n in self.task_of.head_layers(model) if n not in self.user_ignored]
        rank = {n: i for i, n in enumerate(dict.fromkeys(order))}
        try:
            found = surgery.channel_groups(
                model,
                self.example(),
                ignored=[*(self.heads or [self.output_layer]), *self.user_ignored],
                max_entries=self.max_group_entries,
            )
        except GroupTooLarge as exc:  # channel shuffles and splits: grouping would run for hours
            raise SpaceError(
                f"space {self.name!r}: deriving the channel groups of {self.factory!r} was stopped: Torch-Pruning's "
                f"dependency group of {exc.root!r} grew past {exc.limit} entries (channel shuffles or splits make it "
                "reach the same layers in ever more channel orders, for hours); neither its channels nor its density: "
                f"space (built on the same trace) can be searched (${MAX_GROUP_ENTRIES_ENV} sets the bound)"
            ) from None
        except Exception as exc:  # Torch-Pruning cannot trace this model's graph
            first = first_line(exc, limit=160)
            raise SpaceError(
                f"space {self.name!r}: Torch-Pruning cannot build the dependency graph of {self.factory!r} "
                f"({type(exc).__name__}: {first}); neither its channels nor its density: space (built on the same "
                "trace) can be searched"
            ) from None
        groups = [
            # a group is named by the first layer (in execution order) whose output channels it sets
            replace(g, root=min((n for n, _ in g.out_layers), key=lambda n: rank.get(n, len(rank)), default=g.root))
            for g in found
        ]
        groups.sort(key=lambda g: rank.get(g.root, len(rank)))
        macs = fvcore_macs_by_layer(model, self.input_shape)
        self._layers: dict[str, LayerFacts] = {}
        for name, m in modules.items():
            if isinstance(m, nn.Conv2d):
                self._layers[name] = LayerFacts(
                    m.out_channels, m.in_channels, m.groups, macs.get(name, 0), fans_of(m.weight),
                    layer_kind(m, m.groups, m.in_channels),
                )  # fmt: skip
            elif isinstance(m, nn.Linear):
                self._layers[name] = LayerFacts(
                    m.out_features, m.in_features, 1, macs.get(name, 0), fans_of(m.weight), "Linear"
                )
        self.init_modes = detect_init_modes(model)
        self.fixed_groups: dict[str, str] = {}
        candidates = {}
        for g in groups:
            step = math.gcd(math.lcm(self.divisor, g.splits), g.width)
            low = max(step, math.ceil(g.width * self.min_fraction / step) * step)
            if low >= g.width:
                self.fixed_groups[g.root] = f"width {g.width} leaves nothing to prune at divisor {step}"
                continue
            candidates[g.root] = (g, step, low)
        plan = {r: (g.width, low, g.splits) for r, (g, _, low) in candidates.items()}
        failing = failing_groups(
            model, self.example(), plan, lambda out: self.task_of.check_output(out, self.num_classes, self.input_shape)
        )
        self.fixed_groups.update(failing)
        self._set_groups({r: g for r, (g, _, _) in candidates.items() if r not in failing})
        if not self.groups:
            reasons = "; ".join(f"{k}: {v}" for k, v in list(self.fixed_groups.items())[:3])
            raise SpaceError(
                f"space {self.name!r}: no channel group of {self.factory!r} can be pruned"
                + (f" ({reasons})" if reasons else " (Torch-Pruning found no dependency group outside the classifier)")
            )
        genes = []
        for r, (g, step, low) in candidates.items():
            if r in failing:
                continue
            layers = ", ".join(dict.fromkeys(n for n, _ in g.out_layers))
            what = f"out channels of {layers}" if len(layers) < 80 else f"out channels of {len(g.out_layers)} layers"
            genes.append(Gene(r, "int", low, g.width, g.width, step=step, description=what))
        return genes

    def _set_groups(self, groups: Mapping[str, ChannelGroup]) -> None:
        """The searchable groups (root -> group), and the per-layer tables the cost model reads from them."""
        self.groups = dict(groups)
        self._outs: dict[str, list[tuple[str, int]]] = {}
        self._ins: dict[str, list[tuple[str, int]]] = {}
        for r, g in self.groups.items():
            for layer, n in g.out_layers:
                self._outs.setdefault(layer, []).append((r, n))
            for layer, n in g.in_layers:
                self._ins.setdefault(layer, []).append((r, n))

    # -- the derived-space cache (prunenas.spaces.cache) -------------------------------------------------------
    def _derived(self, genes: list[Gene]) -> dict[str, Any]:
        """What `_derive` found, as JSON values."""
        return {
            "genes": [asdict(g) for g in genes],
            "output_layer": self.output_layer,
            "heads": self.heads,
            "layers": {n: [x.out, x.inp, x.groups, x.macs, list(x.fans), x.kind] for n, x in self._layers.items()},
            "init_modes": self.init_modes,
            "fixed_groups": self.fixed_groups,
            "groups": [asdict(g) for g in self.groups.values()],
        }

    def _restore(self, data: Mapping[str, Any]) -> list[Gene]:
        """The genes and tables of a cache entry (any malformation raises KeyError, TypeError or ValueError)."""

        def pairs(rows: Any) -> tuple[tuple[str, int], ...]:
            return tuple((str(n), int(k)) for n, k in rows)

        groups = [
            ChannelGroup(
                root=str(g["root"]), width=int(g["width"]), splits=int(g["splits"]), out_layers=pairs(g["out_layers"]),
                in_layers=pairs(g["in_layers"]), kinds=tuple(str(k) for k in g["kinds"]),
            )
            for g in data["groups"]
        ]  # fmt: skip
        genes = [Gene(**g) for g in data["genes"]]
        layers = {
            str(n): LayerFacts(int(o), int(i), int(gr), int(m), (int(f[0]), int(f[1])), str(k))
            for n, (o, i, gr, m, f, k) in data["layers"].items()
        }
        by_root = {g.root: g for g in groups}
        ints = ("low", "high", "reference", "step")
        if (
            not genes
            or len(by_root) != len(genes)
            or any(g.kind != "int" or g.name not in by_root for g in genes)
            or any(type(getattr(g, k)) is not int for g in genes for k in ints)
        ):
            raise ValueError("the entry's genes and groups do not match")
        self.output_layer = str(data["output_layer"])
        self.heads = [str(n) for n in data["heads"]]
        self._layers = layers
        self.init_modes = {str(k): str(v) for k, v in data["init_modes"].items()}
        self.fixed_groups = {str(k): str(v) for k, v in data["fixed_groups"].items()}
        self._set_groups(by_root)
        return genes

    # -- building ---------------------------------------------------------------------------------------------
    def _build(self, genes: Mapping[str, GeneValue], num_classes: int) -> nn.Module:
        model = self.fresh_model(num_classes)
        drops = {
            g: even_drops(self.groups[g].width, int(v), self.groups[g].splits)
            for g, v in genes.items()
            if int(v) < self.groups[g].width
        }
        if drops:
            prune_channels(model, self.example(), drops)
            rescale_to_init(model, self._layers, self.init_modes)
        modules = dict(model.named_modules())
        for g, v in genes.items():
            root = modules[g]
            width = root.out_channels if isinstance(root, nn.Conv2d) else getattr(root, "out_features", None)
            if width != int(v):
                raise SpaceError(f"space {self.name!r}: building gene {g} = {v} gave {width} channels")
        self._output(model, num_classes, "the pruned model")
        return model

    # -- cost without building -----------------------------------------------------------------------------
    def _width(
        self, table: Mapping[str, list[tuple[str, int]]], layer: str, full: int, genes: Mapping[str, Any]
    ) -> int:
        width = full
        for gene, n in table.get(layer, ()):
            ref = self.groups[gene].width
            width -= (ref - int(genes[gene])) * n // ref
        return width

    def analytic_macs(self, genotype: Genotype) -> int | None:
        """MACs at the space's input size and num_classes from the reference's per-layer counts and the
        genotype's widths (no model is built; equal to the fvcore count of the built model)."""
        genes = genotype.genes
        total = 0
        for name, layer in self._layers.items():
            if not layer.macs:
                continue
            out = self._width(self._outs, name, layer.out, genes)
            inp = self._width(self._ins, name, layer.inp, genes)
            groups = out if layer.depthwise else layer.groups
            per = layer.macs // (layer.out * (layer.inp // layer.groups))
            total += per * out * (inp // groups)
        return total

    # -- what the rest of prunenas asks of a channel space --------------------------------------------------
    def structured_genes(self) -> dict[str, str]:
        return {g.name: g.name for g in self.genes}

    def output_layers(self) -> list[str] | None:
        return [*(self.heads or [self.output_layer]), *self.user_ignored]

    def gene_splits(self, gene: str) -> int:
        group = self.groups.get(gene)
        return group.splits if group is not None else 1

    def published_figures(self) -> dict[str, Any] | None:
        """This space beside torchvision's published cost of its model (weights meta `_ops`, `num_params`): the
        reference counted at the weights' class count, when the space's input is the size the figure is for;
        with a "line" to print. None for a classifier or a model without published figures."""
        from prunenas.cost import genotype_cost

        figures = torchvision_figures(self.factory)
        if figures is None or self.task == CLASSIFICATION:
            return None
        own = self.own_size
        name = f"{self.factory} ({figures['weights']}, {figures['classes']} classes)"
        if self.input_shape[1:] != (own, own):
            figures["line"] = (
                f"torchvision's figure for {name}: {figures['gmacs']:.3f} GMACs at {own} px; this space runs at "
                f"{self.input_shape[1]} px (compare at {self.factory}@{own})"
            )
            return figures
        cost = genotype_cost(self, self.reference(), num_classes=figures["classes"])
        figures.update(size=own, counted_gmacs=cost.macs / 1e9, counted_params=cost.params)
        figures["ratio"] = cost.macs / 1e9 / figures["gmacs"]
        line = (
            f"torchvision's figure for {name} at {own} px: {figures['gmacs']:.3f} GMACs, "
            f"{figures['params'] / 1e6:.2f}M params; counted here: {cost.macs / 1e9:.3f} GMACs "
            f"({figures['ratio']:.3f}x), {cost.params / 1e6:.2f}M params"
        )
        with torch.random.fork_rng(devices=[]):  # the weights `genotype_cost` counted (its seed): the same proposals
            torch.manual_seed(0)
            model = self.counting_model(self.reference(), figures["classes"])[0]
        if hasattr(model, "roi_heads"):  # two-stage: the RoI head runs once per proposal
            roi = sum(v for k, v in fvcore_macs_by_layer(model, self.input_shape).items() if k.startswith("roi_heads."))
            figures["roi_heads_gmacs"] = roi / 1e9
            figures["without_roi_heads_ratio"] = (cost.macs - roi) / 1e9 / figures["gmacs"]
            line += (
                f"; {roi / 1e9:.3f} GMACs of it in the RoI heads, which run once per proposal (those of a blank input "
                f"here) and which torchvision's figure leaves out: {figures['without_roi_heads_ratio']:.3f}x without "
                "them"
            )
        figures["line"] = line
        return figures

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["output_layer"] = self.output_layer
        info["task"] = self.task
        if self.heads:
            info["heads"] = list(self.heads)
        info["fixed_groups"] = dict(self.fixed_groups)
        info["init_modes"] = dict(self.init_modes)
        info["input_shape"] = list(self.input_shape)
        return info
