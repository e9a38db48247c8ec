//! What the worker writes, read as coming from a process that may run an attacker's code: its lines
//! (status or log) bounded and made valid UTF-8 (`WorkerLines`), control characters escaped before they
//! reach a terminal or the journal (`printable`), and the relay of its log lines into the supervisor's
//! own events at their levels, held back until the mount is ready (`WorkerLog`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

/// What happens to the worker's log lines. Until the mount is ready they are held back: if the worker then
/// refuses the image, its one error line is all the user sees (the held lines, and any that follow, go to
/// the journal at info level); once it serves, they pass at their own levels.
enum LogGate {
    Hold(Vec<String>),
    Pass,
    Demote,
}

/// The gate the relay thread and the supervisor share, and the fields every relayed event carries.
#[derive(Clone)]
pub(super) struct WorkerLog {
    gate: std::sync::Arc<std::sync::Mutex<LogGate>>,
    image: String,
    mountpoint: String,
}

impl WorkerLog {
    pub(super) fn new(image: String, mountpoint: String) -> WorkerLog {
        WorkerLog { gate: std::sync::Arc::new(std::sync::Mutex::new(LogGate::Hold(Vec::new()))), image, mountpoint }
    }

    /// Forwards the worker's log lines as events of the supervisor at the level each was written at, so
    /// they go to the systemd journal when one runs (with the image and mount point as fields) and to
    /// stderr in the foreground under the supervisor's own filter: an error the worker reports (damage
    /// that turned the filesystem read-only) reaches the user. The worker itself, confined, can only
    /// write to its pipe.
    pub(super) fn relay(&self, log: File) {
        for line in WorkerLines::new(log) {
            let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            match &mut *gate {
                // (A bound: a worker that logs without end before it is ready loses the excess.)
                LogGate::Hold(held) if held.len() < 1000 => held.push(line),
                LogGate::Hold(_) => {}
                LogGate::Pass => self.emit(&line, false),
                LogGate::Demote => self.emit(&line, true),
            }
        }
    }

    /// Opens the gate: `served` relays what was held at its levels, otherwise at info level.
    pub(super) fn open(&self, served: bool) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let next = if served { LogGate::Pass } else { LogGate::Demote };
        if let LogGate::Hold(held) = std::mem::replace(&mut *gate, next) {
            for line in held {
                self.emit(&line, !served);
            }
        }
    }

    fn emit(&self, line: &str, demote: bool) {
        let line = printable(line);
        let (level, msg) = split_level(&line);
        let level = if demote { tracing::Level::INFO.max(level) } else { level };
        let (image, mountpoint) = (&self.image, &self.mountpoint);
        macro_rules! relay {
            ($level:expr) => {
                tracing::event!(target: "ext4box::worker", $level, image = %image, mountpoint = %mountpoint, "{msg}")
            };
        }
        match level {
            tracing::Level::ERROR => relay!(tracing::Level::ERROR),
            tracing::Level::WARN => relay!(tracing::Level::WARN),
            tracing::Level::INFO => relay!(tracing::Level::INFO),
            tracing::Level::DEBUG => relay!(tracing::Level::DEBUG),
            _ => relay!(tracing::Level::TRACE),
        }
    }
}

/// Lines from the worker (status or log), which may be running an attacker's code: each at most 16 KiB
/// (the rest of a longer line is dropped) and invalid UTF-8 replaced, so it can neither make the
/// privileged supervisor hold unbounded memory nor stop it listening. Ends at end of file or an error.
pub(super) struct WorkerLines<R> {
    r: BufReader<R>,
}

impl<R: Read> WorkerLines<R> {
    const MAX: usize = 16 << 10;

    pub(super) fn new(r: R) -> WorkerLines<R> {
        WorkerLines { r: BufReader::new(r) }
    }
}

impl<R: Read> Iterator for WorkerLines<R> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut any = false;
        loop {
            let buf = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            if buf.is_empty() {
                return any.then(|| String::from_utf8_lossy(&line).into_owned());
            }
            any = true;
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, Some(i + 1)),
                None => (buf.len(), None),
            };
            let room = Self::MAX.saturating_sub(line.len());
            line.extend_from_slice(&buf[..take.min(room)]);
            self.r.consume(end.unwrap_or(take));
            if end.is_some() {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
}

/// A line from the worker with its control characters escaped: a worker running an attacker's code could
/// otherwise send terminal escape sequences to the user's terminal (foreground) or forge log lines.
pub(super) fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(line);
    }
    std::borrow::Cow::Owned(
        line.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

/// The level of one line of the worker's log (its formatter starts each line with it) and the rest. A
/// line without one is not the logger's (a panic message, say): an error.
fn split_level(line: &str) -> (tracing::Level, &str) {
    use tracing::Level;
    let t = line.trim_start();
    for (name, level) in [
        ("ERROR", Level::ERROR),
        ("WARN", Level::WARN),
        ("INFO", Level::INFO),
        ("DEBUG", Level::DEBUG),
        ("TRACE", Level::TRACE),
    ] {
        if let Some(rest) = t.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) {
            return (level, rest);
        }
    }
    (Level::ERROR, line)
}

#[cfg(test)]
mod tests {
    use super::split_level;
    use tracing::Level;

    #[test]
    fn worker_log_lines_keep_their_level() {
        assert_eq!(
            split_level(" INFO ext4box::launcher::worker: sandbox: x"),
            (Level::INFO, "ext4box::launcher::worker: sandbox: x")
        );
        assert_eq!(
            split_level("ERROR ext4box::ext4::fs: corruption found"),
            (Level::ERROR, "ext4box::ext4::fs: corruption found")
        );
        assert_eq!(split_level(" WARN a: b"), (Level::WARN, "a: b"));
        assert_eq!(split_level("DEBUG a"), (Level::DEBUG, "a"));
        assert_eq!(
            split_level("thread 'main' panicked at src/x.rs:1:1:"),
            (Level::ERROR, "thread 'main' panicked at src/x.rs:1:1:")
        );
        assert_eq!(split_level("INFORMATION"), (Level::ERROR, "INFORMATION"));
    }

    #[test]
    fn worker_lines_are_bounded_and_lossy() {
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\n\xff\xfebad\nlast");
        let lines: Vec<String> = super::WorkerLines::new(&input[..]).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1].len(), 16 << 10);
        assert_eq!(lines[2], "\u{fffd}\u{fffd}bad");
        assert_eq!(lines[3], "last");
        assert_eq!(super::WorkerLines::new(&b""[..]).count(), 0);
    }

    #[test]
    fn control_characters_from_the_worker_are_escaped() {
        assert_eq!(super::printable("W ro plain ünïcode"), "W ro plain ünïcode");
        assert_eq!(
            super::printable("E \u{1b}]0;owned\u{7}\r\nERROR forged"),
            "E \\u{1b}]0;owned\\u{7}\\r\\nERROR forged"
        );
    }
}
