#!/bin/sh
# Builds the release artefacts into dist/:
#   warbler-VERSION-x86_64-linux.tar.gz   static binary, install.sh, default config, unit,
#                                         README, NOTICE
#   warbler_VERSION-1_amd64.deb           (cargo-deb; metadata in Cargo.toml)
#   warbler-VERSION-1.x86_64.rpm          (cargo-generate-rpm; metadata in Cargo.toml)
# The binary is linked statically (glibc, +crt-static) so it runs on older distributions.
# Installs cargo-deb and cargo-generate-rpm with `cargo install` when they are missing.
#
#   sh packaging/build.sh            everything
#   sh packaging/build.sh --binary   only the static binary (prints its path)
set -eu
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
HOST=$(rustc -vV | sed -n 's/^host: //p')
[ "$HOST" = "$TARGET" ] || {
    echo "build.sh: builds on $TARGET only (this host is $HOST)" >&2
    exit 1
}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
BIN=target/$TARGET/release/warbler
DIST=dist
STAGE=target/packaging

step() { printf '\n== %s\n' "$*"; }

step "static release binary ($TARGET, +crt-static)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$TARGET"
if ldd "$BIN" 2>&1 | grep -q -e 'not a dynamic executable' -e 'statically linked'; then
    echo "ldd: $BIN is statically linked"
else
    ldd "$BIN" >&2 || true
    echo "build.sh: $BIN is dynamically linked" >&2
    exit 1
fi
echo "size: $(wc -c <"$BIN") bytes"
[ "${1:-}" != --binary ] || {
    echo "$BIN"
    exit 0
}

step "staged files"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$DIST"
# The packages' /etc/warbler/warbler.toml: the commented default, serving the network from
# /var/lib/warbler. Their postinst fills `hostnames` on the first install.
"$BIN" config print-default | sed \
    -e 's|^# listen = .*|listen = "0.0.0.0:8443"|' \
    -e 's|^# data_dir = .*|data_dir = "/var/lib/warbler"|' >"$STAGE/warbler.toml"
"$BIN" config check "$STAGE/warbler.toml"

step "release tarball"
name=warbler-$VERSION-x86_64-linux
tree=$STAGE/$name
mkdir -p "$tree"
cp "$BIN" "$tree/warbler"
cp install.sh "$tree/install.sh"
chmod 0755 "$tree/warbler" "$tree/install.sh"
"$BIN" config print-default >"$tree/warbler.toml"
cp packaging/systemd/warbler.service README.md packaging/NOTICE "$tree/"
cp docs/install.md "$tree/INSTALL.md"
tar -C "$STAGE" --owner=0 --group=0 -czf "$DIST/$name.tar.gz" "$name"
echo "$DIST/$name.tar.gz"

ensure_tool() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        step "cargo install $2"
        cargo install --locked "$2"
    fi
}

step ".deb"
ensure_tool deb cargo-deb
cargo deb --no-build --no-strip --target "$TARGET" --output "$DIST/"

step ".rpm"
ensure_tool generate-rpm cargo-generate-rpm
# gzip payload: zstd payloads need a newer rpm than some supported distributions carry.
cargo generate-rpm --target "$TARGET" --payload-compress gzip --output "$DIST/"

step "dist/"
ls -l "$DIST"
