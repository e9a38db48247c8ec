//! fscrypt (the `encrypt` feature) as the kernel shows it without the key: the kernel's `fs/crypto/fname.c`
//! and `hooks.c`, read side.
//!
//! A FUSE server never has the key: it lives in the kernel's keyring, for the kernel's own mount. So an
//! encrypted directory is listed with the names the kernel shows when the key is absent ("no-key names"),
//! an encrypted symlink reads as the no-key encoding of its ciphertext, and an encrypted regular file cannot
//! be opened (ENOKEY). Backups and forensic walks of an image see what `ls` on a keyless kernel mount sees.
//!
//! A no-key name is the base64url encoding (RFC 4648 §5, no padding) of `struct fscrypt_nokey_name`:
//!
//! | bytes | field | holds |
//! |---|---|---|
//! | 0..8 | `dirhash[2]` | the entry's htree hash and minor hash when the listing walked the hash order, else 0 |
//! | 8..157 | `bytes[149]` | the ciphertext name, or its first 149 bytes |
//! | 157..189 | `sha256` | for a longer ciphertext: SHA-256 of the bytes after the first 149 |
//!
//! A short ciphertext is encoded whole (8 + its length bytes), so the name is exact; a longer one is
//! 189 bytes (252 characters, within NAME_MAX) and matched by prefix and digest.

use sha2::{Digest, Sha256};

/// `offsetof(struct fscrypt_nokey_name, bytes)`.
const DIRHASH_LEN: usize = 8;
/// `sizeof(nokey_name.bytes)`: the ciphertext bytes a no-key name carries.
const CIPHERTEXT_IN_NAME: usize = 149;
/// `offsetof(struct fscrypt_nokey_name, sha256)`.
const SHA256_AT: usize = DIRHASH_LEN + CIPHERTEXT_IN_NAME;
/// `FSCRYPT_NOKEY_NAME_MAX`: the whole struct.
const NOKEY_NAME_MAX: usize = SHA256_AT + 32;
/// `FSCRYPT_NOKEY_NAME_MAX_ENCODED`: its base64url length.
const NOKEY_NAME_MAX_ENCODED: usize = encoded_len(NOKEY_NAME_MAX);
/// `FSCRYPT_FNAME_MIN_MSG_LEN`: names are padded to at least one cipher block before encryption, so a
/// shorter ciphertext is damage (the kernel answers EUCLEAN).
pub const MIN_CIPHERTEXT: usize = 16;

/// The name programs see for an entry whose on-disk (encrypted) name is `ciphertext`. `hash` is the entry's
/// htree hash pair when the kernel would list the directory in hash order (see
/// `Filesystem::nokey_dirhash`), `None` when it lists it linearly. `.` and `..` are not encrypted and keep
/// their names.
pub fn nokey_name(ciphertext: &[u8], hash: Option<(u32, u32)>) -> Vec<u8> {
    if ciphertext == b"." || ciphertext == b".." {
        return ciphertext.to_vec();
    }
    let (major, minor) = hash.unwrap_or((0, 0));
    let mut raw = Vec::with_capacity(NOKEY_NAME_MAX);
    raw.extend_from_slice(&major.to_le_bytes());
    raw.extend_from_slice(&minor.to_le_bytes());
    if ciphertext.len() <= CIPHERTEXT_IN_NAME {
        raw.extend_from_slice(ciphertext);
    } else {
        let (head, rest) = ciphertext.split_at(CIPHERTEXT_IN_NAME);
        raw.extend_from_slice(head);
        raw.extend_from_slice(&Sha256::digest(rest));
    }
    base64url_encode(&raw)
}

/// A name a program looked up in an encrypted directory, decoded (the kernel's `fscrypt_setup_filename`
/// without the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoKeyName {
    /// The whole ciphertext: an entry matches when its name is exactly this.
    Whole(Vec<u8>),
    /// A long ciphertext's first bytes and the digest of the rest, with the htree hash the listing put in
    /// the name (0 when the directory was listed linearly).
    Long { hash: u32, head: Vec<u8>, digest: [u8; 32] },
}

impl NoKeyName {
    /// Decodes `name`; `None` when it cannot be a no-key name (the kernel answers ENOENT).
    pub fn parse(name: &[u8]) -> Option<NoKeyName> {
        if name.len() > NOKEY_NAME_MAX_ENCODED {
            return None;
        }
        let raw = base64url_decode(name)?;
        if raw.len() == NOKEY_NAME_MAX {
            let hash = u32::from_le_bytes(raw[..4].try_into().ok()?);
            let head = raw[DIRHASH_LEN..SHA256_AT].to_vec();
            let digest = raw[SHA256_AT..].try_into().ok()?;
            return Some(NoKeyName::Long { hash, head, digest });
        }
        if raw.len() <= DIRHASH_LEN || raw.len() > SHA256_AT {
            return None;
        }
        Some(NoKeyName::Whole(raw[DIRHASH_LEN..].to_vec()))
    }

    /// Whether the entry whose on-disk name is `disk` is the one this name stands for (`fscrypt_match_name`).
    pub fn matches(&self, disk: &[u8]) -> bool {
        match self {
            NoKeyName::Whole(ciphertext) => disk == ciphertext.as_slice(),
            NoKeyName::Long { head, digest, .. } => {
                disk.len() > CIPHERTEXT_IN_NAME
                    && disk[..CIPHERTEXT_IN_NAME] == head[..]
                    && Sha256::digest(&disk[CIPHERTEXT_IN_NAME..]).as_slice() == digest
            }
        }
    }
}

