"""structome: a proteome-scale batch structure database builder.

The distribution's one top-level name. Its four packages are the folders beside this file:
`structome.models`, `structome.storage`, `structome.pipelines` and `structome.jobs` (see README, "Layout of the code").
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`structome.__version__`, read from the installed metadata only when asked (it costs ~40 ms to import)."""
    if name != "__version__":
        raise AttributeError(f"module 'structome' has no attribute {name!r}")
    from importlib import metadata

    try:
        return metadata.version("structome")
    except metadata.PackageNotFoundError:  # a source folder used without installing it
        return "0+unknown"
