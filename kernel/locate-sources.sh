#!/usr/bin/env bash
# Prints the directory of the seL4 5.0.0 kernel sources (the `seL4/` directory of the
# `sel4-sys` 0.0.28 crate pinned in kernel/fetch/Cargo.lock), downloading the crate
# through cargo first if it is not in cargo's cache yet. Used by kernel/build.sh and by
# the Makefile, which hands the path to crates/sel4-sys's build script.
set -euo pipefail
manifest="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fetch/Cargo.toml"
cargo fetch --locked --quiet --manifest-path "$manifest"
crate_manifest="$(cargo metadata --locked --format-version 1 --manifest-path "$manifest" \
    | python3 -c 'import json, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in pkgs if p["name"] == "sel4-sys" and p["version"] == "0.0.28"))')"
src="$(dirname "$crate_manifest")/seL4"
[ -f "$src/Makefile" ] && [ -f "$src/VERSION" ] || { echo "locate-sources: no kernel in $src" >&2; exit 1; }
echo "$src"
