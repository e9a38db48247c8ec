//! The ext4 directory-entry hash used by htree (`dir_index`) directories.
//!
//! An indexed directory keeps its entries sorted by a 32-bit hash of the
//! entry name (see the kernel's Documentation/filesystems/ext4/directory.rst,
//! section "Hash Tree Directories"). To find or insert a name we must compute
//! exactly the same value the kernel would, bit for bit, so this module
//! follows fs/ext4/hash.c (`ext4fs_dirhash` and its helpers):
//!
//! * `legacy`   – `dx_hack_hash`, a simple multiplicative mixing loop;
//! * `half_md4` – the name is cut into 32-byte chunks, each packed into eight
//!   words and run through a three-round, cut-down MD4 transform;
//! * `tea`      – the name is cut into 16-byte chunks, each packed into four
//!   words and run through 16 rounds of TEA in a Davies–Meyer construction.
//!
//! Each comes in a "signed" and "unsigned" variant. They differ only in how a
//! name byte >= 0x80 is widened to `int`: the original code used plain
//! `char`, which is signed on x86 and unsigned on e.g. ARM/PowerPC, so the
//! same name hashed differently across architectures. The superblock flags
//! `EXT2_FLAGS_SIGNED_HASH` / `EXT2_FLAGS_UNSIGNED_HASH` record which one a
//! filesystem uses; see [`HashVersion::with_unsigned`].
//!
//! The casefold-only SipHash variant (hash version 6) is not supported.

/// Hash algorithm numbers as stored in dx_root.info.hash_version / s_def_hash_version.
///
/// On disk only the signed numbers 0..=2 normally appear in `dx_root`; the
/// unsigned twins (3..=5) are what the kernel switches to in memory when the
/// superblock says the filesystem uses unsigned hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashVersion {
    /// `DX_HASH_LEGACY` (0)
    Legacy,
    /// `DX_HASH_HALF_MD4` (1)
    HalfMd4,
    /// `DX_HASH_TEA` (2)
    Tea,
    /// `DX_HASH_LEGACY_UNSIGNED` (3)
    LegacyUnsigned,
    /// `DX_HASH_HALF_MD4_UNSIGNED` (4)
    HalfMd4Unsigned,
    /// `DX_HASH_TEA_UNSIGNED` (5)
    TeaUnsigned,
}

impl HashVersion {
    /// From the on-disk number (0..=5); None for anything else (siphash 6 is casefold-only and unsupported).
    pub fn from_disk(v: u8) -> Option<HashVersion> {
        match v {
            0 => Some(HashVersion::Legacy),
            1 => Some(HashVersion::HalfMd4),
            2 => Some(HashVersion::Tea),
            3 => Some(HashVersion::LegacyUnsigned),
            4 => Some(HashVersion::HalfMd4Unsigned),
            5 => Some(HashVersion::TeaUnsigned),
            _ => None,
        }
    }

    /// Given a signed variant and the superblock flag "unsigned directory hash" (s_flags & 0x2), return the unsigned twin; as the kernel does (hash_version += 3 when EXT2_FLAGS_UNSIGNED_HASH is set and version <= TEA).
    ///
    /// Versions that are already unsigned are returned unchanged, as are all
    /// versions when `unsigned` is false. (When a superblock has neither the
    /// signed (0x1) nor the unsigned (0x2) flag, the kernel falls back to the
    /// signedness of `char` on the running CPU; that choice is the caller's.)
    pub fn with_unsigned(self, unsigned: bool) -> HashVersion {
        if !unsigned {
            return self;
        }
        match self {
            HashVersion::Legacy => HashVersion::LegacyUnsigned,
            HashVersion::HalfMd4 => HashVersion::HalfMd4Unsigned,
            HashVersion::Tea => HashVersion::TeaUnsigned,
            already_unsigned => already_unsigned,
        }
    }

    /// Whether name bytes are widened as `unsigned char` (true) or `signed char`.
    fn is_unsigned(self) -> bool {
        matches!(self, HashVersion::LegacyUnsigned | HashVersion::HalfMd4Unsigned | HashVersion::TeaUnsigned)
    }
}

