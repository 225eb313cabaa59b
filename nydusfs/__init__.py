"""nydusfs: create, merge, mount, check and dump Nydus (RAFS v5/v6) container images."""

__version__ = "0.1.0"
