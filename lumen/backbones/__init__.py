"""Layout backbones: the foundation models whose dense features make a neural layout.

Each backbone is one module here that registers a ``BackboneSpec`` (``registry.py``); the stages ask the spec,
never the name. Importing the modules below registers them, in the order the docs and ``--help`` list them; a
new backbone adds its module and one line here (docs/extending.md).
"""

# isort: off
from lumen.backbones import sd  # noqa: F401
from lumen.backbones import dinov2  # noqa: F401
from lumen.backbones import dino  # noqa: F401
from lumen.backbones import clip  # noqa: F401
from lumen.backbones import sd_dinov2  # noqa: F401
from lumen.backbones import dinov3  # noqa: F401
from lumen.backbones import vit  # noqa: F401
# isort: on
from lumen.backbones.registry import BACKBONES, BackboneSpec, ExtractorRequest, get_backbone

__all__ = ["BACKBONES", "BackboneSpec", "ExtractorRequest", "get_backbone"]
