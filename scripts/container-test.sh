#!/usr/bin/env bash
# Builds the Containerfile with podman from local images only (no registry is reachable here) and runs
# the final image: mount an image from a volume, read and write it, unmount, then check it with e2fsck.
#   - localhost/debian:bookworm   debootstrap's minbase Debian (BASE_IMAGE)
#   - localhost/rust-local:HASH   that Debian with gcc and this machine's Rust toolchain and crate cache
#                                 (RUST_IMAGE; cargo runs offline; HASH is Cargo.lock's, so a new
#                                 dependency gets a new image)
# Both are built once and cached under $CTR_DIR. Needs root, podman, runc, debootstrap (scripts/setup.sh).
# Prints "container: ok" on success.
set -euo pipefail
cd "$(dirname "$0")/.."
CTR_DIR=${CTR_DIR:-/var/tmp/ext4box-container}
mkdir -p "$CTR_DIR"
# Two adjustments this machine needs (../shared/notes/facts.md): no default ulimits, runc and cgroupfs.
printf '[containers]\ndefault_ulimits = []\n' > "$CTR_DIR/containers.conf"
export CONTAINERS_CONF=$CTR_DIR/containers.conf
P=(podman --runtime runc --cgroup-manager cgroupfs)
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

if ! "${P[@]}" image exists localhost/debian:bookworm; then
    rm -rf "$CTR_DIR/rootfs"
    debootstrap --variant=minbase bookworm "$CTR_DIR/rootfs" "$mirror" > "$CTR_DIR/debootstrap.log"
    tar -C "$CTR_DIR/rootfs" -c . | "${P[@]}" import - localhost/debian:bookworm > /dev/null
fi
# The crate cache baked into the Rust image must hold what Cargo.lock names: one image per Cargo.lock.
rust_image=localhost/rust-local:$(sha256sum Cargo.lock | cut -c1-12)
if ! "${P[@]}" image exists "$rust_image"; then
    "${P[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/rust-local:' | xargs -r "${P[@]}" rmi -f > /dev/null 2>&1 || true
    root=$CTR_DIR/rustroot
    rm -rf "$root" && mkdir -p "$root"
    # From the base image itself, not debootstrap's tree: that may have been cleaned away since.
    cid=$("${P[@]}" create localhost/debian:bookworm true)
    "${P[@]}" export "$cid" | tar -C "$root" -x
    "${P[@]}" rm "$cid" > /dev/null
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq gcc libc6-dev' > "$CTR_DIR/gcc.log" 2>&1
    toolchain=$(rustc --print sysroot)
    mkdir -p "$root/usr/local/rust" "$root/root/.cargo"
    cp -a "$toolchain" "$root/usr/local/rust/toolchain"
    cp -a "${CARGO_HOME:-$HOME/.cargo}/registry" "$root/root/.cargo/"
    ln -sf /usr/local/rust/toolchain/bin/cargo "$root/usr/local/bin/cargo"
    ln -sf /usr/local/rust/toolchain/bin/rustc "$root/usr/local/bin/rustc"
    tar -C "$root" -c . | "${P[@]}" import --change 'ENV CARGO_NET_OFFLINE=true' - "$rust_image" > /dev/null
    rm -rf "$root"
fi
# Each build leaves its stages as untagged images (2.6 GB here): those of the builds before go first.
"${P[@]}" image prune -f > /dev/null 2>&1 || true
"${P[@]}" build --runtime runc --cgroup-manager cgroupfs \
    --build-arg RUST_IMAGE="$rust_image" --build-arg BASE_IMAGE=localhost/debian:bookworm \
    -t localhost/ext4box:test -f Containerfile . > "$CTR_DIR/build.log" 2>&1 \
    || { tail -20 "$CTR_DIR/build.log" >&2; exit 1; }

images=$CTR_DIR/images
rm -rf "$images" "$CTR_DIR/fill" && mkdir -p "$images" "$CTR_DIR/fill"
echo "from the host" > "$CTR_DIR/fill/hello.txt"
truncate -s 32M "$images/disk.img"
mkfs.ext4 -q -F -d "$CTR_DIR/fill" "$images/disk.img"
out=$("${P[@]}" run --rm --device /dev/fuse --cap-add SYS_ADMIN -v "$images:/images" localhost/ext4box:test sh -c '
    ext4box mount /images/disk.img /mnt &&
    cat /mnt/hello.txt &&
    echo "written in a container" > /mnt/new.txt &&
    grep -q " /mnt fuse.ext4box " /proc/mounts &&
    ext4box unmount /mnt && echo unmounted')
grep -q "from the host" <<<"$out" && grep -q unmounted <<<"$out" || { echo "container run failed: $out" >&2; exit 1; }
e2fsck -fn "$images/disk.img" > /dev/null
[[ $(debugfs -R "cat /new.txt" "$images/disk.img" 2>/dev/null) == "written in a container" ]] \
    || { echo "the file written in the container is not on the image" >&2; exit 1; }
echo "container: ok"
