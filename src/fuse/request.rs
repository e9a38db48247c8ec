//! Decoding the kernel's requests: one [`Request`] per message, every length and offset checked before
//! use. The kernel is trusted to follow its protocol, but the decoder does not rely on it: a malformed
//! message is a [`DecodeError`], answered with EIO, never a panic or an out-of-bounds read.
//!
//! A request reaches us in one of two shapes. On /dev/fuse it is one buffer: the header, then the
//! opcode's fixed struct, then names or data. On io_uring the header and the fixed struct sit in the
//! entry's header buffer and the rest in its payload buffer. [`Args`] hides the difference.

use zerocopy::FromBytes;

use super::abi::{self, InHeader, opcode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("request shorter than its header ({0} bytes)")]
    ShortHeader(usize),
    #[error("request length {claimed} does not match the {actual} bytes received")]
    BadLength { claimed: u32, actual: usize },
    #[error("opcode {opcode}: arguments truncated")]
    Truncated { opcode: u32 },
    #[error("opcode {opcode}: a name without its terminating NUL")]
    Unterminated { opcode: u32 },
}

/// The arguments after the header: the opcode's fixed struct (`first`, when the transport keeps it
/// apart) and the bytes that follow it.
pub struct Args<'a> {
    opcode: u32,
    first: Option<&'a [u8]>,
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    /// Arguments that arrived as one buffer (/dev/fuse).
    pub fn contiguous(opcode: u32, body: &'a [u8]) -> Args<'a> {
        Args { opcode, first: None, rest: body }
    }

    /// Arguments whose fixed struct arrived apart from the rest (io_uring's `op_in` and payload).
    pub fn split(opcode: u32, op_in: &'a [u8], payload: &'a [u8]) -> Args<'a> {
        Args { opcode, first: Some(op_in), rest: payload }
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated { opcode: self.opcode }
    }

    /// The opcode's fixed struct.
    fn fixed<T: FromBytes>(&mut self) -> Result<T, DecodeError> {
        match self.first.take() {
            Some(op_in) => T::read_from_prefix(op_in).map(|(value, _)| value).map_err(|_| self.truncated()),
            None => {
                let (value, after) = T::read_from_prefix(self.rest).map_err(|_| self.truncated())?;
                self.rest = after;
                Ok(value)
            }
        }
    }

    /// A NUL-terminated name, without its NUL.
    fn name(&mut self) -> Result<&'a [u8], DecodeError> {
        let end = self.rest.iter().position(|&b| b == 0).ok_or(DecodeError::Unterminated { opcode: self.opcode })?;
        let (name, after) = self.rest.split_at(end);
        self.rest = &after[1..];
        Ok(name)
    }

    /// Exactly `len` bytes.
    fn bytes(&mut self, len: u32) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        if self.rest.len() < len {
            return Err(self.truncated());
        }
        let (data, after) = self.rest.split_at(len);
        self.rest = after;
        Ok(data)
    }
}

/// One request: who sent it, about which node, and what it asks.
#[derive(Debug)]
pub struct Request<'a> {
    pub header: InHeader,
    pub op: Operation<'a>,
}

impl Request<'_> {
    pub fn unique(&self) -> u64 {
        self.header.unique
    }
    pub fn nodeid(&self) -> u64 {
        self.header.nodeid
    }
    pub fn uid(&self) -> u32 {
        self.header.uid
    }
    pub fn gid(&self) -> u32 {
        self.header.gid
    }
}

