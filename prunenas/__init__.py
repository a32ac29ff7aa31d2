"""prunenas: network pruning as neural architecture search."""

from prunenas.genotype import Genotype

__version__ = "0.1.0"

__all__ = ["Genotype", "__version__"]
