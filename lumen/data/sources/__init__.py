"""Data sources: where images and captions come from, and how each is read and written.

Each source is one module here that registers a ``DataSourceSpec`` (``registry.py``): the stages ask the spec,
never the name. Importing the modules below registers them, in the order the docs and ``--help`` list them; a
new source adds its module and one line here (docs/extending.md).
"""

# isort: off
from lumen.data.sources import coco  # noqa: F401
from lumen.data.sources import imagefolder  # noqa: F401
from lumen.data.sources import hf_dataset  # noqa: F401
from lumen.data.sources import webdataset  # noqa: F401
# isort: on
from lumen.data.sources.registry import DATA_SOURCES, DataSourceSpec, get_data_source, read_data_split

__all__ = ["DATA_SOURCES", "DataSourceSpec", "get_data_source", "read_data_split"]
