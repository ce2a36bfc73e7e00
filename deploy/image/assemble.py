#!/usr/bin/env python3
"""Assembles the ferry-agent OCI image from files on this machine, without docker and without
a base image: one layer holding a minimal root filesystem, an image config, a manifest, and an
OCI image layout (oci-layout, index.json, blobs/sha256/...) that `crane push DIR REF` (or any
OCI tool: skopeo, oras, regctl) publishes.

Why a Python script (stdlib only: tarfile, gzip, hashlib, json): every byte of the image is
decided here, in ~250 readable lines, with nothing to build first; Python 3 is on every build
machine and CI image. A Rust tool would need its own crate and a compile before the first
image; docker would need a daemon and a base image download.

Deterministic by construction, so the same inputs give the same digest:
  * entries sorted by path, parents first; fixed modes; uid/gid 0 (the nonroot home: 65532),
    empty user/group names; every mtime = SOURCE_DATE_EPOCH (the commit time); USTAR format,
    so no PAX headers with atimes, xattrs or sub-second times;
  * gzip with a fixed header (no file name, mtime 0, OS byte fixed by Python) and level 9;
    the compressed bytes depend on the zlib implementation, the uncompressed layer (diff_id)
    only on the inputs;
  * JSON with sorted keys and no whitespace; `created` is SOURCE_DATE_EPOCH too.

The root filesystem (no shell, no package manager, nothing writable; the pod mounts emptyDirs at
/tmp and /cache and runs with readOnlyRootFilesystem):
  /usr/local/bin/ferry-agent, helm, kustomize   static executables (0755)
  /etc/passwd, /etc/group                       root and nonroot (65532:65532)
  /etc/nsswitch.conf                            hosts: files dns (a pod's /etc/hosts first,
                                                as glibc does not by default)
  /etc/ssl/certs/ca-certificates.crt            CA bundle (the build machine's, see README)
  /tmp (1777), /cache, /home/nonroot            mount points and the user's home

Usage: assemble.py --out DIR --agent F --helm F --kustomize F --ca-certs F --epoch N
                   --version V --revision R --source URL [--tag TAG]
Prints a JSON summary (digests and sizes) on stdout.
"""
import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

