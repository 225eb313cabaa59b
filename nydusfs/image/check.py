"""`check` on image references: the image rules (rules.py) plus, with a source image, the
filesystem rule of nydusfs.check (its own OCI reference against the Nydus image's reader)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from .manifest import Platform
from .nydus import Bootstrap, NydusImage, extract_bootstrap, find, open_reader
from .resolve import Resolved, open_source, resolve, tar_layers
from .rules import (
    Finding,
    bootstrap_rule,
    chunks_rule,
    config_rule,
    manifest_rule,
    source_manifest_rule,
)
from .source import ImageSource

RULES = ("manifest", "bootstrap", "config", "filesystem", "chunks")


@dataclasses.dataclass
class ImageCheck:
    rules: list[str]                 # the rules that ran, in order
    findings: list[Finding]
    filesystem: Any = None           # nydusfs.check.CheckResult of the filesystem rule

    @property
    def equal(self) -> bool:
        return not self.findings and (self.filesystem is None or self.filesystem.equal)


def _layer_files(source: ImageSource, resolved: Resolved, spool: str) -> list[str]:
    """Paths of the source layers for the reference side: the blob files of a layout as they
    are, else (archives, registries) copies in `spool`, verified while copied."""
    paths = []
    for layer in tar_layers(resolved, f"{source.reference}: manifest {resolved.manifest.digest}"):
        direct = getattr(source, "blob_path", lambda d: None)(layer.digest)
        if direct is not None:
            paths.append(direct)
            continue
        path = os.path.join(spool, layer.hex)
        with source.open_blob(layer.digest) as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        paths.append(path)
    return paths


@contextlib.contextmanager
def _mount_args(ref: str, platform: Platform | None, options: dict[str, Any], needed: bool) -> Iterator[list[str]]:
    """--through-mount: the flags that make the mount open the same image as this check."""
    if not needed:
        yield []
        return
    args = ["--platform", str(platform)] if platform is not None else []
    if not ref.startswith("docker://"):
        yield args
        return
    from ..registry.credentials import as_arguments

    with as_arguments(ref, options) as more:
        yield args + more


def run(nydus_ref: str, source_ref: str | None, platform: Platform | None, check_opts: Any,
        progress: Any = None, **options: Any) -> ImageCheck:
    """`options` go to both image sources (registry options, docs/registry.md)."""
    from ..check import run_check

    nydus_src = open_source(nydus_ref, **options)
    src = None
    reader = None
    try:
        src = open_source(source_ref, **options) if source_ref else None
        nydus_image: NydusImage = find(nydus_src, platform)
        rules = ["manifest", "bootstrap"]
        findings = manifest_rule(nydus_image)
        boot: Bootstrap = extract_bootstrap(nydus_src, nydus_image.bootstrap)
        reader = open_reader(nydus_image)
        findings += bootstrap_rule(nydus_image, boot, reader)
        if src is None:
            rules.append("chunks")
            findings += chunks_rule(reader)
            return ImageCheck(rules, findings)
        resolved = resolve(src, platform or nydus_image.resolved.platform)[0]
        findings = source_manifest_rule(resolved) + findings
        rules += ["config", "filesystem"]
        findings += config_rule(resolved, nydus_image)
        with tempfile.TemporaryDirectory(prefix="nydusfs-check-") as spool, \
                _mount_args(nydus_ref, platform, options, check_opts.through_mount) as mount_args:
            layers = _layer_files(src, resolved, spool)
            opts = dataclasses.replace(check_opts, bootstrap=nydus_ref, layers=layers, reader=reader,
                                       mount_args=mount_args)
            reader = None  # run_check closes it
            result = run_check(opts, progress)
        return ImageCheck(rules, findings, result)
    finally:
        if reader is not None:
            reader.close()
        nydus_src.close()
        if src is not None:
            src.close()
