//! Case-insensitive directories (the `casefold` feature, `chattr +F`): the kernel's `fs/unicode` and
//! `generic_ci_match`.
//!
//! A directory flagged `EXT4_CASEFOLD_FL` stores names as given but finds them by their casefolded form:
//! the UTF-8 name decomposed (NFD) and case folded (Unicode full case folding), the kernel's `NFDICF`.
//! Its htree is ordered by the hash of the folded name. The superblock names the encoding
//! (`s_encoding`: 1 is UTF-8, Unicode 12.1, the only one the kernel knows) and whether it is strict
//! (`s_encoding_flags`): in strict mode a name that is not valid UTF-8 cannot be created; otherwise such a
//! name is an opaque byte string, hashed and compared as it is.
//!
//! Folding uses the `caseless` and `unicode-normalization` crates. Their tables are of a later Unicode
//! (16 and 18) than the kernel's 12.1: the mappings of characters 12.1 already had are the same (Unicode
//! keeps case folding and decompositions of assigned characters stable), but characters assigned since
//! (a few rare scripts, such as Vithkuqi and Garay capitals) fold here and not in the kernel.

use caseless::default_case_fold_str;
use unicode_normalization::UnicodeNormalization;

use super::error::{Error, Result};
use super::features::INCOMPAT_CASEFOLD;
use super::superblock::Superblock;

/// `EXT4_ENC_UTF8_12_1`.
const ENCODING_UTF8_12_1: u16 = 1;
/// `EXT4_ENC_STRICT_MODE_FL`.
const STRICT_MODE: u16 = 0x1;

/// The filesystem's name encoding, with `casefold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Names that are not valid UTF-8 are refused (EINVAL) instead of kept as opaque bytes.
    pub strict: bool,
}

impl Encoding {
    /// The encoding the superblock names; `None` without casefold, an error for an encoding the kernel
    /// does not know either.
    pub fn from_superblock(sb: &Superblock) -> Result<Option<Encoding>> {
        if !sb.has_incompat(INCOMPAT_CASEFOLD) {
            return Ok(None);
        }
        if sb.encoding != ENCODING_UTF8_12_1 {
            return Err(Error::Unsupported(format!("unknown filename encoding {} (casefold)", sb.encoding)));
        }
        if sb.encoding_flags & !STRICT_MODE != 0 {
            return Err(Error::Unsupported(format!("unknown encoding flags {:#x} (casefold)", sb.encoding_flags)));
        }
        Ok(Some(Encoding { strict: sb.encoding_flags & STRICT_MODE != 0 }))
    }

    /// Whether `name` may be created in a casefolded directory (strict mode refuses invalid UTF-8).
    pub fn check_new_name(&self, name: &[u8]) -> Result<()> {
        if self.strict && std::str::from_utf8(name).is_err() { Err(Error::Invalid) } else { Ok(()) }
    }
}

/// The casefolded form of `name` (NFD of its full case folding), `None` when it is not valid UTF-8.
pub fn fold(name: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(name).ok()?;
    Some(default_case_fold_str(s).nfd().collect::<String>().into_bytes())
}

/// A name looked up in a casefolded directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedName {
    /// The name as given.
    pub name: Vec<u8>,
    /// Its folded form; `None` for a name that is not valid UTF-8.
    pub folded: Option<Vec<u8>>,
    pub strict: bool,
}

impl FoldedName {
    pub fn new(name: &[u8], enc: Encoding) -> FoldedName {
        FoldedName { name: name.to_vec(), folded: fold(name), strict: enc.strict }
    }

    /// What the directory's htree hashes for this name: the folded form, or the bytes themselves.
    pub fn hash_input(&self) -> &[u8] {
        self.folded.as_deref().unwrap_or(&self.name)
    }

    /// Whether the entry stored as `disk` is this name (`generic_ci_match`): equal folded forms; a name
    /// that cannot be folded matches only itself, byte for byte, and in strict mode nothing.
    pub fn matches(&self, disk: &[u8]) -> bool {
        match (&self.folded, fold(disk)) {
            (Some(a), Some(b)) => *a == b,
            (Some(_), None) => !self.strict && disk == self.name.as_slice(),
            // Not foldable itself: only its own bytes, as the kernel's exact match.
            (None, _) => disk == self.name.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_nfd_of_their_full_case_folding() {
        assert_eq!(fold(b"README.md").unwrap(), b"readme.md");
        // Full folding: sharp s is "ss"; the Kelvin sign is k; a precomposed letter is decomposed.
        assert_eq!(fold("Straße".as_bytes()).unwrap(), b"strasse");
        assert_eq!(fold("\u{212A}".as_bytes()).unwrap(), b"k");
        assert_eq!(fold("Å".as_bytes()), fold("a\u{30A}".as_bytes()));
        assert_eq!(fold("ÉCOLE".as_bytes()).unwrap(), "e\u{301}cole".as_bytes());
        assert_eq!(fold(b"\xff\xfe"), None);
    }

    #[test]
    fn matching_follows_generic_ci_match() {
        let loose = Encoding { strict: false };
        let n = FoldedName::new("Steam".as_bytes(), loose);
        assert!(n.matches(b"steam") && n.matches(b"STEAM") && !n.matches(b"steamapps"));
        let bad = FoldedName::new(b"a\xff", loose);
        assert!(bad.matches(b"a\xff") && !bad.matches(b"A\xff"));
        let strict = FoldedName::new("a".as_bytes(), Encoding { strict: true });
        assert!(!strict.matches(b"a\xff") && strict.matches(b"A"));
        assert!(Encoding { strict: true }.check_new_name(b"a\xff").is_err());
        assert!(loose.check_new_name(b"a\xff").is_ok());
    }
}
