#!/bin/sh
# Copies the workspace's manifests and lock file from SRC to DEST with every crate's target
# files replaced by stubs, so that the image build compiles the dependencies in a layer of
# their own: that layer is rebuilt only when a manifest or Cargo.lock changes, not when a
# source file does. (What cargo-chef does, without a tool to install.)
#
# Usage: docker/cargo-skeleton.sh SRC DEST
set -eu
src=$1
dest=$2
cd "$src"
mkdir -p "$dest"
cp Cargo.toml Cargo.lock "$dest/"
find . -mindepth 2 -name Cargo.toml -not -path '*/target/*' | while read -r manifest; do
  crate=$(dirname "$manifest")
  mkdir -p "$dest/$crate"
  cp "$manifest" "$dest/$manifest"
  # Target roots: the conventional ones that exist, and every `path = "….rs"` the manifest
  # declares. Build scripts are kept as they are, since they may matter to the dependencies.
  roots=$(
    for f in src/lib.rs src/main.rs; do [ -f "$crate/$f" ] && echo "$f"; done
    ls "$crate"/src/bin/*.rs 2>/dev/null | sed "s#^$crate/##"
    sed -n 's/^ *path *= *"\([^"]*\.rs\)".*/\1/p' "$manifest"
  )
  for root in $roots; do
    mkdir -p "$(dirname "$dest/$crate/$root")"
    case "$root" in
      build.rs) cp "$crate/build.rs" "$dest/$crate/build.rs" ;;
      */main.rs | src/bin/*) printf '//! Stub.\nfn main() {}\n' > "$dest/$crate/$root" ;;
      *) echo '//! Stub.' > "$dest/$crate/$root" ;;
    esac
  done
  if [ -f "$crate/build.rs" ]; then cp "$crate/build.rs" "$dest/$crate/build.rs"; fi
done
# Equal stubs must make an equal layer, whenever they were written.
find "$dest" -exec touch -h -d @0 {} +
