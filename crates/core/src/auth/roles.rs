//! Roles: which tools a client may see and call, and whose resources it may list and read. A
//! role is a list of tool patterns (exact names, or globs with `*`); a client's role comes from
//! its pairing, else the default role.
//!
//! Resources have no `<server>__` name of their own, so they are granted by server: a role
//! grants server `fs`'s resources and resource templates when one of its patterns matches
//! `fs__`, the server's tool prefix with nothing after it. `*` and `fs__*` grant them (with all
//! of fs's tools), `fs__` alone grants them and no tool, and a pattern that names only some of
//! fs's tools (`fs__read_*`, `fs__echo`) grants none of them.

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

    /// Whether `role` grants `server`'s resources and resource templates: one of its patterns
    /// matches `<server>__` (see the module header). Without that, the role neither lists nor
    /// reads anything of the server's.
    pub fn grants_server(&self, role: &str, server: &str) -> bool {
        // `__` separates server and tool in every exposed name (see `config::validate_server_name`)
        self.allows(role, &format!("{server}__"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(list: &[(&str, &[&str])]) -> Roles {
        Roles {
            default_role: "default".into(),
            roles: list
                .iter()
                .map(|(r, p)| ((*r).to_owned(), p.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            code_ttl: Duration::from_secs(120),
        }
    }

    #[test]
    fn a_server_s_resources_go_with_a_pattern_matching_its_whole_prefix() {
        let r = roles(&[
            ("all", &["*"]),
            ("fs", &["fs__*"]),
            ("f", &["f*"]),
            ("fs-resources", &["fs__"]),
            ("some-tools", &["fs__read_*", "fs__echo", "*_read*"]),
            ("git-and-fs-echo", &["git__*", "fs__echo"]),
            ("locked", &[]),
        ]);
        let grants = |role: &str, server: &str| r.grants_server(role, server);
        assert!(grants("all", "fs") && grants("all", "git"));
        assert!(grants("fs", "fs") && !grants("fs", "fsx") && !grants("fs", "git"));
        assert!(grants("f", "fs") && grants("f", "fsx") && !grants("f", "git"));
        assert!(grants("fs-resources", "fs") && !grants("fs-resources", "git"));
        assert!(!grants("some-tools", "fs"), "only some of fs's tools");
        assert!(grants("git-and-fs-echo", "git") && !grants("git-and-fs-echo", "fs"));
        assert!(!grants("locked", "fs") && !grants("nobody", "fs"));
        // the resource-only form grants no tool
        assert!(!r.allows("fs-resources", "fs__read_file"));
        assert!(r.allows("fs", "fs__read_file"));
    }
}
