//! The status channel: one line per message from the worker to the supervisor, and from the supervisor
//! to whoever waits for the mount (the launcher's foreground process, the mount service's client). This
//! module is the protocol; everyone else speaks [`Status`].
//!
//! | line | meaning |
//! | --- | --- |
//! | `S <text>` | a start-up step in force (the sandbox's, the transport), shown with `--explain` |
//! | `W ro <why>` | the filesystem is (now) read-only, and why: the mount is made read-only too |
//! | `W <text>` | a warning for the user |
//! | `R` | the mount is live |
//! | `E <text>` | what stopped the mount, the one error line the user sees |

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Step(String),
    ReadOnly(String),
    Warning(String),
    Ready,
    Error(String),
}

impl Status {
    /// The message a line holds; `None` for a line of no known kind (ignored, as before).
    pub fn parse(line: &str) -> Option<Status> {
        if line == "R" {
            return Some(Status::Ready);
        }
        let (kind, rest) = line.split_once(' ')?;
        Some(match kind {
            "S" => Status::Step(rest.into()),
            "W" => match rest.strip_prefix("ro ") {
                Some(why) => Status::ReadOnly(why.into()),
                None => Status::Warning(rest.into()),
            },
            "E" => Status::Error(rest.into()),
            _ => return None,
        })
    }
}

/// The line, without its newline.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Step(s) => write!(f, "S {s}"),
            Status::ReadOnly(why) => write!(f, "W ro {why}"),
            Status::Warning(w) => write!(f, "W {w}"),
            Status::Ready => write!(f, "R"),
            Status::Error(e) => write!(f, "E {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn every_kind_reads_back_as_written() {
        for s in [
            Status::Step("transport: io_uring".into()),
            Status::ReadOnly("the journal aborted".into()),
            Status::Warning("img: mounting read-only: x".into()),
            Status::Ready,
            Status::Error("no such file".into()),
        ] {
            assert_eq!(Status::parse(&s.to_string()), Some(s));
        }
        assert_eq!(Status::parse("X what"), None);
        assert_eq!(Status::parse(""), None);
    }
}
