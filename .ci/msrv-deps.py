#!/usr/bin/env python3
"""Checks that the locked dependencies of the published crates build on their declared MSRV.

Reads `cargo metadata --locked --all-features` and walks, from token-mgmt and token-mgmt-macros,
the normal and build dependencies (not dev: they never reach a user); every package reached must
declare a `rust-version` no newer than the workspace's (Cargo.toml `rust-version`). The benches crate
is not a root: it declares its own, newer MSRV for a peer crate.
"""

import json
import subprocess
import sys

ROOTS = ("token-mgmt", "token-mgmt-macros")


def version_tuple(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    members = set(metadata["workspace_members"])
    roots = [i for i in members if packages[i]["name"] in ROOTS]
    if len(roots) != len(ROOTS):
        sys.exit(f"msrv-deps: expected workspace members {ROOTS}")
    msrv = {packages[i]["rust_version"] for i in roots}
    if len(msrv) != 1 or None in msrv:
        sys.exit(f"msrv-deps: the published crates must declare one rust-version, found {msrv}")
    msrv = msrv.pop()

    seen, stack = set(roots), list(roots)
    while stack:
        for dep in nodes[stack.pop()]["deps"]:
            if any(kind["kind"] != "dev" for kind in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])

    too_new = sorted(
        (packages[i]["name"], packages[i]["version"], packages[i]["rust_version"])
        for i in seen
        if packages[i]["rust_version"]
        and version_tuple(packages[i]["rust_version"]) > version_tuple(msrv)
    )
    for name, version, needs in too_new:
        print(f"msrv-deps: {name} {version} needs Rust {needs}, newer than rust-version {msrv}")
    if too_new:
        sys.exit(1)
    print(f"msrv-deps: {len(seen)} packages of the published crates build on Rust {msrv}")


if __name__ == "__main__":
    main()