/// `EXT4_HTREE_EOF_32BIT`: the 32-bit hash value reserved to mean "end of
/// directory" in readdir positions, so no real name may hash to it.
const EXT4_HTREE_EOF_32BIT: u32 = 0x7fff_ffff;

/// The seed used when the superblock's `s_hash_seed` is all zero (the MD4
/// initial chaining values).
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Returns (major_hash, minor_hash) as the kernel's ext4fs_dirhash does: major has its low bit cleared (& ~1); if major == (EXT4_HTREE_EOF_32BIT << 1) i.e. 0x7fffffff<<1 then it becomes (0x7fffffff - 1) << 1 as the kernel does. seed: s_hash_seed as four u32 (little-endian words from the superblock); an all-zero seed means use the default buffer {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}. Names are bytes (not UTF-8); len up to 255.
///
/// The legacy hash ignores the seed and always has a minor hash of 0.
/// Longer names than 255 bytes are accepted and hashed the way the kernel's
/// code would treat them, but never occur on disk.
pub fn dir_hash(name: &[u8], version: HashVersion, seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().any(|&w| w != 0) { *seed } else { DEFAULT_SEED };
    let unsigned = version.is_unsigned();

    let (hash, minor_hash) = match version {
        HashVersion::Legacy | HashVersion::LegacyUnsigned => (dx_hack_hash(name, unsigned), 0),
        HashVersion::HalfMd4 | HashVersion::HalfMd4Unsigned => {
            let mut input = [0u32; 8];
            for chunk in name.chunks(32) {
                str2hashbuf(chunk, unsigned, &mut input);
                half_md4_transform(&mut buf, &input);
            }
            (buf[1], buf[2])
        }
        HashVersion::Tea | HashVersion::TeaUnsigned => {
            let mut input = [0u32; 4];
            for chunk in name.chunks(16) {
                str2hashbuf(chunk, unsigned, &mut input);
                tea_transform(&mut buf, &input);
            }
            (buf[0], buf[1])
        }
    };

    // The low bit is cleared so that hash | 1 can act as a "continued in the
    // next block" marker in dx entries; and the value that would collide with
    // the 32-bit EOF readdir cookie is nudged down one step.
    let mut hash = hash & !1;
    if hash == EXT4_HTREE_EOF_32BIT << 1 {
        hash = (EXT4_HTREE_EOF_32BIT - 1) << 1;
    }
    (hash, minor_hash)
}

/// Widens a name byte to the 32-bit value C's `(int) c` gives, for `signed
/// char` (sign-extended) or `unsigned char` (zero-extended), reinterpreted
/// as `__u32` the way the C arithmetic then uses it.
fn char_value(byte: u8, unsigned: bool) -> u32 {
    if unsigned { u32::from(byte) } else { u32::from_ne_bytes(i32::from(i8::from_ne_bytes([byte])).to_ne_bytes()) }
}

