//! Roles: which tools a client may see and call. A role is a list of tool patterns (exact
//! names, or globs with `*`); a client's role comes from its pairing, else the default role.

use std::collections::BTreeMap;
use std::time::Duration;

/// The role allowlists: role name → tool patterns (exact names, or globs with `*`).
#[derive(Debug, Clone)]
pub struct Roles {
    pub default_role: String,
    pub roles: BTreeMap<String, Vec<String>>,
    /// How long a pairing code is valid (`auth.code_ttl_ms` in the config).
    pub code_ttl: Duration,
}

impl Roles {
    /// Whether `role` may see and call `tool`. An unknown role or an empty list allows nothing.
    pub fn allows(&self, role: &str, tool: &str) -> bool {
        self.roles
            .get(role)
            .is_some_and(|patterns| patterns.iter().any(|p| glob_match(p, tool)))
    }

    pub fn exists(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    name.len() >= first.len() + last.len()
}