/// The operations the server handles, with their decoded arguments. Opcodes it does not implement
/// decode as [`Operation::Unsupported`] and are answered ENOSYS.
#[derive(Debug)]
pub enum Operation<'a> {
    Init(abi::InitIn),
    Destroy,
    Lookup {
        name: &'a [u8],
    },
    Forget {
        nlookup: u64,
    },
    BatchForget {
        nodes: Vec<abi::ForgetOne>,
    },
    Getattr(abi::GetattrIn),
    Statx(abi::StatxIn),
    Setattr(abi::SetattrIn),
    Readlink,
    Symlink {
        name: &'a [u8],
        target: &'a [u8],
    },
    Mknod {
        arg: abi::MknodIn,
        name: &'a [u8],
    },
    Mkdir {
        arg: abi::MkdirIn,
        name: &'a [u8],
    },
    Unlink {
        name: &'a [u8],
    },
    Rmdir {
        name: &'a [u8],
    },
    /// RENAME and RENAME2 (RENAME has no flags).
    Rename {
        newdir: u64,
        flags: u32,
        name: &'a [u8],
        newname: &'a [u8],
    },
    Link {
        oldnodeid: u64,
        newname: &'a [u8],
    },
    Open(abi::OpenIn),
    Opendir(abi::OpenIn),
    Create {
        arg: abi::CreateIn,
        name: &'a [u8],
    },
    Tmpfile(abi::CreateIn),
    Read(abi::ReadIn),
    Write {
        arg: abi::WriteIn,
        data: &'a [u8],
    },
    Release(abi::ReleaseIn),
    Releasedir(abi::ReleaseIn),
    Flush(abi::FlushIn),
    Fsync(abi::FsyncIn),
    Fsyncdir(abi::FsyncIn),
    Syncfs,
    Statfs,
    Setxattr {
        arg: abi::SetxattrIn,
        name: &'a [u8],
        value: &'a [u8],
    },
    Getxattr {
        size: u32,
        name: &'a [u8],
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a [u8],
    },
    Access {
        mask: u32,
    },
    Readdir(abi::ReadIn),
    Readdirplus(abi::ReadIn),
    Interrupt {
        unique: u64,
    },
    Ioctl {
        arg: abi::IoctlIn,
        data: &'a [u8],
    },
    Fallocate(abi::FallocateIn),
    Lseek(abi::LseekIn),
    CopyFileRange(abi::CopyFileRangeIn),
    Unsupported(u32),
}

impl<'a> Operation<'a> {
    /// Whether the kernel waits for a reply (forgets are fire and forget).
    pub fn wants_reply(&self) -> bool {
        !matches!(self, Operation::Forget { .. } | Operation::BatchForget { .. })
    }
}

/// A bound on a BATCH_FORGET's count before anything is allocated for it (the kernel sends at most
/// a page's worth of entries; the entries must be in the message anyway).
const MAX_BATCH: u32 = 1 << 16;

/// Decodes a request that arrived as one buffer (/dev/fuse).
pub fn decode(buf: &[u8]) -> Result<Request<'_>, DecodeError> {
    let (header, body) = InHeader::read_from_prefix(buf).map_err(|_| DecodeError::ShortHeader(buf.len()))?;
    if usize::try_from(header.len).ok() != Some(buf.len()) {
        return Err(DecodeError::BadLength { claimed: header.len, actual: buf.len() });
    }
    let op = decode_op(header.opcode, Args::contiguous(header.opcode, body))?;
    Ok(Request { header, op })
}

/// Decodes a request whose header and arguments the transport read already (io_uring).
pub fn decode_parts<'a>(header: InHeader, args: Args<'a>) -> Result<Request<'a>, DecodeError> {
    Ok(Request { header, op: decode_op(header.opcode, args)? })
}

