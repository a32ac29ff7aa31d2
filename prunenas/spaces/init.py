"""Weight initialisation schemes of the CIFAR families, named after the code bases that use them.

A space's [model] `init` picks one; the default of each shipped space is the scheme of the paper it
reproduces (Rethinking spaces: "rethinking"; Frankle et al.'s density spaces: "open_lth").

  prunenas    conv weights Kaiming normal with fan_out (std sqrt(2 / (k*k*out))); BatchNorm weight 1,
              bias 0; Linear layers keep PyTorch's default init.
  rethinking  the Rethinking repository's (Liu et al. 2019) models: conv weights as above, conv biases 0;
              BatchNorm2d weight 1 in the ResNets but 0.5 in VGG, bias 0; VGG's Linear layers
              N(0, 0.01) with bias 0 (the ResNets keep PyTorch's default Linear init).
  open_lth    Frankle et al.'s open_lth: conv and Linear weights Kaiming normal with fan_in (PyTorch's
              `kaiming_normal_` default), biases as PyTorch leaves them; BatchNorm weight ~ U(0, 1), bias 0.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from prunenas.errors import SpaceError

INIT_SCHEMES = ("prunenas", "rethinking", "open_lth")
Family = Literal["resnet", "vgg"]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_init(space_name: str, value: object) -> str:
    """The [model] `init` value of a space, checked (one line naming the valid schemes otherwise)."""
    scheme = str(value)
    if scheme not in INIT_SCHEMES:
        raise SpaceError(f"space {space_name!r}: init must be one of {', '.join(INIT_SCHEMES)}, got {value!r}")
    return scheme


def initialize(model: nn.Module, scheme: str, family: Family) -> None:
    """Initialise `model`'s conv, Linear and BatchNorm layers in place with `scheme` (see the module doc)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid: {', '.join(INIT_SCHEMES)}")
    vgg = family == "vgg"
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "open_lth":
                nn.init.kaiming_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None and scheme == "rethinking":
                    nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if scheme == "open_lth":
                nn.init.kaiming_normal_(m.weight)
            elif scheme == "rethinking" and vgg:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BN):
            if scheme == "open_lth":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            elif scheme == "rethinking" and vgg and isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
