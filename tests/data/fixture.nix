# The e2e fixture closure, built by real nix-build into a chroot store.
# Its builder is a static busybox added with `nix-store --add` (passed in as `bb`), so the
# builds need no network and nothing from the host. The closure of `top` covers what the
# server must get right: references (a chain and a self-reference), derivers and build logs,
# content-addressed paths, a 256 MiB file, a 20 000-file tree, symlinks of every kind,
# executables, empty files and directories, unicode names and deep nesting.
{ bb }:
let
  busybox = builtins.storePath bb;
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "${busybox}/bin/sh";
    args = [ "-c" ("set -e; ${busybox}/bin/busybox mkdir -p $TMPDIR/bin; "
      + "${busybox}/bin/busybox --install -s $TMPDIR/bin; export PATH=$TMPDIR/bin; " + script) ];
  };
  chain = builtins.genList (i: i) 15;
  lib = i: mk "lib-${toString i}" ''
    echo "subserve-fixture-log: building lib-${toString i}"
    mkdir -p $out/share
    echo "library ${toString i}" > $out/share/lib.txt
    ${if i > 0 then "echo ${lib (i - 1)} > $out/share/dep" else "true"}
  '';
  fixed = derivation {
    name = "fixed-output.txt";
    system = builtins.currentSystem;
    builder = "${busybox}/bin/sh";
    args = [ "-c" "echo fixed-output > $out" ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "fixed-output\n";
  };
in rec {
  inherit fixed;
  big = mk "big-256MiB" ''
    echo "subserve-fixture-log: building big"
    seq 1 40000000 | head -c 268435456 > $out
  '';
  tree = mk "tree-20k" ''
    echo "subserve-fixture-log: building tree"
    mkdir $out
    i=0
    while [ $i -lt 100 ]; do mkdir $out/d$i; i=$((i + 1)); done
    i=0
    while [ $i -lt 20000 ]; do echo "file $i" > $out/d$((i % 100))/f$i; i=$((i + 1)); done
  '';
  odd = mk "odd-files" ''
    echo "subserve-fixture-log: building odd"
    mkdir -p $out/empty-dir $out/bin
    printf '#!/bin/sh\necho hi\n' > $out/bin/script
    chmod 755 $out/bin/script
    touch $out/empty-file
    ln -s bin/script $out/relative-link
    ln -s ${fixed} $out/absolute-link
    ln -s does-not-exist $out/dangling-link
    echo unicode > "$out/héllo wörld ☃"
    echo upper > $out/B
    echo lower > $out/a
    d=$out/deep; i=0
    while [ $i -lt 30 ]; do d=$d/d$i; i=$((i + 1)); done
    mkdir -p $d && echo bottom > $d/file
    echo $out > $out/self-reference
  '';
  top = mk "top" ''
    echo "subserve-fixture-log: building top"
    mkdir $out
    echo ${big} ${tree} ${odd} ${lib 14} ${fixed} ${busybox} > $out/closure
  '';
}