/// The ciphertext of an encrypted symlink's target: `struct fscrypt_symlink_data`, a little-endian 16-bit
/// length and that many bytes. `None` when the length is zero or overruns the data (EUCLEAN in the kernel).
pub fn symlink_ciphertext(data: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_le_bytes([*data.first()?, *data.get(1)?]));
    if len == 0 {
        return None;
    }
    data.get(2..2usize.checked_add(len)?)
}

/// The length of the target an encrypted symlink of `i_size` bytes reads as: what the kernel's
/// `fscrypt_symlink_getattr` reports as its size, so `stat` and `readlink` agree.
pub fn nokey_symlink_len(i_size: u64) -> u64 {
    let ciphertext = usize::try_from(i_size.saturating_sub(2)).unwrap_or(usize::MAX);
    let raw = if ciphertext <= CIPHERTEXT_IN_NAME { DIRHASH_LEN.saturating_add(ciphertext) } else { NOKEY_NAME_MAX };
    u64::try_from(encoded_len(raw)).unwrap_or(u64::MAX)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters of the unpadded base64url encoding of `n` bytes.
const fn encoded_len(n: usize) -> usize {
    n.saturating_mul(4).div_ceil(3)
}

/// Unpadded base64url, as the kernel's `fscrypt_base64url_encode`.
#[expect(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    reason = "bits stays below 14 (8 in, 6 out while at least 6) and the 6-bit masks index the 64-letter alphabet"
)]
fn base64url_encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(src.len()));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in src {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize]);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize]);
    }
    out
}

/// The kernel's `fscrypt_base64url_decode`: `None` for a character outside the alphabet or leftover bits
/// that are not zero (so every name has one decoding and one encoding).
#[expect(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    reason = "bits stays below 14 (6 in, 8 out while at least 8), acc is masked to 12 bits, a position is below 64"
)]
fn base64url_decode(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in src {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = ((acc << 6) | v) & 0xfff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_rfc4648_without_padding() {
        assert_eq!(base64url_encode(b""), b"");
        assert_eq!(base64url_encode(b"f"), b"Zg");
        assert_eq!(base64url_encode(b"fo"), b"Zm8");
        assert_eq!(base64url_encode(b"foo"), b"Zm9v");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), b"-_8");
        assert_eq!(base64url_decode(b"-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode(b"Zm9vYg").unwrap(), b"foob");
        // Leftover bits must be zero, and padding or other characters are not base64url.
        assert_eq!(base64url_decode(b"Zh"), None);
        assert_eq!(base64url_decode(b"Zg=="), None);
        assert_eq!(base64url_decode(b"Z+"), None);
    }

    #[test]
    fn short_ciphertexts_are_named_whole_and_found_exactly() {
        let ct: Vec<u8> = (0..32u8).collect();
        let name = nokey_name(&ct, Some((0x1234_5678, 0x9abc_def0)));
        assert_eq!(name.len(), encoded_len(8 + 32));
        let parsed = NoKeyName::parse(&name).unwrap();
        assert_eq!(parsed, NoKeyName::Whole(ct.clone()));
        assert!(parsed.matches(&ct));
        assert!(!parsed.matches(&ct[..31]));
        assert_eq!(nokey_name(b"..", None), b"..");
    }

    #[test]
    fn long_ciphertexts_are_named_by_prefix_and_digest() {
        let ct: Vec<u8> = (0..240u32).map(|i| (i * 7) as u8).collect();
        let name = nokey_name(&ct, Some((0xfeed_0000, 1)));
        assert_eq!(name.len(), NOKEY_NAME_MAX_ENCODED);
        assert!(name.len() <= 255);
        let parsed = NoKeyName::parse(&name).unwrap();
        assert!(matches!(parsed, NoKeyName::Long { hash: 0xfeed_0000, .. }));
        assert!(parsed.matches(&ct));
        let mut other = ct.clone();
        other[200] ^= 1;
        assert!(!parsed.matches(&other));
        assert!(!parsed.matches(&ct[..149]));
    }

    #[test]
    fn names_that_cannot_be_no_key_names_are_not_found() {
        assert_eq!(NoKeyName::parse(b"hello.txt"), None);
        assert_eq!(NoKeyName::parse(&base64url_encode(&[0; 8])), None);
        assert_eq!(NoKeyName::parse(&base64url_encode(&[0; 158])), None);
        assert_eq!(NoKeyName::parse(&[b'A'; 253]), None);
    }

    #[test]
    fn symlink_targets_are_their_ciphertext_length_prefixed() {
        assert_eq!(symlink_ciphertext(&[3, 0, 1, 2, 3, 9]), Some(&[1u8, 2, 3][..]));
        assert_eq!(symlink_ciphertext(&[4, 0, 1, 2, 3]), None);
        assert_eq!(symlink_ciphertext(&[0, 0]), None);
        assert_eq!(symlink_ciphertext(&[1]), None);
        assert_eq!(nokey_symlink_len(2 + 16), encoded_len(24) as u64);
        assert_eq!(nokey_symlink_len(2 + 400), 252);
    }
}
