//! Encoding replies: the typed values a handler returns ([`FileAttr`], [`Entry`], ...) as the kernel's
//! structs, and a [`Response`] that a transport frames with its `fuse_out_header`.

use std::time::Duration;

use zerocopy::IntoBytes;

use super::abi;

/// A time as the kernel keeps it: seconds since the epoch (negative before 1970) and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// A file's type, as `st_mode`'s format bits and as a directory entry's `d_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    NamedPipe,
    CharDevice,
    Directory,
    BlockDevice,
    RegularFile,
    Symlink,
    Socket,
}

impl FileType {
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::NamedPipe => 0o010000,
            FileType::CharDevice => 0o020000,
            FileType::Directory => 0o040000,
            FileType::BlockDevice => 0o060000,
            FileType::RegularFile => 0o100000,
            FileType::Symlink => 0o120000,
            FileType::Socket => 0o140000,
        }
    }

    /// `DT_*`: the format bits shifted down.
    pub fn dirent_type(self) -> u32 {
        self.mode_bits() >> 12
    }
}

/// `STATX_ATTR_*` bits a file may carry (`statx(2)`).
pub mod statx_attr {
    pub const COMPRESSED: u64 = 0x4;
    pub const IMMUTABLE: u64 = 0x10;
    pub const APPEND: u64 = 0x20;
    pub const NODUMP: u64 = 0x40;
    pub const ENCRYPTED: u64 = 0x800;
    pub const VERITY: u64 = 0x100000;
    /// The ones this server reports (as the kernel's ext4 does).
    pub const SUPPORTED: u64 = COMPRESSED | IMMUTABLE | APPEND | NODUMP | ENCRYPTED | VERITY;
}

/// A file's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttr {
    pub ino: u64,
    pub size: u64,
    /// In 512-byte units.
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// The creation time, where the filesystem keeps one (statx's btime).
    pub crtime: Option<Time>,
    pub kind: FileType,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    /// `STATX_ATTR_*` bits.
    pub attributes: u64,
}

impl FileAttr {
    pub fn to_abi(&self) -> abi::Attr {
        abi::Attr {
            ino: self.ino,
            size: self.size,
            blocks: self.blocks,
            // Two's complement: the kernel reads these as signed 64-bit seconds.
            atime: self.atime.sec as u64,
            mtime: self.mtime.sec as u64,
            ctime: self.ctime.sec as u64,
            atimensec: self.atime.nsec,
            mtimensec: self.mtime.nsec,
            ctimensec: self.ctime.nsec,
            mode: self.kind.mode_bits() | u32::from(self.perm),
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: self.blksize,
            flags: 0,
        }
    }

    pub fn to_statx(&self) -> abi::Statx {
        const BASIC_STATS: u32 = 0x7ff;
        const BTIME: u32 = 0x800;
        let t = |t: Time| abi::SxTime { tv_sec: t.sec, tv_nsec: t.nsec, reserved: 0 };
        abi::Statx {
            mask: BASIC_STATS | if self.crtime.is_some() { BTIME } else { 0 },
            blksize: self.blksize,
            attributes: self.attributes & statx_attr::SUPPORTED,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            mode: (self.kind.mode_bits() | u32::from(self.perm)) as u16,
            ino: self.ino,
            size: self.size,
            blocks: self.blocks,
            attributes_mask: statx_attr::SUPPORTED,
            atime: t(self.atime),
            btime: self.crtime.map(t).unwrap_or_default(),
            ctime: t(self.ctime),
            mtime: t(self.mtime),
            // Old-style 16-bit device numbers, as ext4 stores them for new_encode_dev.
            rdev_major: (self.rdev >> 8) & 0xfff,
            rdev_minor: (self.rdev & 0xff) | ((self.rdev >> 12) & 0xfff00),
            ..Default::default()
        }
    }
}

/// How long the kernel may cache an entry and its attributes.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    pub entry: Duration,
    pub attr: Duration,
}

/// A name's node: what lookup, mknod, mkdir, symlink, link and create answer.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub nodeid: u64,
    pub generation: u64,
    pub attr: FileAttr,
    pub ttl: Ttl,
}

impl Entry {
    pub fn to_abi(&self) -> abi::EntryOut {
        abi::EntryOut {
            nodeid: self.nodeid,
            generation: self.generation,
            entry_valid: self.ttl.entry.as_secs(),
            attr_valid: self.ttl.attr.as_secs(),
            entry_valid_nsec: self.ttl.entry.subsec_nanos(),
            attr_valid_nsec: self.ttl.attr.subsec_nanos(),
            attr: self.attr.to_abi(),
        }
    }
}

/// What a handler answers: an error, a body, or nothing (forgets).
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// No reply at all: the kernel expects none.
    None,
    /// A positive errno.
    Error(i32),
    Data(Vec<u8>),
}

impl Response {
    pub fn ok() -> Response {
        Response::Data(Vec::new())
    }

    pub fn of<T: IntoBytes + zerocopy::Immutable>(value: &T) -> Response {
        Response::Data(value.as_bytes().to_vec())
    }

