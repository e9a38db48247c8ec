//! Whether the mount may write, and what stops it: the read-only reason fixed at open, a journal abort
//! (jbd2's), a corruption found under `errors=remount-ro` or `errors=panic`, and multiple mount
//! protection's verdict; and who is told when the filesystem turns read-only while mounted.

use super::error::{Error, Result};
use super::fs::Filesystem;
use super::read_only::ReadOnlyReason;

/// Called with the reason when the filesystem turns read-only while mounted.
pub type ReadOnlyHook = Box<dyn Fn(&ReadOnlyReason) + Send + Sync>;

/// What a corruption found on a writable mount does (`errors=`; the superblock's `s_errors` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBehavior {
    /// The operation fails; the filesystem stays writable.
    Continue,
    /// The operation fails and the filesystem turns read-only.
    RemountRo,
    /// The caller should stop serving (the kernel would panic).
    Panic,
}

/// An `errors=` value that names no behaviour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("errors={0}: not continue, remount-ro or panic")]
pub struct UnknownErrorBehavior(pub String);

impl ErrorBehavior {
    /// Parses the value of the `errors=` mount option.
    pub fn parse(v: &str) -> std::result::Result<ErrorBehavior, UnknownErrorBehavior> {
        match v {
            "continue" => Ok(ErrorBehavior::Continue),
            "remount-ro" => Ok(ErrorBehavior::RemountRo),
            "panic" => Ok(ErrorBehavior::Panic),
            _ => Err(UnknownErrorBehavior(v.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorBehavior::Continue => "continue",
            ErrorBehavior::RemountRo => "remount-ro",
            ErrorBehavior::Panic => "panic",
        }
    }
}

impl Filesystem {
    /// Whether this mount keeps an MMP block updated: the caller must then call [`Filesystem::mmp_tick`]
    /// about every second.
    pub fn has_mmp(&self) -> bool {
        self.mmp.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Updates the MMP block when its interval has passed (kmmpd). When another node wrote it, that node
    /// has the image: this mount stops writing at once, and leaves the block as that node wrote it. So it
    /// does, as the kernel's kmmpd, when the block cannot be read or written: the mount can no longer
    /// tell that the image is still its own.
    pub fn mmp_tick(&self) {
        let mut slot = self.mmp.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mmp) = slot.as_mut().filter(|m| m.due()) else { return };
        if let Err(e) = mmp.update(&*self.dev) {
            *slot = None;
            drop(slot);
            let why = match e {
                Error::Busy(why) => why,
                e => format!("multiple mount protection: the MMP block cannot be updated ({e})"),
            };
            self.abort(&why);
        }
    }

    /// Releases the MMP block, if this mount holds it: the last write of an unmount.
    pub(crate) fn release_mmp(&self) -> Result<()> {
        match self.mmp.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(mmp) => mmp.release(&*self.dev),
            None => Ok(()),
        }
    }

    /// `None` when writable; otherwise why not (a feature the engine cannot write, a read-only mount, or
    /// a corruption found under `errors=remount-ro`).
    pub fn read_only_reason(&self) -> Option<ReadOnlyReason> {
        self.read_only
            .clone()
            .or_else(|| self.aborted.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .or_else(|| self.errored.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only_reason().is_some()
    }

    /// Stops all writing after a failed journal commit (jbd2's abort).
    pub(crate) fn abort(&self, why: &str) {
        let mut a = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            tracing::error!("{why}; the filesystem is read-only now");
            let why = ReadOnlyReason::Aborted(why.to_string());
            *a = Some(why.clone());
            drop(a);
            self.turned_read_only(&why);
        }
    }

    /// Registers who to tell when the filesystem turns read-only while mounted (a journal abort,
    /// `errors=remount-ro`): the mount itself can then be made read-only.
    pub fn on_read_only(&self, f: ReadOnlyHook) {
        let _ = self.read_only_hook.set(f);
    }

    fn turned_read_only(&self, why: &ReadOnlyReason) {
        if let Some(f) = self.read_only_hook.get() {
            f(why);
        }
    }

    /// Sets what a corruption found on a writable mount does (`errors=`).
    pub fn set_error_behavior(&self, b: ErrorBehavior) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()) = b;
    }

    /// Applies `errors=` to a corruption an operation found. As the kernel's ext4_error, any operation
    /// counts, reads too: a damaged directory found by a lookup, or skipped by a listing, stops writing as
    /// surely as one found by a create. Errors other than corruption, and anything on a filesystem mounted
    /// read-only (nothing will be written to spread the damage), change nothing. Under `errors=panic` the
    /// engine only records the demand ([`Filesystem::must_stop`]): stopping is the server's business.
    pub fn corruption_found(&self, e: &Error) {
        if !e.is_corruption() || self.read_only.is_some() {
            return;
        }
        match *self.errors.lock().unwrap_or_else(|p| p.into_inner()) {
            ErrorBehavior::Continue => tracing::error!(error = %e, "corruption found (errors=continue)"),
            ErrorBehavior::RemountRo => {
                let mut errored = self.errored.lock().unwrap_or_else(|p| p.into_inner());
                if errored.is_none() {
                    tracing::error!(error = %e, "corruption found: the filesystem is read-only now (errors=remount-ro); run e2fsck");
                    let why = ReadOnlyReason::ErrorsRemountRo(e.to_string());
                    *errored = Some(why.clone());
                    drop(errored);
                    self.turned_read_only(&why);
                }
            }
            ErrorBehavior::Panic => {
                tracing::error!(error = %e, "corruption found (errors=panic): stopping");
                self.must_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether a corruption was found under `errors=panic`: the server must stop serving.
    pub fn must_stop(&self) -> bool {
        self.must_stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}
