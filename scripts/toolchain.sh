# Sourced by scripts/local-env.sh: makes the toolchain rust-toolchain.toml pins
# available without a download where that is possible. These machines have one
# toolchain, installed as `stable`, and no access to rustup's server; when that
# toolchain is the pinned version, it is linked under the pinned name (rustup's
# own `toolchain link` refuses a version as a name).
_pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")
if command -v rustup >/dev/null 2>&1 &&
  ! RUSTUP_TOOLCHAIN=stable rustup toolchain list 2>/dev/null | grep -q "^$_pinned-"; then
  _stable=$(RUSTUP_TOOLCHAIN=stable rustc --version 2>/dev/null | cut -d' ' -f2)
  if [ "$_stable" = "$_pinned" ]; then
    _host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
    ln -s "$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)" \
      "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$_pinned-$_host"
    echo "[toolchain] Rust $_pinned (rust-toolchain.toml) is this machine's stable: linked" >&2
  fi
fi
unset _pinned _stable _host
