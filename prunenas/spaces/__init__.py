"""Search spaces: a model family plus its genes. See `registry` for how they are found."""

from prunenas.spaces.base import Gene, Space
from prunenas.spaces.registry import all_spaces, get_space, shipped_genotypes, space_names

__all__ = ["Gene", "Space", "all_spaces", "get_space", "shipped_genotypes", "space_names"]