/// `dx_hack_hash`: the original (pre-2002) htree hash. Seedless, 31 bits of
/// state, returned shifted left by one.
fn dx_hack_hash(name: &[u8], unsigned: bool) -> u32 {
    let mut hash0: u32 = 0x12a3_fe2d;
    let mut hash1: u32 = 0x37ab_e8f9;
    for &byte in name {
        // C: hash1 + (hash0 ^ ((int) c * 7152373)), all mod 2^32.
        let mut hash = hash1.wrapping_add(hash0 ^ char_value(byte, unsigned).wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7fff_ffff);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// `str2hashbuf`: packs the first `4 * out.len()` bytes of `msg` big-endian
/// style into `out`, four bytes per word, and fills what the name does not
/// cover with a pad word made from the length (`len` repeated in every
/// byte). A trailing partial word starts from the pad value too, so its high
/// bytes carry the length.
///
/// The kernel passes the *remaining* name length here, not the chunk length.
/// Passing just the chunk is equivalent: the pad is only visible when the
/// chunk is short, i.e. the last one, where the two lengths are equal (a full
/// word shifts the pad out entirely).
fn str2hashbuf(msg: &[u8], unsigned: bool, out: &mut [u32]) {
    // C: (__u32)len | ((__u32)len << 8), then doubled up. Callers pass one
    // chunk (<= 32 bytes), so the cast never truncates.
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    let mut pad = len | (len << 8);
    pad |= pad << 16;

    let mut words = out.iter_mut();
    let mut val = pad;
    for (i, &byte) in msg.iter().take(words.len().saturating_mul(4)).enumerate() {
        val = (val << 8).wrapping_add(char_value(byte, unsigned));
        if i % 4 == 3 {
            if let Some(word) = words.next() {
                *word = val;
            }
            val = pad;
        }
    }
    // The next word gets the partial word (or just the pad if the name ended
    // on a word boundary); every word after that is pure pad.
    if let Some(word) = words.next() {
        *word = val;
    }
    for word in words {
        *word = pad;
    }
}

/// `TEA_transform`: 16 rounds of the Tiny Encryption Algorithm with the
/// four input words as the key, encrypting `buf[0..2]`, then added back into
/// the buffer (Davies–Meyer). `buf[2..4]` are left untouched.
fn tea_transform(buf: &mut [u32; 4], input: &[u32; 4]) {
    const DELTA: u32 = 0x9e37_79b9;
    let [a, b, c, d] = *input;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let mut sum: u32 = 0;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)));
        b1 = b1.wrapping_add(((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)));
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// `half_md4_transform`: MD4's three rounds cut down to eight steps each,
/// over eight input words instead of sixteen. All four buffer words are
/// updated; the caller picks which ones become the hash.
fn half_md4_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    // MD4 round functions: selection, majority, parity.
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    // Round constants: K2 = 013240474631 (sqrt 2), K3 = 015666365641 (sqrt 3).
    const K1: u32 = 0;
    const K2: u32 = 0x5a82_7999;
    const K3: u32 = 0x6ed9_eba1;

    // One step: a = rol(a + fun(b, c, d) + x, s).
    fn step(fun: fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, x: u32, s: u32) -> u32 {
        a.wrapping_add(fun(b, c, d)).wrapping_add(x).rotate_left(s)
    }

    let [mut a, mut b, mut c, mut d] = *buf;
    let [i0, i1, i2, i3, i4, i5, i6, i7] = *input;

    // Round 1
    a = step(f, a, b, c, d, i0.wrapping_add(K1), 3);
    d = step(f, d, a, b, c, i1.wrapping_add(K1), 7);
    c = step(f, c, d, a, b, i2.wrapping_add(K1), 11);
    b = step(f, b, c, d, a, i3.wrapping_add(K1), 19);
    a = step(f, a, b, c, d, i4.wrapping_add(K1), 3);
    d = step(f, d, a, b, c, i5.wrapping_add(K1), 7);
    c = step(f, c, d, a, b, i6.wrapping_add(K1), 11);
    b = step(f, b, c, d, a, i7.wrapping_add(K1), 19);

    // Round 2
    a = step(g, a, b, c, d, i1.wrapping_add(K2), 3);
    d = step(g, d, a, b, c, i3.wrapping_add(K2), 5);
    c = step(g, c, d, a, b, i5.wrapping_add(K2), 9);
    b = step(g, b, c, d, a, i7.wrapping_add(K2), 13);
    a = step(g, a, b, c, d, i0.wrapping_add(K2), 3);
    d = step(g, d, a, b, c, i2.wrapping_add(K2), 5);
    c = step(g, c, d, a, b, i4.wrapping_add(K2), 9);
    b = step(g, b, c, d, a, i6.wrapping_add(K2), 13);

    // Round 3
    a = step(h, a, b, c, d, i3.wrapping_add(K3), 3);
    d = step(h, d, a, b, c, i7.wrapping_add(K3), 9);
    c = step(h, c, d, a, b, i2.wrapping_add(K3), 11);
    b = step(h, b, c, d, a, i6.wrapping_add(K3), 15);
    a = step(h, a, b, c, d, i1.wrapping_add(K3), 3);
    d = step(h, d, a, b, c, i5.wrapping_add(K3), 9);
    c = step(h, c, d, a, b, i0.wrapping_add(K3), 11);
    b = step(h, b, c, d, a, i4.wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

#[cfg(test)]
mod tests;
