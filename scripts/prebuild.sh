#!/usr/bin/env bash
# npm run build:prebuilds: the prebuilt binaries shipped in the npm package, built from the same
# sources and flags as the source build (binding.gyp, through node-gyp), one directory per
# architecture: prebuilds/linux-x64/ and, with Debian's cross compiler
# (g++-aarch64-linux-gnu), prebuilds/linux-arm64/, each holding dmsnap.node (Node-API:
# one per architecture serves every Node version) and dmsnap-guardian, stripped. Each is
# built in build/prebuild-ARCH/, so that a developer's build/Release stays as it was.
# Then packs the package into dist/package/dmsnap-VERSION.tgz, which the VM suite installs
# (test/vm/package.test.ts). As `prepack` (npm pack, npm publish) it builds the binaries only.
# (The npm script is not called "prebuild": npm runs a script of that name before every
# `npm run build`.)
#
#   DMSNAP_PREBUILD_ARCHES="x64 arm64"   the architectures to build; by default this
#                                        machine's, and arm64 when aarch64-linux-gnu-g++ is there
#   scripts/prebuild.sh --no-pack        the binaries only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The `npm pack` below runs prepack, which is this script: the binaries were just built.
[[ "${DMSNAP_PREBUILDS_FRESH:-}" == 1 ]] && exit 0
pack=1
[[ "${npm_lifecycle_event:-}" == prepack || "${1:-}" == --no-pack ]] && pack=0

# The newest glibc the prebuilds may need, as README.md ("Installing") promises: a build
# machine with a newer glibc can raise it without anyone noticing, so that fails here.
MAX_GLIBC=2.34

host=$(node -p process.arch)
arches=${DMSNAP_PREBUILD_ARCHES:-$host}
if [[ -z "${DMSNAP_PREBUILD_ARCHES:-}" && $host == x64 ]]; then
  if command -v aarch64-linux-gnu-g++ >/dev/null; then
    arches="$arches arm64"
  else
    echo "prebuild: no aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu): skipping linux-arm64" >&2
  fi
fi

declare -A cross=([arm64]=aarch64-linux-gnu- [x64]=x86_64-linux-gnu-)
declare -A machine=([arm64]=AArch64 [x64]=X86-64)

build() {
  local arch=$1 prefix='' stage=build/prebuild-$1 out=prebuilds/linux-$1
  [[ $arch != "$host" ]] && prefix=${cross[$arch]:?"prebuild: no cross compiler known for $arch"}
  rm -rf "$stage" "$out"
  mkdir -p "$stage" "$out"
  cp binding.gyp "$stage/"
  ln -s ../../native "$stage/native"
  echo "prebuild: building linux-$arch${prefix:+ with ${prefix}g++}"
  if ! (cd "$stage" && env ${prefix:+CC=${prefix}gcc CXX=${prefix}g++ LINK=${prefix}g++ AR=${prefix}ar} \
      ../../node_modules/.bin/node-gyp rebuild --arch="$arch" -j "$(nproc)" >build.log 2>&1); then
    cat "$stage/build.log" >&2
    echo "prebuild: the linux-$arch build failed (log above)" >&2
    exit 1
  fi
  "${prefix}strip" --strip-unneeded -o "$out/dmsnap.node" "$stage/build/Release/dmsnap.node"
  "${prefix}strip" --strip-all -o "$out/dmsnap-guardian" "$stage/build/Release/dmsnap-guardian"
  chmod 0755 "$out/dmsnap-guardian"
  chmod 0644 "$out/dmsnap.node"
  rm -rf "$stage"
  local file needs
  for file in "$out/dmsnap.node" "$out/dmsnap-guardian"; do
    readelf -h "$file" | grep -q "Machine:.*${machine[$arch]}" || { echo "prebuild: $file is not an ${machine[$arch]} ELF" >&2; exit 1; }
    needs=$(readelf -V "$file" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    if [[ $(printf '%s\n%s\n' "$needs" "$MAX_GLIBC" | sort -V | tail -1) != "$MAX_GLIBC" ]]; then
      echo "prebuild: $file needs glibc $needs, newer than the $MAX_GLIBC README.md promises: build on an older system" >&2
      exit 1
    fi
    echo "prebuild: $file ($(stat -c %s "$file") bytes, glibc >= $needs)"
  done
}

rm -rf prebuilds
for arch in $arches; do build "$arch"; done
rmdir build 2>/dev/null || true

# The prebuild of this machine must load here.
node -e "require('./prebuilds/linux-$host/dmsnap.node')"

if ((pack)); then
  rm -rf dist/package
  mkdir -p dist/package
  # With scripts: prepare compiles the TypeScript (prepack, this script, returns at once).
  DMSNAP_PREBUILDS_FRESH=1 npm pack --pack-destination dist/package --loglevel=warn >/dev/null
  echo "prebuild: packed $(ls dist/package/dmsnap-*.tgz) ($(stat -c %s dist/package/dmsnap-*.tgz) bytes)"
fi
