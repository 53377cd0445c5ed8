#!/usr/bin/env bash
# Build fastBPE's command line tool (the original XLM's tools/fastBPE/fast) into tools/fastBPE/fast,
# from fastBPE 0.1.0's PyPI source (the same fastBPE.hpp and main.cc as github.com/glample/fastBPE).
# tools/fastbpe uses it when present. Fails soft: without pip access or g++, it says so and exits 0,
# and tools/fastbpe runs its Python implementation, which writes the same bytes, only slower.
set -uo pipefail
cd "$(dirname "$0")"
[ -x fastBPE/fast ] && exit 0
SHA256=95eef4be2689e822a918ac4eae3349cd78ca3f28af591afa421f8fac6d4cd889
soft_fail() { echo "install_fastbpe.sh: $1; tools/fastbpe will use its Python implementation (same output, slower)" >&2; exit 0; }
command -v g++ > /dev/null || soft_fail "no g++"
TMP=$(mktemp -d) && trap 'rm -rf "$TMP"' EXIT
python -m pip download -q --no-deps --no-binary :all: fastBPE==0.1.0 -d "$TMP" > /dev/null 2>&1 ||
  soft_fail "could not download the fastBPE source"
echo "$SHA256  $TMP/fastBPE-0.1.0.tar.gz" | sha256sum -c --quiet - > /dev/null 2>&1 || soft_fail "unexpected fastBPE source checksum"
tar xzf "$TMP/fastBPE-0.1.0.tar.gz" -C "$TMP" || soft_fail "could not unpack the fastBPE source"
mkdir -p fastBPE
g++ -std=c++11 -pthread -O3 "$TMP/fastBPE-0.1.0/fastBPE/main.cc" -I"$TMP/fastBPE-0.1.0/fastBPE" -o fastBPE/fast.tmp ||
  soft_fail "g++ could not build fastBPE"
mv fastBPE/fast.tmp fastBPE/fast
echo "built tools/fastBPE/fast" >&2
