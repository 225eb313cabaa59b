"""The registry options of the verbs (--creds, --authfile, --tls-verify, --cert-dir,
--plain-http, convert's --src-*/--dest-*), --platform on mount and dump, multi-platform pushes
and registry-to-registry converts, against real registries (Debian's docker-registry:
anonymous HTTP, htpasswd Basic over TLS, bearer tokens). skopeo pushes the test images and
reads back what convert pushes."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import needs_fuse, needs_root
from corpus import Layer, pattern
from imagekit import skopeo_copy, tagged, two_platform_index, umoci_image
from registry_helpers import PASSWORD, USER, Registry, layer_tar, make_layout, skopeo_push

pytest_plugins = ["registry_fixtures"]


# --- running the CLI with a clean credential environment ----------------------------------------

def clean_env(tmp: pathlib.Path, **extra: str) -> dict[str, str]:
    """No credentials from the machine: HOME, XDG_RUNTIME_DIR and the cache point into the
    test's directory, REGISTRY_AUTH_FILE is unset unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR")}
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env |= {"HOME": str(home), "NYDUSFS_CACHE_DIR": str(tmp / "cache")}
    env |= extra
    return env


def cli(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nydusfs", *map(str, args)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def auth_json(path: pathlib.Path, host: str, user: str = USER, password: str = PASSWORD) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def tls_args(reg: Registry) -> list[str]:
    return ["--cert-dir", str(reg.cert_dir)] if reg.kind == "basic" else []


# --- images in the registries -------------------------------------------------------------------

def _nydus_layout(tmp: pathlib.Path) -> pathlib.Path:
    """A two-layer OCI image (written with Python) and its Nydus conversion, as layouts
    `src` and `nydus` in `tmp`, both tagged v1."""
    src = tmp / "src"
    make_layout(src, [layer_tar({"etc/os-release": b"ID=test\n", "data/a.bin": pattern(200_000, 3)}),
                      layer_tar({"etc/hostname": b"nydusfs\n"})], "v1")
    env = clean_env(tmp)
    done = cli(env, "convert", f"oci:{src}:v1", f"oci:{tmp / 'nydus'}:v1", "--no-progress")
    assert done.returncode == 0, done.stderr
    return tmp


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return _nydus_layout(tmp_path_factory.mktemp("images"))


def push(images: pathlib.Path, reg: Registry) -> tuple[str, str]:
    """The source image as app:v1 and its Nydus image as app:v1-nydus; returns both references."""
    marker = reg.dir / "pushed"
    if not marker.exists():
        skopeo_push(images / "src", reg, "app", "v1")
        subprocess.run(["skopeo", "copy", "--quiet", *reg.skopeo_args("dest"), "--preserve-digests",
                        f"oci:{images / 'nydus'}:v1", f"docker://{reg.host}/app:v1-nydus"],
                       check=True, capture_output=True, timeout=120)
        marker.touch()
    return f"docker://{reg.host}/app:v1", f"docker://{reg.host}/app:v1-nydus"


# --- credentials by every route -----------------------------------------------------------------

ROUTES = ["creds", "authfile", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "docker-config"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", ["basic", "token"])
def test_credentials_by_every_route(kind: str, route: str, request: pytest.FixtureRequest,
                                    images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    reg: Registry = request.getfixturevalue(f"{kind}_registry")
    _, nydus = push(images, reg)
    env = clean_env(tmp_path)
    args: list[str] = []
    if route == "creds":
        args = ["--creds", f"{USER}:{PASSWORD}"]
    elif route == "authfile":
        args = ["--authfile", str(auth_json(tmp_path / "auth.json", reg.host))]
    elif route == "REGISTRY_AUTH_FILE":
        env["REGISTRY_AUTH_FILE"] = str(auth_json(tmp_path / "env-auth.json", reg.host))
    elif route == "XDG_RUNTIME_DIR":
        auth_json(tmp_path / "run" / "containers" / "auth.json", reg.host)
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    else:
        auth_json(tmp_path / "home" / ".docker" / "config.json", reg.host)
    # without the credentials: refused, in one line naming the reference
    refused = cli(env if route in ("creds", "authfile") else clean_env(tmp_path / "none"),
                  "dump", nydus, "--json", "--no-chunks", *tls_args(reg))
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "app" in refused.stderr and "credentials" in refused.stderr, refused.stderr
    done = cli(env, "dump", nydus, "--json", "--no-chunks", *tls_args(reg), *args)
    assert done.returncode == 0, done.stderr
    paths = {i["path"] for i in json.loads(done.stdout)["inodes"]}
    assert {"/etc/hostname", "/data/a.bin"} <= paths
    assert PASSWORD not in done.stderr + done.stdout


def test_authfile_wins_over_the_default_files(basic_registry: Registry, images: pathlib.Path,
                                              tmp_path: pathlib.Path) -> None:
    """--authfile is used instead of $REGISTRY_AUTH_FILE (whose password here is wrong)."""
    _, nydus = push(images, basic_registry)
    env = clean_env(tmp_path, REGISTRY_AUTH_FILE=str(auth_json(tmp_path / "bad.json", basic_registry.host,
                                                               password="wrong-one")))
    bad = cli(env, "dump", nydus, "--json", *tls_args(basic_registry))
    assert bad.returncode == 2 and "bad.json" in bad.stderr and "wrong-one" not in bad.stderr, bad.stderr
    good = cli(env, "dump", nydus, "--json", *tls_args(basic_registry),
               "--authfile", auth_json(tmp_path / "good.json", basic_registry.host))
    assert good.returncode == 0, good.stderr


def test_creds_without_password_and_no_terminal(basic_registry: Registry, images: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    _, nydus = push(images, basic_registry)
    done = cli(clean_env(tmp_path), "dump", nydus, "--creds", USER, *tls_args(basic_registry))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no terminal" in done.stderr and "--creds" in done.stderr


# --- TLS ------------------------------------------------------------------------------------------

def test_tls_options(basic_registry: Registry, images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _, nydus = push(images, basic_registry)
    env = clean_env(tmp_path)
    creds = ["--creds", f"{USER}:{PASSWORD}"]
    untrusted = cli(env, "dump", nydus, "--json", *creds)
    assert untrusted.returncode == 2 and untrusted.stderr.count("\n") == 1, untrusted.stderr
    assert "certificate" in untrusted.stderr and "--cert-dir" in untrusted.stderr
    bare = cli(env, "dump", "--tls-verify", nydus, "--json", *creds)   # bare: true, the reference stays
    assert bare.returncode == 2 and "certificate" in bare.stderr, bare.stderr
    for extra in (["--tls-verify=false"], ["--cert-dir", str(basic_registry.cert_dir)],
                  ["--tls-verify=true", "--cert-dir", str(basic_registry.cert_dir)]):
        done = cli(env, "dump", nydus, "--json", "--no-chunks", *creds, *extra)
        assert done.returncode == 0, (extra, done.stderr)
    wrong = cli(env, "dump", nydus, "--tls-verify=maybe")
    assert wrong.returncode == 2 and "expected true or false" in wrong.stderr


def test_plain_http_is_refused_by_a_tls_registry(basic_registry: Registry, images: pathlib.Path,
                                                 tmp_path: pathlib.Path) -> None:
    _, nydus = push(images, basic_registry)
    done = cli(clean_env(tmp_path), "dump", nydus, "--plain-http", "--creds", f"{USER}:{PASSWORD}")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_plain_http(anon_registry: Registry, images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _, nydus = push(images, anon_registry)
    done = cli(clean_env(tmp_path), "dump", nydus, "--json", "--no-chunks", "--plain-http")
    assert done.returncode == 0, done.stderr


def test_prefixed_options_win_over_unprefixed(token_registry: Registry, basic_registry: Registry,
                                              images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """convert: --creds applies to both sides, --src-creds/--dest-creds to one side and win
    there (wrong unprefixed credentials fail on the side nothing overrides them)."""
    src, _ = push(images, token_registry)
    env = clean_env(tmp_path)
    target = f"docker://{basic_registry.host}/prefixed/app:v1"
    common = [src, target, "--no-progress", "--creds", f"{USER}:wrong-pass", "--dest-cert-dir",
              str(basic_registry.cert_dir)]
    done = cli(env, "convert", *common, "--src-creds", f"{USER}:{PASSWORD}")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert target in done.stderr and "(from --creds)" in done.stderr and "wrong-pass" not in done.stderr
    done = cli(env, "convert", *common, "--dest-creds", f"{USER}:{PASSWORD}")
    assert done.returncode == 2 and src in done.stderr and "(from --creds)" in done.stderr, done.stderr
    done = cli(env, "convert", *common, "--src-creds", f"{USER}:{PASSWORD}", "--dest-creds", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stderr


# --- every verb takes the options -----------------------------------------------------------------

@needs_root
def test_every_verb_with_options(token_registry: Registry, basic_registry: Registry, images: pathlib.Path,
                                 tmp_path: pathlib.Path) -> None:
    """convert (token registry -> TLS registry with --src-*/--dest-* options), check, unpack,
    explore and diff with the options; the converted image equals the one converted locally."""
    src, nydus = push(images, token_registry)
    push(images, basic_registry)
    env = clean_env(tmp_path)
    tok = ["--creds", f"{USER}:{PASSWORD}"]
    target = f"docker://{basic_registry.host}/copy/app:v1-nydus"
    done = cli(env, "convert", src, target, "--no-progress", "--src-creds", f"{USER}:{PASSWORD}",
               "--dest-authfile", auth_json(tmp_path / "dest.json", basic_registry.host),
               "--dest-cert-dir", basic_registry.cert_dir, "--src-tls-verify=false")
    assert done.returncode == 0, done.stderr
    _, local = tagged(images / "nydus", "v1")
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", *basic_registry.skopeo_args(""), target],
                                    check=True, capture_output=True, text=True).stdout)
    assert [d["digest"] for d in raw["layers"]] == [d["digest"] for d in local["layers"]]
    basic = ["--creds", f"{USER}:{PASSWORD}", "--cert-dir", str(basic_registry.cert_dir)]
    # unprefixed options apply to both sides of convert
    done = cli(env, "convert", f"oci:{images / 'src'}:v1", target.replace("v1-nydus", "v2-nydus"),
               "--no-progress", *basic)
    assert done.returncode == 0, done.stderr
    assert cli(env, "check", src, nydus, *tok).returncode == 0
    out = tmp_path / "u.tar"
    done = cli(env, "unpack", target, "-o", out, *basic)
    assert done.returncode == 0 and out.stat().st_size > 200_000, done.stderr
    done = cli(env, "explore", nydus, "--json", *tok)
    assert done.returncode == 0 and len(json.loads(done.stdout)["layers"]) == 2, done.stderr
    done = cli(env, "diff", src, nydus, "--json", *tok)
    assert done.returncode == 0 and json.loads(done.stdout)["equal"], done.stdout + done.stderr


# --- passwords stay out of process titles, logs and errors ----------------------------------------

@needs_root
@needs_fuse
def test_password_not_in_process_title_or_log(token_registry: Registry, images: pathlib.Path,
                                              tmp_path: pathlib.Path, mounts, monkeypatch) -> None:
    _, nydus = push(images, token_registry)
    env = clean_env(tmp_path)
    for name in ("HOME", "NYDUSFS_CACHE_DIR"):
        monkeypatch.setenv(name, env[name])
    m = mounts.mount(nydus, "--creds", f"{USER}:{PASSWORD}", "--debug")
    assert (m.path / "etc" / "hostname").read_bytes() == b"nydusfs\n"
    cmdline = pathlib.Path(f"/proc/{m.pid}/cmdline").read_bytes()
    assert b"--creds" in cmdline and PASSWORD.encode() not in cmdline, cmdline
    assert USER.encode() + b":" + b"*" * len(PASSWORD) in cmdline
    assert PASSWORD not in m.log()
    wrong = cli(env, "dump", nydus, "--creds", f"{USER}:not-{PASSWORD}-x")
    assert wrong.returncode == 2 and PASSWORD not in wrong.stderr, wrong.stderr
    assert f"'{USER}'" in wrong.stderr and "--creds" in wrong.stderr


# --- --platform on mount and dump ----------------------------------------------------------------

@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A two-platform OCI index (umoci images, linux/amd64 and linux/arm64, each with its own
    /arch file)."""
    tmp = tmp_path_factory.mktemp("multi")
    layout = tmp / "layout"
    for arch in ("amd64", "arm64"):
        umoci_image(layout, arch, [Layer().file("arch", arch.encode() + b"\n").file("common", pattern(70_000, 9))],
                    tmp / "work")
    two_platform_index(layout, "multi", "amd64", "arm64")
    return layout


def _index(reg: Registry, ref: str) -> dict:
    return json.loads(subprocess.run(["skopeo", "inspect", "--raw", *reg.skopeo_args(""), ref],
                                     check=True, capture_output=True, text=True).stdout)


@needs_root
def test_all_platforms_pushed_and_read_back(anon_registry: Registry, multi: pathlib.Path,
                                            tmp_path: pathlib.Path) -> None:
    """convert --all-platforms of an index to docker://: the index and its two Nydus manifests
    are in the registry; skopeo inspects and copies them all; check and dump --platform read
    each platform."""
    env = clean_env(tmp_path)
    target = f"docker://{anon_registry.host}/multi/app:nydus"
    done = cli(env, "convert", f"oci:{multi}:multi", target, "--all-platforms", "--no-progress",
               "--output-json", "-")
    assert done.returncode == 0, done.stderr
    digest = json.loads(done.stdout[done.stdout.index("{\n"):])["digest"]
    index = _index(anon_registry, target)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for m in index["manifests"]:
        child = _index(anon_registry, f"docker://{anon_registry.host}/multi/app@{m['digest']}")
        assert child["layers"][-1]["annotations"]["containerd.io/snapshot/nydus-bootstrap"] == "true"
    copy = tmp_path / "copy"
    skopeo_copy(target, f"oci:{copy}:c", "--all", "--src-tls-verify=false")
    copied, _ = tagged(copy, "c")
    assert copied == digest
    for arch in ("amd64", "arm64"):
        plat = f"linux/{arch}"
        done = cli(env, "check", f"oci:{multi}:multi", target, "--platform", plat)
        assert done.returncode == 0, done.stdout + done.stderr
        done = cli(env, "dump", target, "--platform", plat, "--json", "--path", "/arch")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["size"] == len(arch) + 1
    none = cli(env, "dump", target, "--platform", "linux/s390x")
    assert none.returncode == 2 and "s390x" in none.stderr and none.stderr.count("\n") == 1


@needs_root
def test_merge_platform_pushed_and_read_back(anon_registry: Registry, multi: pathlib.Path,
                                             tmp_path: pathlib.Path) -> None:
    """--merge-platform to docker://: the index holds the source manifests and the Nydus
    ones (artifactType); skopeo copies it whole, and check reads the Nydus side back."""
    env = clean_env(tmp_path)
    target = f"docker://{anon_registry.host}/merged/app:v1"
    done = cli(env, "convert", f"oci:{multi}:multi", target, "--merge-platform", "--no-progress")
    assert done.returncode == 0, done.stderr
    index = _index(anon_registry, target)
    kinds = [m.get("artifactType", "oci") for m in index["manifests"]]
    assert kinds.count("application/vnd.nydus.image.manifest.v1+json") == 2 and kinds.count("oci") == 2
    skopeo_copy(target, f"oci:{tmp_path / 'copy'}:c", "--all", "--src-tls-verify=false")
    for arch in ("amd64", "arm64"):
        done = cli(env, "check", f"oci:{multi}:multi", target, "--platform", f"linux/{arch}")
        assert done.returncode == 0, done.stdout + done.stderr


@needs_root
@needs_fuse
def test_mount_platform(anon_registry: Registry, multi: pathlib.Path, tmp_path: pathlib.Path,
                        mounts) -> None:
    env = clean_env(tmp_path)
    target = f"docker://{anon_registry.host}/multi/mount:nydus"
    done = cli(env, "convert", f"oci:{multi}:multi", target, "--all-platforms", "--no-progress")
    assert done.returncode == 0, done.stderr
    for arch in ("amd64", "arm64"):
        m = mounts.mount(target, "--platform", f"linux/{arch}")
        assert (m.path / "arch").read_bytes() == arch.encode() + b"\n"
    bad = cli(env, "mount", multi / "index.json", tmp_path, "--platform", "linux/arm64")
    assert bad.returncode == 2 and "--platform applies to image references" in bad.stderr


# --- registry to registry: blobs skipped, blobs mounted ------------------------------------------

def _requests(reg: Registry, start: int, repo: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of the registry's access log lines after byte `start`."""
    text = reg.log_file.read_bytes()[start:].decode(errors="replace")
    found = re.findall(r'"(HEAD|GET|POST|PUT|PATCH|DELETE) (/v2/' + re.escape(repo) + r'/[^ "]*) HTTP/[0-9.]+" (\d+)',
                       text)
    return [(m, p, int(s)) for m, p, s in found]


@needs_root
@pytest.mark.parametrize("kind", ["anon", "basic", "token"])
def test_second_convert_skips_blobs(kind: str, request: pytest.FixtureRequest, images: pathlib.Path,
                                    tmp_path: pathlib.Path) -> None:
    """convert registry -> registry twice: the second run finds every blob in the target
    (HEAD answered 200) and uploads nothing."""
    reg: Registry = request.getfixturevalue(f"{kind}_registry")
    src, _ = push(images, reg)
    env = clean_env(tmp_path)
    opts = (["--creds", f"{USER}:{PASSWORD}"] if reg.creds() else []) + tls_args(reg)
    target = f"docker://{reg.host}/r2r/app:v1-nydus"
    first = cli(env, "convert", src, target, "--no-progress", *opts)
    assert first.returncode == 0, first.stderr
    start = reg.log_file.stat().st_size
    again = cli(env, "convert", src, target, "--no-progress", *opts)
    assert again.returncode == 0, again.stderr
    reqs = _requests(reg, start, "r2r/app")
    heads = {p for m, p, s in reqs if m == "HEAD" and "/blobs/sha256:" in p and s == 200}
    uploads = [(m, p) for m, p, s in reqs if "/blobs/uploads" in p]
    assert len(heads) == 4 and not uploads, reqs     # 2 blob layers, the bootstrap layer, the config


@needs_root
def test_convert_mounts_across_repositories(anon_registry: Registry, multi: pathlib.Path,
                                            tmp_path: pathlib.Path) -> None:
    """Source and target on one registry: the source blobs a --merge-platform target copies
    are mounted (POST ?mount=&from=, answered 201), not uploaded."""
    env = clean_env(tmp_path)
    src = f"docker://{anon_registry.host}/mnt-src/app:multi"
    skopeo_copy(f"oci:{multi}:multi", src, "--all", "--dest-tls-verify=false")
    start = anon_registry.log_file.stat().st_size
    done = cli(env, "convert", src, f"docker://{anon_registry.host}/mnt-dst/app:v1", "--merge-platform",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    reqs = _requests(anon_registry, start, "mnt-dst/app")
    mounted = [p for m, p, s in reqs if m == "POST" and "mount=" in p and "from=mnt-src/app" in p and s == 201]
    source_blobs = set()
    for arch in ("amd64", "arm64"):
        _, manifest = tagged(multi, arch)
        source_blobs |= {d["digest"] for d in [manifest["config"], *manifest["layers"]]}
    assert {p.split("mount=")[1].split("&")[0] for p in mounted} == source_blobs, reqs
    uploaded = [p for m, p, s in reqs if m == "PUT" and "/blobs/uploads/" in p]
    assert not any(d in p for p in uploaded for d in source_blobs)


def _index_without_media_types(layout: pathlib.Path) -> str:
    """A two-platform OCI index whose manifests leave out `mediaType` (the OCI spec allows it:
    the media type is in the index entry), written with Python."""
    entries = []
    for arch in ("amd64", "arm64"):
        digests = make_layout(layout, [layer_tar({"arch": arch.encode() + b"\n"})], arch)
        blobs = layout / "blobs" / "sha256"
        manifest = json.loads((blobs / digests["manifest"][7:]).read_bytes())
        config = json.loads((blobs / digests["config"][7:]).read_bytes())
        config["architecture"] = arch
        data = json.dumps(config).encode()
        manifest["config"] |= {"digest": _put(blobs, data), "size": len(data)}
        del manifest["mediaType"]
        data = json.dumps(manifest).encode()
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _put(blobs, data),
                        "size": len(data), "platform": {"os": "linux", "architecture": arch}})
    data = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}).encode()
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": _put(layout / "blobs" / "sha256", data),
        "size": len(data), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    return f"oci:{layout}:multi"


def _put(blobs: pathlib.Path, data: bytes) -> str:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest


@needs_root
def test_push_of_manifests_without_media_type(anon_registry: Registry, tmp_path: pathlib.Path) -> None:
    """--merge-platform copies the source manifests as they are; one without a mediaType
    field still goes to the manifests endpoint (by the index entry's media type; not as a
    blob, which distribution happens to serve as a manifest and other registries do not), and
    skopeo copies the index whole."""
    src = _index_without_media_types(tmp_path / "src")
    env = clean_env(tmp_path)
    target = f"docker://{anon_registry.host}/bare/app:v1"
    start = anon_registry.log_file.stat().st_size
    done = cli(env, "convert", src, target, "--merge-platform", "--no-progress")
    assert done.returncode == 0, done.stderr
    index = _index(anon_registry, target)
    assert len(index["manifests"]) == 4
    put = {p.rsplit("/", 1)[1] for m, p, s in _requests(anon_registry, start, "bare/app")
           if m == "PUT" and "/manifests/" in p and s == 201}
    assert put == {m["digest"] for m in index["manifests"]} | {"v1"}
    skopeo_copy(target, f"oci:{tmp_path / 'copy'}:c", "--all", "--src-tls-verify=false")
    for arch in ("amd64", "arm64"):
        done = cli(env, "check", src, target, "--platform", f"linux/{arch}")
        assert done.returncode == 0, done.stdout + done.stderr


@needs_root
@needs_fuse
def test_check_through_mount_passes_the_options_on(token_registry: Registry, anon_registry: Registry,
                                                   images: pathlib.Path, multi: pathlib.Path,
                                                   tmp_path: pathlib.Path) -> None:
    """check --through-mount mounts the image with the check's credentials (through a
    private auth file, never the command line) and its --platform."""
    src, nydus = push(images, token_registry)
    env = clean_env(tmp_path)
    done = cli(env, "check", src, nydus, "--through-mount", "--creds", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(pathlib.Path(os.environ.get("TMPDIR", "/tmp")).glob("nydusfs-auth-*/auth.json"))
    target = f"docker://{anon_registry.host}/multi/through:nydus"
    assert cli(env, "convert", f"oci:{multi}:multi", target, "--all-platforms", "--no-progress").returncode == 0
    done = cli(env, "check", f"oci:{multi}:multi", target, "--through-mount", "--platform", "linux/arm64")
    assert done.returncode == 0, done.stdout + done.stderr


def test_creds_password_asked_on_the_terminal(token_registry: Registry, images: pathlib.Path,
                                              tmp_path: pathlib.Path) -> None:
    """--creds USER on a terminal asks for the password (not echoed) and uses it."""
    import pty
    import select

    _, nydus = push(images, token_registry)
    env = clean_env(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:   # the child: the pty is its controlling terminal, as a user's shell would be
        os.execve(sys.executable, [sys.executable, "-m", "nydusfs", "dump", nydus, "--json", "--no-chunks",
                                   "-o", str(tmp_path / "out.json"), "--creds", USER], env)
    seen = b""

    def read_until(needle: bytes) -> None:
        nonlocal seen
        while needle not in seen:
            ready, _, _ = select.select([fd], [], [], 60)
            assert ready, seen
            try:
                data = os.read(fd, 4096)
            except OSError:      # EIO: the child closed the terminal
                data = b""
            assert data, seen
            seen += data

    try:
        read_until(f"Password for {USER}: ".encode())
        os.write(fd, PASSWORD.encode() + b"\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert PASSWORD.encode() not in seen        # not echoed
    assert "/etc/hostname" in (tmp_path / "out.json").read_text()