    /// Two structs back to back (create: entry then open).
    pub fn pair<A: IntoBytes + zerocopy::Immutable, B: IntoBytes + zerocopy::Immutable>(a: &A, b: &B) -> Response {
        let mut v = a.as_bytes().to_vec();
        v.extend_from_slice(b.as_bytes());
        Response::Data(v)
    }

    pub fn entry(e: &Entry) -> Response {
        Response::of(&e.to_abi())
    }

    pub fn attr(attr: &FileAttr, ttl: Duration) -> Response {
        Response::of(&abi::AttrOut {
            attr_valid: ttl.as_secs(),
            attr_valid_nsec: ttl.subsec_nanos(),
            dummy: 0,
            attr: attr.to_abi(),
        })
    }

    pub fn statx(attr: &FileAttr, ttl: Duration) -> Response {
        Response::of(&abi::StatxOut {
            attr_valid: ttl.as_secs(),
            attr_valid_nsec: ttl.subsec_nanos(),
            flags: 0,
            spare: [0; 2],
            stat: attr.to_statx(),
        })
    }

    /// The out header for this response to request `unique`, and the body after it; `None` when no
    /// reply is due.
    pub fn framed(&self, unique: u64) -> Option<(abi::OutHeader, &[u8])> {
        let (error, body): (i32, &[u8]) = match self {
            Response::None => return None,
            Response::Error(e) => (-e.abs(), &[]),
            Response::Data(d) => (0, d),
        };
        let len = std::mem::size_of::<abi::OutHeader>() + body.len();
        Some((abi::OutHeader { len: u32::try_from(len).ok()?, error, unique }, body))
    }
}

/// A readdir or readdirplus reply being filled, up to the size the kernel asked for.
pub struct DirBuffer {
    buf: Vec<u8>,
    max: usize,
}

impl DirBuffer {
    pub fn new(size: u32) -> DirBuffer {
        let max = size as usize;
        DirBuffer { buf: Vec::with_capacity(max.min(1 << 20)), max }
    }

    /// Adds one entry of readdir; returns true (and adds nothing) when it does not fit.
    pub fn push(&mut self, ino: u64, next: u64, kind: FileType, name: &[u8]) -> bool {
        self.push_with(None, ino, next, kind, name)
    }

    /// Adds one entry of readdirplus; returns true (and adds nothing) when it does not fit.
    pub fn push_plus(&mut self, entry: &Entry, next: u64, name: &[u8]) -> bool {
        self.push_with(Some(entry), entry.attr.ino, next, entry.attr.kind, name)
    }

    fn push_with(&mut self, entry: Option<&Entry>, ino: u64, next: u64, kind: FileType, name: &[u8]) -> bool {
        let head = entry.map_or(0, |_| std::mem::size_of::<abi::EntryOut>()) + std::mem::size_of::<abi::Dirent>();
        let Ok(namelen) = u32::try_from(name.len()) else { return true };
        let len = (head + name.len()).next_multiple_of(8);
        if self.buf.len() + len > self.max {
            return true;
        }
        if let Some(e) = entry {
            self.buf.extend_from_slice(e.to_abi().as_bytes());
        }
        let d = abi::Dirent { ino, off: next, namelen, typ: kind.dirent_type() };
        self.buf.extend_from_slice(d.as_bytes());
        self.buf.extend_from_slice(name);
        self.buf.resize(self.buf.len().next_multiple_of(8), 0);
        false
    }

    pub fn into_response(self) -> Response {
        Response::Data(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_are_padded_to_eight_and_stop_when_full() {
        let mut d = DirBuffer::new(64);
        assert!(!d.push(12, 1, FileType::RegularFile, b"abc"));
        // 24 + 3 rounded to 32; a second one of 32 fills 64 exactly, a third does not fit.
        assert!(!d.push(13, 2, FileType::Directory, b"defgh"));
        assert!(d.push(14, 3, FileType::Directory, b"x"));
        let Response::Data(b) = d.into_response() else { panic!() };
        assert_eq!(b.len(), 64);
        assert_eq!(&b[24..27], b"abc");
        assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 4); // DT_DIR
    }

    #[test]
    fn errors_are_negative_in_the_header() {
        let r = Response::Error(2);
        let (h, body) = r.framed(9).unwrap();
        assert_eq!((h.error, h.len, h.unique, body.len()), (-2, 16, 9, 0));
        assert!(Response::None.framed(1).is_none());
    }

    #[test]
    fn statx_has_btime_only_when_known() {
        let a = FileAttr {
            ino: 12,
            size: 1,
            blocks: 8,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            crtime: None,
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            attributes: statx_attr::IMMUTABLE,
        };
        let s = a.to_statx();
        assert_eq!((s.mask & 0x800, s.mode, s.attributes), (0, 0o100644, statx_attr::IMMUTABLE));
        let s = FileAttr { crtime: Some(Time { sec: -5, nsec: 7 }), ..a }.to_statx();
        assert_eq!((s.mask & 0x800, s.btime.tv_sec, s.btime.tv_nsec), (0x800, -5, 7));
    }
}
