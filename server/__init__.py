"""The Switchboard process: config, app factory, lifecycle, auth, routes, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("switchboard")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
