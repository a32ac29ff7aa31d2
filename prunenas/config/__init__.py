"""One configuration tree: frozen dataclasses that validate themselves and generate the CLI.

Every user-settable value of prunenas is a field of one of these dataclasses, declared once with
`setting(...)`: its default, help text, valid range or choices, and whether it changes a run's result
(`identity`). From that one declaration come

  - validation on construction (type, range, finiteness, choices; booleans parse strictly), with a
    one-line message that names the command-line flag,
  - the argparse flags (`add_arguments`): name, type, default and help text from the field,
  - JSON round trips (`to_dict` / `from_dict`: worker processes receive their configuration this way),
  - the run identity: `identity()` is the dict of result-changing fields; `fingerprint()` hashes dicts
    like it into the short hex names of run folders and caches.

A field may itself be a Config (or a table of plugin options, each a Config): flags, JSON and identity
then recurse into it. The configs: `DataConfig` (which images), `prunenas.recipes.Recipe` (how to train;
`Recipe.partial()` for changes to one), `RunSettings` (where and how to run: device, seed, speed
switches), `prunenas.search.config.SearchSettings` (the search), each metric's options
(`prunenas.metrics.Metric.options_class`), and `prunenas.search.config.SearchConfig`, which nests them all.

Modules: `values` (parsing, ConfigError, fingerprint), `fields` (`setting` and flags), `base` (`Config`),
`settings` (`DataConfig`, `RunSettings`).
"""

from prunenas.config.base import Config, coerce, coerce_config, nested_type
from prunenas.config.fields import dest_of, flag_of, prefixed, setting
from prunenas.config.settings import (
    DATA_CACHES,
    DATASETS,
    DEVICES,
    EMBEDDED_DATASETS,
    NORMALIZE,
    DataConfig,
    RunSettings,
)
from prunenas.config.values import (
    BOOL_WORDS,
    ConfigError,
    check_arg,
    fingerprint,
    parse_bool,
    parse_float,
    parse_int,
    parse_value,
)

__all__ = [
    "BOOL_WORDS", "DATASETS", "DATA_CACHES", "DEVICES", "EMBEDDED_DATASETS", "NORMALIZE", "Config", "ConfigError",
    "DataConfig", "RunSettings", "check_arg", "coerce", "coerce_config", "dest_of", "fingerprint", "flag_of",
    "nested_type", "parse_bool", "parse_float", "parse_int", "parse_value", "prefixed", "setting",
]  # fmt: skip
