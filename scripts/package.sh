#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with the `dist` profile (fat LTO, one codegen
# unit): the binary, then the man pages and shell completions it generates, then `cargo deb`.
# Installs cargo-deb from crates.io when missing. Prints the path of the .deb last.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

echo "== cargo build --profile dist"
cargo build --profile dist --bin postern
bin=target/dist/postern

# Generated from the binary's own command-line definitions, so they match what it accepts.
assets=target/dist-assets
rm -rf "$assets"
mkdir -p "$assets/man"
"$bin" man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/postern.bash"
"$bin" completions zsh >"$assets/_postern"
"$bin" completions fish >"$assets/postern.fish"

echo "== cargo deb --profile dist"
cargo deb --profile dist --no-build --output target/debian/ >/dev/null
ls -t target/debian/postern_*.deb | head -1
