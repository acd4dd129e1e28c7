//! Names clients see: `<server>__<tool>`, at most 64 characters.
//!
//! Server names cannot contain `__` (see `config::validate_server_name`), so the split at the
//! first `__` is unambiguous and two different (server, tool) pairs never get the same name.
//! A name that would be too long is cut and given a short hash of the full name, which is
//! deterministic; the rare hash collision is resolved by lengthening the hash.

use sha2::{Digest, Sha256};

/// The longest name some clients accept.
pub(crate) const MAX_LEN: usize = 64;
pub(crate) const SEPARATOR: &str = "__";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The exposed name with a hash of `hash_len` hex digits when shortening is needed.
pub(crate) fn exposed_with(server: &str, tool: &str, hash_len: usize) -> String {
    exposed_within(server, tool, MAX_LEN, hash_len)
}

/// The exposed name of at most `max` characters (a client's budget, `MAX_LEN` or less):
/// the same deterministic cut and hash as at 64, at a shorter length. The hash is of the
/// full name, so different tools keep different names at every budget.
pub(crate) fn exposed_within(server: &str, tool: &str, max: usize, hash_len: usize) -> String {
    let max = max.min(MAX_LEN);
    let full = format!("{server}{SEPARATOR}{tool}");
    if full.len() <= max {
        return full;
    }
    let hash = hex(&Sha256::digest(full.as_bytes()));
    let hash = &hash[..hash_len.min(hash.len()).min(max.saturating_sub(2))];
    let mut keep = max - hash.len() - 1;
    while !full.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash}", &full[..keep])
}

/// The exposed name of `tool` on `server`.
pub(crate) fn exposed(server: &str, tool: &str) -> String {
    exposed_with(server, tool, 8)
}

/// Splits an exposed name into server and tool when it was not shortened.
pub(crate) fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_plain() {
        assert_eq!(exposed("fs", "read_file"), "fs__read_file");
        assert_eq!(split("fs__read__file"), Some(("fs", "read__file")));
    }

    #[test]
    fn long_names_are_cut_deterministically_with_a_hash() {
        let tool = "a_very_long_tool_name_that_goes_on_and_on_and_on_and_on_forever_more";
        let a = exposed("server", tool);
        assert_eq!(a.len(), MAX_LEN);
        assert_eq!(a, exposed("server", tool), "deterministic");
        assert!(a.starts_with("server__a_very_long"));
        let b = exposed("server", &format!("{tool}2"));
        assert_ne!(a, b, "different tools, different names");
        assert_eq!(b.len(), MAX_LEN);
        // multi-byte characters are never split
        let c = exposed("s", &"é".repeat(60));
        assert!(c.len() <= MAX_LEN);
    }

    #[test]
    fn a_budget_cuts_the_same_way_at_a_shorter_length() {
        let tool = "search_issues_and_pull_requests_everywhere";
        // fits 64, not Claude Code's 46 (64 - "mcp__switchboard__")
        assert_eq!(
            exposed_within("github", tool, 64, 8),
            exposed("github", tool)
        );
        let cut = exposed_within("github", tool, 46, 8);
        assert_eq!(cut.len(), 46);
        assert!(cut.starts_with("github__search_issues"), "{cut}");
        assert_eq!(cut, exposed_within("github", tool, 46, 8), "deterministic");
        assert_ne!(cut, exposed_within("github", &format!("{tool}2"), 46, 8));
        assert_eq!(exposed_within("fs", "read", 46, 8), "fs__read");
    }
}
