"""Media types and annotation keys of OCI, Docker and Nydus images (spec image.md §1)."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = ("application/vnd.oci.image.layer.nondistributable.v1.tar",
                     "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                     "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
NYDUS_ARTIFACT = "application/vnd.nydus.image.manifest.v1+json"
NYDUS_CONFIG = "application/vnd.nydus.image.config.v1+json"
NYDUS_OS_FEATURE = "nydus.remoteimage.v1"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
CONFIGS = (OCI_CONFIG, DOCKER_CONFIG, NYDUS_CONFIG)
TAR_LAYERS = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, *OCI_LAYER_NONDIST,
              DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_FOREIGN)

# Docker -> OCI, what `--oci` rewrites
TO_OCI = {DOCKER_MANIFEST: OCI_MANIFEST, DOCKER_LIST: OCI_INDEX, DOCKER_CONFIG: OCI_CONFIG,
          DOCKER_LAYER: OCI_LAYER, DOCKER_LAYER_GZIP: OCI_LAYER_GZIP, DOCKER_FOREIGN: OCI_LAYER_GZIP}

A = "containerd.io/snapshot/"
ANN_BLOB = A + "nydus-blob"
ANN_BOOTSTRAP = A + "nydus-bootstrap"
ANN_FS_VERSION = A + "nydus-fs-version"
ANN_SOURCE_DIGEST = A + "nydus-source-digest"
ANN_SOURCE_REFERENCE = A + "nydus-source-reference"
ANN_REF = A + "nydus-ref"
ANN_EMPTY_LAYER = A + "nydus-empty-layer"
ANN_BLOB_IDS = A + "nydus-blob-ids"                    # legacy nydusify <= 2.1
ANN_UNCOMPRESSED = "containerd.io/uncompressed"
ANN_REF_NAME = "org.opencontainers.image.ref.name"

BOOTSTRAP_MEMBER = "image/image.boot"
LEGACY_BOOTSTRAP_MEMBERS = ("image.boot",)
HISTORY_ENTRY = {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def is_docker(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")