fn decode_op(code: u32, mut a: Args<'_>) -> Result<Operation<'_>, DecodeError> {
    use Operation as O;
    Ok(match code {
        opcode::INIT => O::Init(a.fixed()?),
        opcode::DESTROY => O::Destroy,
        opcode::LOOKUP => O::Lookup { name: a.name()? },
        opcode::FORGET => O::Forget { nlookup: a.fixed::<abi::ForgetIn>()?.nlookup },
        opcode::BATCH_FORGET => {
            let head: abi::BatchForgetIn = a.fixed()?;
            if head.count > MAX_BATCH {
                return Err(a.truncated());
            }
            let mut nodes = Vec::with_capacity(head.count as usize);
            for _ in 0..head.count {
                let (one, after) = abi::ForgetOne::read_from_prefix(a.rest).map_err(|_| a.truncated())?;
                a.rest = after;
                nodes.push(one);
            }
            O::BatchForget { nodes }
        }
        opcode::GETATTR => O::Getattr(a.fixed()?),
        opcode::STATX => O::Statx(a.fixed()?),
        opcode::SETATTR => O::Setattr(a.fixed()?),
        opcode::READLINK => O::Readlink,
        opcode::SYMLINK => {
            let name = a.name()?;
            O::Symlink { name, target: a.name()? }
        }
        opcode::MKNOD => {
            let arg = a.fixed()?;
            O::Mknod { arg, name: a.name()? }
        }
        opcode::MKDIR => {
            let arg = a.fixed()?;
            O::Mkdir { arg, name: a.name()? }
        }
        opcode::UNLINK => O::Unlink { name: a.name()? },
        opcode::RMDIR => O::Rmdir { name: a.name()? },
        opcode::RENAME => {
            let arg: abi::RenameIn = a.fixed()?;
            let name = a.name()?;
            O::Rename { newdir: arg.newdir, flags: 0, name, newname: a.name()? }
        }
        opcode::RENAME2 => {
            let arg: abi::Rename2In = a.fixed()?;
            let name = a.name()?;
            O::Rename { newdir: arg.newdir, flags: arg.flags, name, newname: a.name()? }
        }
        opcode::LINK => {
            let arg: abi::LinkIn = a.fixed()?;
            O::Link { oldnodeid: arg.oldnodeid, newname: a.name()? }
        }
        opcode::OPEN => O::Open(a.fixed()?),
        opcode::OPENDIR => O::Opendir(a.fixed()?),
        opcode::CREATE => {
            let arg = a.fixed()?;
            O::Create { arg, name: a.name()? }
        }
        // The kernel sends the name "/" after the struct; it names nothing.
        opcode::TMPFILE => O::Tmpfile(a.fixed()?),
        opcode::READ => O::Read(a.fixed()?),
        opcode::WRITE => {
            let arg: abi::WriteIn = a.fixed()?;
            O::Write { arg, data: a.bytes(arg.size)? }
        }
        opcode::RELEASE => O::Release(a.fixed()?),
        opcode::RELEASEDIR => O::Releasedir(a.fixed()?),
        opcode::FLUSH => O::Flush(a.fixed()?),
        opcode::FSYNC => O::Fsync(a.fixed()?),
        opcode::FSYNCDIR => O::Fsyncdir(a.fixed()?),
        opcode::SYNCFS => O::Syncfs,
        opcode::STATFS => O::Statfs,
        opcode::SETXATTR => {
            let arg: abi::SetxattrIn = a.fixed()?;
            let name = a.name()?;
            O::Setxattr { arg, name, value: a.bytes(arg.size)? }
        }
        opcode::GETXATTR => {
            let arg: abi::GetxattrIn = a.fixed()?;
            O::Getxattr { size: arg.size, name: a.name()? }
        }
        opcode::LISTXATTR => O::Listxattr { size: a.fixed::<abi::GetxattrIn>()?.size },
        opcode::REMOVEXATTR => O::Removexattr { name: a.name()? },
        opcode::ACCESS => O::Access { mask: a.fixed::<abi::AccessIn>()?.mask },
        opcode::READDIR => O::Readdir(a.fixed()?),
        opcode::READDIRPLUS => O::Readdirplus(a.fixed()?),
        opcode::INTERRUPT => O::Interrupt { unique: a.fixed::<abi::InterruptIn>()?.unique },
        opcode::IOCTL => {
            let arg: abi::IoctlIn = a.fixed()?;
            O::Ioctl { arg, data: a.bytes(arg.in_size)? }
        }
        opcode::FALLOCATE => O::Fallocate(a.fixed()?),
        opcode::LSEEK => O::Lseek(a.fixed()?),
        opcode::COPY_FILE_RANGE => O::CopyFileRange(a.fixed()?),
        other => O::Unsupported(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn message(opcode: u32, body: &[u8]) -> Vec<u8> {
        let header = InHeader {
            len: (40 + body.len()) as u32,
            opcode,
            unique: 7,
            nodeid: 1,
            uid: 1000,
            gid: 1000,
            pid: 1,
            ..Default::default()
        };
        let mut m = header.as_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn lookup_takes_the_name_without_its_nul() {
        let m = message(opcode::LOOKUP, b"hello\0");
        let r = decode(&m).unwrap();
        assert_eq!(r.unique(), 7);
        assert!(matches!(r.op, Operation::Lookup { name: b"hello" }));
    }

    #[test]
    fn rename_reads_both_names() {
        let mut body = abi::Rename2In { newdir: 9, flags: 1, padding: 0 }.as_bytes().to_vec();
        body.extend_from_slice(b"a\0bb\0");
        let m = message(opcode::RENAME2, &body);
        match decode(&m).unwrap().op {
            Operation::Rename { newdir: 9, flags: 1, name: b"a", newname: b"bb" } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_data_must_be_all_there() {
        let mut body = abi::WriteIn { size: 10, ..Default::default() }.as_bytes().to_vec();
        body.extend_from_slice(&[1; 9]);
        assert_eq!(decode(&message(opcode::WRITE, &body)).unwrap_err(), DecodeError::Truncated { opcode: 16 });
        body.push(1);
        assert!(
            matches!(decode(&message(opcode::WRITE, &body)).unwrap().op, Operation::Write { data, .. } if data.len() == 10)
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(decode(&[0; 10]).unwrap_err(), DecodeError::ShortHeader(10));
        let mut m = message(opcode::LOOKUP, b"x\0");
        m.push(0);
        assert!(matches!(decode(&m).unwrap_err(), DecodeError::BadLength { .. }));
        assert_eq!(decode(&message(opcode::LOOKUP, b"x")).unwrap_err(), DecodeError::Unterminated { opcode: 1 });
        assert_eq!(decode(&message(opcode::SETATTR, &[0; 87])).unwrap_err(), DecodeError::Truncated { opcode: 4 });
        let batch = abi::BatchForgetIn { count: 3, dummy: 0 };
        let mut body = batch.as_bytes().to_vec();
        body.extend_from_slice(abi::ForgetOne { nodeid: 5, nlookup: 1 }.as_bytes());
        assert!(decode(&message(opcode::BATCH_FORGET, &body)).is_err());
    }

    #[test]
    fn batch_forget_yields_every_entry() {
        let mut body = abi::BatchForgetIn { count: 2, dummy: 0 }.as_bytes().to_vec();
        body.extend_from_slice(abi::ForgetOne { nodeid: 5, nlookup: 1 }.as_bytes());
        body.extend_from_slice(abi::ForgetOne { nodeid: 6, nlookup: 3 }.as_bytes());
        match decode(&message(opcode::BATCH_FORGET, &body)).unwrap().op {
            Operation::BatchForget { nodes } => {
                assert_eq!(nodes.iter().map(|n| (n.nodeid, n.nlookup)).collect::<Vec<_>>(), [(5, 1), (6, 3)])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_arguments_read_the_struct_apart_from_the_names() {
        let mut op_in = [0u8; 128];
        op_in[..8].copy_from_slice(abi::MkdirIn { mode: 0o755, umask: 0o22 }.as_bytes());
        let header = InHeader { opcode: opcode::MKDIR, ..Default::default() };
        let r = decode_parts(header, Args::split(opcode::MKDIR, &op_in, b"dir\0")).unwrap();
        assert!(matches!(r.op, Operation::Mkdir { arg, name: b"dir" } if arg.mode == 0o755));
        // A name-only opcode never looks at op_in.
        let header = InHeader { opcode: opcode::UNLINK, ..Default::default() };
        let r = decode_parts(header, Args::split(opcode::UNLINK, &op_in, b"f\0")).unwrap();
        assert!(matches!(r.op, Operation::Unlink { name: b"f" }));
    }
}
