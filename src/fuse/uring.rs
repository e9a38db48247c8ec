//! The io_uring transport (FUSE over io_uring, Linux 6.14+): requests arrive in buffers the server
//! registered with the kernel, one ring per queue, and a reply is committed with the same command that
//! fetches the next request: one `io_uring_enter` per request instead of a read and a write.
//!
//! The kernel keeps one queue per *possible* CPU and sends a request to the queue of the CPU its caller
//! runs on; it uses the rings only once every queue has an entry, so each queue gets a thread and
//! `depth` entries. Each entry is a 288-byte header buffer and a payload buffer of the negotiated
//! `max_write` (1 MiB): at most `queues x depth` MiB, touched only as far as requests fill them (8 MiB
//! on a machine with 2 possible CPUs at the default depth of 4). A queue's thread runs on its queue's CPU.
//!
//! Confinement: the rings are made before Landlock and seccomp, created disabled, with /dev/fuse as their
//! only registered file and a restriction that every submission be a URING_CMD on a registered file;
//! then enabled. A confined worker can do nothing else with them, and the seccomp policy only adds
//! `io_uring_enter`.
//!
//! FORGET, INTERRUPT and notifications keep using /dev/fuse (see `session`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::register::Restriction;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::abi::{self, InHeader, UringCmdReq, UringReqHeader};
use super::classic::answer;
use super::init::Negotiated;
use super::reply::Response;
use super::request::{self, Args};
use super::session::Handler;

pub type Ring = IoUring<squeue::Entry128, cqueue::Entry>;

/// The kernel's switch (`fuse.enable_uring`), read when the kernel sends INIT.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// Entries per queue. Each queue is served by one thread, so more entries only queue more requests in
/// the kernel's place; 4 keeps a few in hand while one is being served.
pub const DEFAULT_DEPTH: u32 = 4;

/// Why the rings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the kernel has no FUSE over io_uring (no {ENABLE_URING}: it needs Linux 6.14 or later)")]
    Missing,
    #[error("FUSE over io_uring is turned off in the kernel ({ENABLE_URING} is N; as root: echo 1 > {ENABLE_URING})")]
    Disabled,
    #[error("io_uring_setup refused: {0} (a container's seccomp profile, or the kernel.io_uring_disabled sysctl)")]
    Setup(io::Error),
    #[error("the ring cannot be restricted to /dev/fuse: {0}")]
    Restrict(io::Error),
    #[error("cannot tell the possible CPUs from {POSSIBLE_CPUS}: {0}")]
    Cpus(String),
}

/// One ring per queue, ready to serve once INIT is done.
pub struct Rings {
    queues: Vec<Ring>,
    depth: u32,
}

impl Rings {
    pub fn queues(&self) -> usize {
        self.queues.len()
    }
    pub fn depth(&self) -> u32 {
        self.depth
    }
    pub fn into_queues(self) -> Vec<Ring> {
        self.queues
    }
}

/// Makes the rings for `dev` (before confinement: io_uring_setup and io_uring_register are not in the
/// confined worker's policy).
pub fn prepare(dev: &File, depth: u32) -> Result<Rings, Unavailable> {
    match std::fs::read_to_string(ENABLE_URING) {
        Ok(s) if matches!(s.trim(), "Y" | "1") => {}
        Ok(_) => return Err(Unavailable::Disabled),
        Err(_) => return Err(Unavailable::Missing),
    }
    let text = std::fs::read_to_string(POSSIBLE_CPUS).map_err(|e| Unavailable::Cpus(e.to_string()))?;
    let queues = possible_cpus(&text).ok_or_else(|| Unavailable::Cpus(format!("unreadable: {:?}", text.trim())))?;
    let queues = (0..queues).map(|_| restricted_ring(dev, depth)).collect::<Result<_, _>>()?;
    Ok(Rings { queues, depth })
}

/// The number of possible CPUs from a list like `0-3,5`: the highest id plus one (the kernel numbers
/// its queues by CPU id).
pub fn possible_cpus(list: &str) -> Option<usize> {
    let mut highest = None;
    for part in list.trim().split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        highest = highest.max(Some(last));
    }
    highest.map(|h| h + 1).filter(|&n| n <= 4096)
}

/// A ring on `dev` that accepts nothing but URING_CMD on its one registered file (see the module doc).
pub fn restricted_ring(dev: &File, depth: u32) -> Result<Ring, Unavailable> {
    let ring = Ring::builder().setup_r_disabled().setup_submit_all().build(depth).map_err(Unavailable::Setup)?;
    let submitter = ring.submitter();
    submitter.register_files(&[dev.as_raw_fd()]).map_err(Unavailable::Restrict)?;
    let fixed = squeue::Flags::FIXED_FILE.bits();
    let mut only_fuse_commands = [
        Restriction::sqe_op(opcode::UringCmd80::CODE),
        Restriction::sqe_flags_allowed(fixed),
        Restriction::sqe_flags_required(fixed),
    ];
    submitter.register_restrictions(&mut only_fuse_commands).map_err(Unavailable::Restrict)?;
    submitter.register_enable_rings().map_err(Unavailable::Restrict)?;
    Ok(ring)
}

