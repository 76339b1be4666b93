# The benchmark closure, built by real nix-build into a chroot store by bench/run.
# Like tests/data/fixture.nix, its builder is a static busybox added with `nix-store --add`
# (passed in as `bb`), so the builds need no network and nothing from the host.
#
# The closure of `top` is about 600 MiB in 39 paths, shaped like a real one: one exactly
# 256 MiB file (3/4 text, 1/4 pseudo-random, in 1 MiB stripes), two incompressible blobs,
# six "packages" mixing a binary-like file, text and a library, three trees of 2000 small
# files each, and a chain of 24 small libraries that reference each other. Text is numbers
# from `seq` (zstd: about 4:1) or `xxd` dumps (about 2:1); random data is /dev/urandom,
# so every build has new contents (and new hashes).
#
# `wave` is the smaller closure of the job-wave benchmark (bench/wave): about 100 MiB of NAR
# in 42 paths, what a job's software stack looks like: an incompressible 16 MiB blob, a
# 24 MiB data file, four small packages, two trees of 1000 small files and a chain of 32
# small libraries.
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
  # Writes `mib` 1 MiB stripes to `to`: `text` KiB of numbers from seq, then
  # (1024 - text) KiB of random bytes.
  stripes = { mib, text, seed, to }: ''
    i=0
    while [ $i -lt ${toString mib} ]; do
      s=$(( (i + ${toString seed}) * 100000 ))
      seq $s $((s + 200000)) | head -c $(( ${toString text} * 1024 ))
      head -c $(( (1024 - ${toString text}) * 1024 )) /dev/urandom
      i=$((i + 1))
    done > ${to}
  '';
  pkg = i: pkgOf { inherit i; mib = 12; doc = 2; };
  pkgOf = { i, mib, doc }: mk "pkg-${toString i}" ''
    mkdir -p $out/bin $out/lib $out/share/doc
    # A "binary": random code with text sections (strings, tables).
    ${stripes { inherit mib; text = 384; seed = i * 1000; to = "$out/bin/prog-${toString i}"; }}
    chmod 755 $out/bin/prog-${toString i}
    ${stripes { inherit mib; text = 640; seed = i * 1000 + 500; to = "$out/lib/libpkg${toString i}.so"; }}
    head -c $((${toString doc} * 1048576)) /dev/urandom | xxd > $out/share/doc/manual.txt
    ln -s prog-${toString i} $out/bin/prog
    echo ${lib 23} > $out/lib/deps
  '';
  tree = i: treeOf { inherit i; files = 2000; };
  treeOf = { i, files }: mk "tree-${toString i}" ''
    mkdir $out
    j=0
    while [ $j -lt 40 ]; do mkdir $out/d$j; j=$((j + 1)); done
    j=0
    while [ $j -lt ${toString files} ]; do
      size=$(( 512 + (j * 7919 + ${toString i} * 104729) % 15872 ))
      if [ $((j % 2)) -eq 0 ]; then
        seq $((j * 1000)) $((j * 1000 + 4000)) | head -c $size > $out/d$((j % 40))/f$j.txt
      else
        head -c $size /dev/urandom > $out/d$((j % 40))/f$j.bin
      fi
      j=$((j + 1))
    done
  '';
  lib = i: mk "lib-${toString i}" ''
    mkdir -p $out/lib $out/include $out/share
    head -c 131072 /dev/urandom > $out/lib/lib${toString i}.so
    seq ${toString (i * 10000)} ${toString (i * 10000 + 15000)} > $out/include/lib${toString i}.h
    echo "library ${toString i}" > $out/share/README
    ${if i > 0 then "echo ${lib (i - 1)} > $out/share/dep" else "true"}
  '';
in rec {
  big = mk "big-256MiB" ''
    ${stripes { mib = 256; text = 768; seed = 0; to = "$out"; }}
  '';
  random64 = mk "random-64MiB" "head -c 67108864 /dev/urandom > $out";
  random32 = mk "random-32MiB" "head -c 33554432 /dev/urandom > $out";
  top = mk "top" ''
    mkdir $out
    echo ${big} ${random64} ${random32} ${busybox} > $out/closure
    echo ${toString (builtins.genList pkg 6)} >> $out/closure
    echo ${toString (builtins.genList tree 3)} >> $out/closure
  '';
  wave = mk "wave" ''
    mkdir $out
    echo ${mk "blob-16MiB" "head -c 16777216 /dev/urandom > $out"} > $out/closure
    echo ${mk "data-24MiB" (stripes { mib = 24; text = 768; seed = 7; to = "$out"; })} >> $out/closure
    echo ${toString (builtins.genList (i: pkgOf { i = 10 + i; mib = 3; doc = 1; }) 4)} >> $out/closure
    echo ${toString (builtins.genList (i: treeOf { i = 10 + i; files = 1000; }) 2)} >> $out/closure
    echo ${lib 31} ${busybox} >> $out/closure
  '';
}
