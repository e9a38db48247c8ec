//! The one encoding of the messages between ext4box's processes: a version line, then the message as
//! one line of JSON (serde). The worker's configuration on its command line, the fd-socket handoff and
//! the mount service's requests all use it, so there is one parser, and it is strict: these bytes may
//! come from another process, perhaps another user.
//!
//! ```text
//! ext4box-handoff 2
//! {"offset":0,"read_only":true,...}
//! ```
//! Decoding refuses a message over its size bound, bytes that are not UTF-8, another version line,
//! anything after the JSON line, and (through the types' `deny_unknown_fields`) unknown, repeated or
//! missing fields.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The message, after its version line `magic`.
pub fn encode<T: Serialize>(magic: &str, message: &T) -> Vec<u8> {
    format!("{magic}\n{}\n", to_json(message)).into_bytes()
}

/// Why a message did not decode, one variant per check; `what` names the message ("handoff",
/// "request", "worker config").
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{what} too large ({len} bytes, at most {max})")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str, source: std::str::Utf8Error },
    #[error("not an ext4box {what} of this version (expected \"{magic}\")")]
    Version { what: &'static str, magic: &'static str },
    #[error("{what}: more than one line")]
    MoreThanOneLine { what: &'static str },
    #[error("bad {what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
}

/// The message in `bytes` (at most `max` of them), after its version line `magic`; `what` names it in
/// errors ("handoff", "request").
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    magic: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { what, len: bytes.len(), max });
    }
    let text = std::str::from_utf8(bytes).map_err(|source| WireError::NotUtf8 { what, source })?;
    let (first, body) = text.split_once('\n').unwrap_or((text, ""));
    if first != magic {
        return Err(WireError::Version { what, magic });
    }
    from_json(what, body.strip_suffix('\n').unwrap_or(body))
}

/// `message` as one line of JSON.
pub fn to_json<T: Serialize>(message: &T) -> String {
    // The messages are plain structs and enums of numbers, strings and booleans: nothing that JSON
    // cannot hold, so serialising cannot fail.
    serde_json::to_string(message).unwrap_or_default()
}

/// The message in `line`, strictly: one JSON value and nothing else.
pub fn from_json<T: DeserializeOwned>(what: &'static str, line: &str) -> Result<T, WireError> {
    if line.contains('\n') {
        return Err(WireError::MoreThanOneLine { what });
    }
    serde_json::from_str(line).map_err(|source| WireError::Json { what, source })
}

/// Serialises a type as its name and parses it back with its own parser (the names users write in
/// `-o`): `serde_by_name!(Type, parse)`, with `Type::name(self) -> &'static str` and
/// `parse(&str) -> Result<Type, E>` (`E` shown in the decoder's message).
macro_rules! serde_by_name {
    ($t:ty, $parse:expr) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let name = String::deserialize(d)?;
                let parse: fn(&str) -> Result<$t, _> = $parse;
                parse(&name).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_by_name;