/// A URING_CMD on /dev/fuse (fixed file 0).
fn fuse_command(
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
    iovecs: Option<*const libc::iovec>,
    entry: u64,
) -> squeue::Entry128 {
    let req = UringCmdReq { flags: 0, commit_id, qid, padding: [0; 6] };
    let mut cmd = [0u8; 80];
    cmd[..std::mem::size_of::<UringCmdReq>()].copy_from_slice(req.as_bytes());
    let mut op = opcode::UringCmd80::new(types::Fixed(0), cmd_op).cmd(cmd);
    if let Some(iov) = iovecs {
        op = op.addr(Some(iov as u64));
    }
    let sqe = op.build().user_data(entry);
    // REGISTER wants `sqe->len` = 2 (the number of iovecs), which the crate cannot set.
    if iovecs.is_some() { with_len(sqe, 2) } else { sqe }
}

/// `sqe` with its `len` field (bytes 24..28 of `struct io_uring_sqe`) set.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]`: a 64-byte `io_uring_sqe` followed by 64 command bytes, built
    // from zeroed memory, so all 128 bytes are initialized, and every bit pattern is a valid SQE value.
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above, in the other direction.
    unsafe { std::mem::transmute(bytes) }
}

/// One registered entry: the two buffers the kernel writes requests into and reads replies from. They
/// are reached only through raw pointers, and only while the kernel has handed the entry to us (between
/// a completion and the next commit).
struct Entry {
    header: *mut UringReqHeader,
    payload: *mut [u8],
    iov: Box<[libc::iovec; 2]>,
    /// Fetched at least once (a REGISTER that answers EAGAIN is sent again).
    registered: bool,
}

impl Entry {
    fn new(payload_len: usize) -> Entry {
        let header = Box::into_raw(Box::new(UringReqHeader::new_zeroed()));
        let payload = Box::into_raw(vec![0u8; payload_len].into_boxed_slice());
        let iov = Box::new([
            libc::iovec { iov_base: header.cast(), iov_len: std::mem::size_of::<UringReqHeader>() },
            libc::iovec { iov_base: payload.cast(), iov_len: payload_len },
        ]);
        Entry { header, payload, iov, registered: false }
    }

    /// Frees the buffers. Only once the kernel has let go of the entry (it completed with an error).
    fn free(self) {
        // SAFETY: both came from Box::into_raw in `new`, and the kernel no longer holds the entry.
        unsafe {
            drop(Box::from_raw(self.header));
            drop(Box::from_raw(self.payload));
        }
    }
}

