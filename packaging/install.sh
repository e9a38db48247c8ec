#!/usr/bin/env bash
# Installs ext4box and its mount(8)/umount(8) helpers:
#   PREFIX/bin/ext4box                 the program
#   /sbin/mount.fuse.ext4box  -> it    so that `mount -t fuse.ext4box` and fstab lines work
#   /sbin/umount.fuse.ext4box -> it    so that `umount MNT` waits for the server like `ext4box unmount`
# Usage: packaging/install.sh [BINARY] [PREFIX]   (defaults: target/release/ext4box, /usr/local)
# Run as root. Undo with: packaging/install.sh --uninstall [PREFIX]
set -euo pipefail
if [[ ${1:-} == --uninstall ]]; then
    prefix=${2:-/usr/local}
    rm -f "$prefix/bin/ext4box" /sbin/mount.fuse.ext4box /sbin/umount.fuse.ext4box
    exit 0
fi
bin=${1:-target/release/ext4box}
prefix=${2:-/usr/local}
[[ -x $bin ]] || { echo "install.sh: no ext4box binary at $bin (cargo build --release)" >&2; exit 1; }
install -D -m 0755 "$bin" "$prefix/bin/ext4box"
ln -sf "$prefix/bin/ext4box" /sbin/mount.fuse.ext4box
ln -sf "$prefix/bin/ext4box" /sbin/umount.fuse.ext4box
echo "installed $prefix/bin/ext4box and the mount helpers /sbin/mount.fuse.ext4box, /sbin/umount.fuse.ext4box"
