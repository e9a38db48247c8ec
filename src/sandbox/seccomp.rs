//! The seccomp allow-list: TOML policy files under `policy/` (one per architecture), read with serde into
//! seccompiler's own JSON schema and compiled by seccompiler, so no BPF is written by hand here.

use std::collections::BTreeMap;

use super::SandboxError;
use seccompiler::{BpfProgram, TargetArch};

/// The policy shipped for the architecture this binary runs on.
#[cfg(target_arch = "x86_64")]
pub const BUILTIN: &str = include_str!("../../policy/x86_64.toml");
#[cfg(target_arch = "aarch64")]
pub const BUILTIN: &str = include_str!("../../policy/aarch64.toml");

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// A parsed and compiled policy: its filters in installation order, and a summary for `policy check`.
#[derive(Debug)]
pub struct Policy {
    filters: Vec<(String, BpfProgram)>,
    summary: Vec<String>,
}

impl Policy {
    /// Parses `text` (TOML) and compiles every filter in it. Any error is a message for the user: there
    /// is no fallback to a weaker policy.
    pub fn compile(text: &str) -> Result<Policy, SandboxError> {
        // One line, as every error the user sees: TOML's own message draws the spot over several lines.
        let one_line = |e: toml::de::Error| SandboxError::PolicyParse {
            message: e.message().trim().to_string(),
            at: e.span().map(|s| s.start),
        };
        let value: toml::Value = toml::from_str(text).map_err(one_line)?;
        let json = serde_json::to_string(&value)?;
        let map = seccompiler::compile_from_json(json.as_bytes(), ARCH).map_err(SandboxError::PolicyCompile)?;
        // The table order of the file is the installation order (the fallback filter before the main one).
        let tables: BTreeMap<String, toml::Value> = toml::from_str(text).map_err(one_line)?;
        let order: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']').map(str::to_string))
            .filter(|name| tables.contains_key(name))
            .collect();
        if order.len() != map.len() || !order.iter().any(|n| n == "worker") {
            return Err(SandboxError::PolicyShape);
        }
        let mut summary = Vec::new();
        for name in &order {
            let t = &tables[name];
            let rules = t.get("filter").and_then(|f| f.as_array()).map_or(0, Vec::len);
            summary.push(format!(
                "[{name}] {rules} rules; match: {}; otherwise: {}",
                t.get("match_action").map_or_else(String::new, ToString::to_string),
                t.get("mismatch_action").map_or_else(String::new, ToString::to_string)
            ));
            for rule in t.get("filter").and_then(|f| f.as_array()).into_iter().flatten() {
                let syscall = rule.get("syscall").and_then(|s| s.as_str()).unwrap_or("?");
                let args = rule.get("args").and_then(|a| a.as_array()).map_or(0, Vec::len);
                let comment = rule.get("comment").and_then(|s| s.as_str()).unwrap_or("");
                let cond = if args > 0 { format!(" ({args} argument condition(s))") } else { String::new() };
                summary.push(format!("  {syscall}{cond}: {comment}"));
            }
        }
        let mut map = map;
        let filters = order.into_iter().filter_map(|n| map.remove(&n).map(|p| (n, p))).collect();
        Ok(Policy { filters, summary })
    }

    /// One line per filter and per rule, for `ext4box policy check`.
    pub fn describe(&self) -> &[String] {
        &self.summary
    }

    /// Installs the filters on every thread of the process (there is one when the worker confines itself).
    pub fn install(&self) -> Result<(), SandboxError> {
        for (name, prog) in &self.filters {
            seccompiler::apply_filter_all_threads(prog)
                .map_err(|source| SandboxError::SeccompInstall { name: name.clone(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_policy_compiles() {
        let p = Policy::compile(BUILTIN).unwrap();
        assert!(p.describe().iter().any(|l| l.starts_with("[worker]")));
        assert!(p.describe().iter().any(|l| l.contains("pwrite64")));
    }

    #[test]
    fn broken_policies_are_errors() {
        assert!(Policy::compile("[worker\nmismatch_action = 1").unwrap_err().to_string().contains("does not parse"));
        let unknown = "[worker]\nmismatch_action = \"kill_process\"\nmatch_action = \"allow\"\nfilter = [{ syscall = \"no_such_call\" }]\n";
        assert!(Policy::compile(unknown).unwrap_err().to_string().contains("does not compile"));
        let no_worker = "[other]\nmismatch_action = \"kill_process\"\nmatch_action = \"allow\"\nfilter = []\n";
        assert!(Policy::compile(no_worker).is_err());
    }
}