NONROOT = 65532
BIN_DIR = "usr/local/bin"
CA_PATH = "etc/ssl/certs/ca-certificates.crt"
GZIP_LEVEL = 9

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\n" f"nonroot:x:{NONROOT}:\n"
# glibc's default without this file is "hosts: dns [!UNAVAIL=return] files": with a reachable
# DNS server, /etc/hosts (a pod's hostAliases) would never be read.
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Blobs:
    """blobs/sha256/<hex> of an OCI layout, written once each."""

    def __init__(self, root):
        self.dir = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.dir, exist_ok=True)

    def add_bytes(self, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.dir, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to `inner`."""

    def __init__(self, inner):
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self):
        return True

    def tell(self):
        # tarfile asks where it starts; the stream is never seeked.
        return self.size

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)


def rootfs_entries(args):
    """(path, kind, mode, uid, source) for every entry, source = bytes or a file path."""
    with open(args.ca_certs, "rb") as f:
        ca = f.read()
    if b"BEGIN CERTIFICATE" not in ca:
        sys.exit(f"assemble: {args.ca_certs} holds no PEM certificate; pass --ca-certs FILE")
    entries = [
        ("cache", "dir", 0o755, 0, None),
        ("etc", "dir", 0o755, 0, None),
        ("etc/group", "file", 0o644, 0, GROUP.encode()),
        ("etc/nsswitch.conf", "file", 0o644, 0, NSSWITCH.encode()),
        ("etc/passwd", "file", 0o644, 0, PASSWD.encode()),
        ("etc/ssl", "dir", 0o755, 0, None),
        ("etc/ssl/certs", "dir", 0o755, 0, None),
        (CA_PATH, "file", 0o644, 0, ca),
        ("home", "dir", 0o755, 0, None),
        ("home/nonroot", "dir", 0o700, NONROOT, None),
        ("tmp", "dir", 0o1777, 0, None),
        ("usr", "dir", 0o755, 0, None),
        ("usr/local", "dir", 0o755, 0, None),
        (BIN_DIR, "dir", 0o755, 0, None),
    ]
    for name, path in (("ferry-agent", args.agent), ("helm", args.helm), ("kustomize", args.kustomize)):
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"\x7fELF":
            sys.exit(f"assemble: {path} is not an ELF executable (for /{BIN_DIR}/{name})")
        entries.append((f"{BIN_DIR}/{name}", "file", 0o755, 0, path))
    entries.sort(key=lambda e: e[0])
    return entries


def write_layer(entries, epoch, out):
    """The uncompressed layer tar into `out`: USTAR, fixed metadata, sorted."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, kind, mode, uid, source in entries:
            info = tarfile.TarInfo(path)
            info.mode = mode
            info.uid = info.gid = uid
            info.uname = info.gname = ""
            info.mtime = epoch
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(source, bytes):
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
            else:
                info.size = os.path.getsize(source)
                with open(source, "rb") as f:
                    tar.addfile(info, f)


def build(args):
    out = os.path.abspath(args.out)
    # Build next to the target and swap at the end: a failed run leaves the old layout intact.
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    blobs = Blobs(staging)
    entries = rootfs_entries(args)

    # Layer: tar -> (hash = diff_id) -> gzip -> (hash = blob digest) -> file.
    tmp_layer = os.path.join(blobs.dir, "layer.tmp")
    with open(tmp_layer, "wb") as raw:
        compressed = HashingWriter(raw)
        # filename="" and mtime=0: the gzip header carries neither a name nor a time.
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=compressed, mtime=0) as gz:
            uncompressed = HashingWriter(gz)
            write_layer(entries, args.epoch, uncompressed)
    layer_digest = "sha256:" + compressed.sha.hexdigest()
    diff_id = "sha256:" + uncompressed.sha.hexdigest()
    os.replace(tmp_layer, os.path.join(blobs.dir, compressed.sha.hexdigest()))

    created = datetime.datetime.fromtimestamp(args.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.description": "ferry-agent: the in-cluster (pull mode) agent of ferry, with helm and kustomize",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.title": "ferry-agent",
        "org.opencontainers.image.version": args.version,
        "dev.ferry.image.helm": args.helm_version,
        "dev.ferry.image.kustomize": args.kustomize_version,
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "author": "ferry",
        "config": {
            "User": f"{NONROOT}:{NONROOT}",
            "Entrypoint": [f"/{BIN_DIR}/ferry-agent"],
            "WorkingDir": "/home/nonroot",
            "Env": [
                "PATH=/usr/local/bin",
                # Found by Go (helm, kustomize) and rustls-native-certs at this path anyway;
                # the vendored OpenSSL under git2 would look in its build-time /usr/local/ssl.
                f"SSL_CERT_FILE=/{CA_PATH}",
                "HOME=/home/nonroot",
            ],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": "deploy/image/assemble.py (scripts/image)",
                "comment": "static ferry-agent, helm and kustomize; passwd/group for 65532; CA bundle",
            }
        ],
    }
    config_digest, config_size = blobs.add_bytes(canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": compressed.size,
            }
        ],
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.revision": args.revision,
            "org.opencontainers.image.source": args.source,
            "org.opencontainers.image.version": args.version,
        },
    }
    manifest_digest, manifest_size = blobs.add_bytes(canonical_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": args.tag},
            }
        ],
    }
    with open(os.path.join(staging, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(staging, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))

    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return {
        "layout": out,
        "manifest_digest": manifest_digest,
        "config_digest": config_digest,
        "layer_digest": layer_digest,
        "diff_id": diff_id,
        "layer_bytes_compressed": compressed.size,
        "layer_bytes_uncompressed": uncompressed.size,
        "created": created,
        "files": [e[0] for e in entries],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="OCI layout directory to (re)write")
    p.add_argument("--agent", required=True, help="static ferry-agent executable")
    p.add_argument("--helm", required=True, help="static helm executable")
    p.add_argument("--kustomize", required=True, help="static kustomize executable")
    p.add_argument("--helm-version", required=True)
    p.add_argument("--kustomize-version", required=True)
    p.add_argument("--ca-certs", default="/etc/ssl/certs/ca-certificates.crt", help="PEM CA bundle")
    p.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH: every mtime and 'created'")
    p.add_argument("--version", required=True)
    p.add_argument("--revision", required=True, help="git commit")
    p.add_argument("--source", required=True, help="repository URL (org.opencontainers.image.source)")
    p.add_argument("--tag", required=True, help="org.opencontainers.image.ref.name in index.json")
    args = p.parse_args()
    json.dump(build(args), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