/// Serves queue `qid` on `ring` until the kernel ends the entries (-ENOTCONN at unmount).
pub fn serve<H: Handler>(mut ring: Ring, qid: usize, negotiated: &Negotiated, handler: &H) -> io::Result<()> {
    let qid16 = u16::try_from(qid).map_err(|_| io::Error::other("queue id out of range"))?;
    pin_to_cpu(qid);
    let depth = ring.params().sq_entries() as usize;
    let mut entries: Vec<Option<Entry>> = (0..depth).map(|_| Some(Entry::new(negotiated.ring_payload()))).collect();
    let mut pending: Vec<squeue::Entry128> = Vec::with_capacity(depth);
    for (i, e) in entries.iter().enumerate() {
        let e = e.as_ref().expect("just made");
        pending.push(fuse_command(abi::URING_CMD_REGISTER, qid16, 0, Some(e.iov.as_ptr()), i as u64));
    }
    let mut live = depth;
    let mut first_error = None;
    while live > 0 {
        {
            let mut sq = ring.submission();
            for sqe in pending.drain(..) {
                // SAFETY: the iovecs and buffers the command points to live in `entries` until the kernel
                // completes the entry with an error (they are leaked if the thread ends before that).
                if unsafe { sq.push(&sqe) }.is_err() {
                    return Err(io::Error::other("submission queue full"));
                }
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
            Err(e) => {
                // The entries may still be registered: their buffers must outlive us.
                entries.into_iter().flatten().for_each(std::mem::forget);
                return Err(e);
            }
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (i, res) in done {
            let Some(slot) = entries.get_mut(i as usize) else { continue };
            let Some(entry) = slot.as_mut() else { continue };
            if res == 0 {
                entry.registered = true;
                let commit_id = serve_entry(entry, handler);
                pending.push(fuse_command(abi::URING_CMD_COMMIT_AND_FETCH, qid16, commit_id, None, i));
            } else if (res == -libc::EAGAIN || res == -libc::EINTR) && !entry.registered {
                // INIT not processed yet (it is, by the time we run; but resubmitting is what the kernel asks).
                std::thread::yield_now();
                pending.push(fuse_command(abi::URING_CMD_REGISTER, qid16, 0, Some(entry.iov.as_ptr()), i));
            } else {
                if res != -libc::ENOTCONN && first_error.is_none() {
                    first_error = Some(io::Error::from_raw_os_error(-res));
                }
                if let Some(e) = slot.take() {
                    e.free();
                }
                live -= 1;
            }
        }
    }
    match first_error {
        // A refused REGISTER makes the kernel fall back to /dev/fuse, which the classic reader serves.
        Some(e) => {
            tracing::warn!(queue = qid, error = %e, "an io_uring entry ended with an error");
            Ok(())
        }
        None => Ok(()),
    }
}

/// Runs the calling thread on CPU `cpu` only, as libfuse does: the kernel puts a request on the queue of
/// the CPU its caller runs on, so the queue's server then wakes where the caller went to sleep, with its
/// caches warm, instead of on another CPU. Where the CPU is not ours to use (a cpuset, an offline CPU)
/// the thread stays free to run anywhere; that costs speed, nothing else.
fn pin_to_cpu(cpu: usize) {
    // A cpu_set_t holds CPU_SETSIZE CPUs; CPU_SET would panic past them.
    if cpu >= libc::CPU_SETSIZE as usize {
        tracing::debug!(cpu, "queue thread not pinned: its CPU is past CPU_SETSIZE");
        return;
    }
    // SAFETY: cpu_set_t is plain data, and `cpu` is within it.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        tracing::debug!(cpu, error = %io::Error::last_os_error(), "queue thread not pinned to its CPU");
    }
}

/// Answers the request in `entry` and writes the reply into its buffers; returns the commit id.
fn serve_entry<H: Handler>(entry: &mut Entry, handler: &H) -> u64 {
    // SAFETY: the kernel completed this entry's fetch: it has written the request and touches neither
    // buffer until we commit. Nothing else holds a reference to them.
    let (header, payload) = unsafe { (&mut *entry.header, &mut *entry.payload) };
    let commit_id = header.ring_ent_in_out.commit_id;
    let size = (header.ring_ent_in_out.payload_sz as usize).min(payload.len());
    let (unique, response) = match InHeader::read_from_prefix(&header.in_out[..]) {
        Ok((h, _)) => {
            let args = Args::split(h.opcode, &header.op_in, &payload[..size]);
            match request::decode_parts(h, args) {
                Ok(req) => (h.unique, answer(handler, &req)),
                Err(e) => {
                    tracing::warn!(error = %e, "malformed FUSE request on the ring");
                    (h.unique, Response::Error(libc::EIO))
                }
            }
        }
        Err(_) => (commit_id, Response::Error(libc::EIO)),
    };
    // Every request that came on the ring ends in a commit, even one that wants no reply.
    let response = match response {
        Response::None => Response::Error(libc::ENOSYS),
        Response::Data(d) if d.len() > payload.len() => {
            tracing::warn!(len = d.len(), "reply larger than the ring's payload buffer");
            Response::Error(libc::EIO)
        }
        r => r,
    };
    let (out, body) = response.framed(unique).expect("a reply is due");
    header.in_out[..std::mem::size_of::<abi::OutHeader>()].copy_from_slice(out.as_bytes());
    payload[..body.len()].copy_from_slice(body);
    header.ring_ent_in_out.payload_sz = body.len() as u32;
    commit_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpu_lists() {
        assert_eq!(possible_cpus("0-1\n"), Some(2));
        assert_eq!(possible_cpus("0"), Some(1));
        assert_eq!(possible_cpus("0-3,5,7-9"), Some(10));
        assert_eq!(possible_cpus(""), None);
        assert_eq!(possible_cpus("a-b"), None);
    }

    #[test]
    fn register_commands_carry_two_iovecs() {
        let iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2];
        let sqe = fuse_command(abi::URING_CMD_REGISTER, 3, 0, Some(iov.as_ptr()), 9);
        // SAFETY: as in `with_len`.
        let bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(bytes[0], opcode::UringCmd80::CODE);
        assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(bytes[16..24].try_into().unwrap()), iov.as_ptr() as u64);
        // cmd_req at sqe->cmd (offset 48): qid at its byte 16.
        assert_eq!(u16::from_ne_bytes(bytes[64..66].try_into().unwrap()), 3);
        assert_eq!(u64::from_ne_bytes(bytes[32..40].try_into().unwrap()), 9);
    }
}
