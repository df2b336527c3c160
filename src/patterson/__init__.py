"""patterson: learned and classical phasing of crystallographic Patterson maps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("patterson")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = ["__version__"]
