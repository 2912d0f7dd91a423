"""structome: a proteome-scale batch structure database builder.

The distribution's one top-level name. Its four packages are the folders beside this file:
`structome.models`, `structome.storage`, `structome.pipelines` and `structome.jobs` (see design.md).
"""

from importlib import metadata

try:
    __version__ = metadata.version("structome")
except metadata.PackageNotFoundError:  # a source folder used without installing it
    __version__ = "0+unknown"
