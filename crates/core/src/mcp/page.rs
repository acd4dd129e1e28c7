//! The gateway's lists to clients in pages (`tools/list`, `resources/list`,
//! `resources/templates/list`, `prompts/list`), `gateway.page_size` items each.
//!
//! A `nextCursor` is opaque to clients: the list it walks, a fingerprint of that list as the
//! caller saw it (the names or URIs in order, after its role's filter) and the offset of the next
//! page, hex-encoded. A cursor whose list has changed since (a server came or went, its tools
//! changed, another role) is refused with "cursor no longer valid; list again" rather than
//! answered with a page that skips or repeats items; one the gateway never gave out is refused
//! as invalid. Both are `-32602`. A leaf: no state, each page is cut from the whole list.

use rmcp::model::ErrorData;
use sha2::{Digest, Sha256};

use super::jsonrpc::{INVALID_PARAMS, error_data};

/// Which list a cursor walks: a cursor of one is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

impl List {
    const ALL: [Self; 4] = [
        Self::Tools,
        Self::Resources,
        Self::ResourceTemplates,
        Self::Prompts,
    ];

    /// Its name inside a cursor.
    fn tag(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Resources => "resources",
            Self::ResourceTemplates => "templates",
            Self::Prompts => "prompts",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
            Self::Prompts => "prompts/list",
        }
    }
}

/// One page of a list, and the cursor of the next if there is one.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page as a list result: its items (each made JSON by `item`) under `field`, and
    /// `nextCursor` when there is a next page.
    pub(crate) fn into_result(
        self,
        field: &str,
        item: impl FnMut(T) -> serde_json::Value,
    ) -> serde_json::Value {
        let mut r = serde_json::Map::with_capacity(2);
        let items = self.items.into_iter().map(item).collect();
        r.insert(field.to_owned(), serde_json::Value::Array(items));
        if let Some(c) = self.next_cursor {
            r.insert("nextCursor".into(), serde_json::Value::String(c));
        }
        serde_json::Value::Object(r)
    }
}

/// The page of `all` (the caller's whole `list`, in its order; `key` names an item) that
/// `cursor` points at (the first without one, or with `""`), at most `size` items.
pub(crate) fn page<T>(
    list: List,
    mut all: Vec<T>,
    key: impl Fn(&T) -> &str,
    cursor: Option<&str>,
    size: usize,
) -> Result<Page<T>, ErrorData> {
    let size = size.max(1);
    // some clients send `""` for no cursor
    let cursor = cursor.filter(|c| !c.is_empty());
    if cursor.is_none() && all.len() <= size {
        return Ok(Page {
            items: all,
            next_cursor: None,
        });
    }
    let fingerprint = fingerprint(list, all.iter().map(&key));
    let start = match cursor {
        None => 0,
        Some(c) => {
            let (from, print, offset) = decode(c).ok_or_else(|| invalid(list, None))?;
            if from != list {
                return Err(invalid(list, Some(from)));
            }
            if print != fingerprint {
                return Err(error_data(
                    INVALID_PARAMS,
                    format!(
                        "cursor no longer valid; list again: what {} lists has changed since \
                         this cursor was given out",
                        list.method()
                    ),
                    None,
                ));
            }
            // the gateway gives out no cursor to the first page nor past the end
            if offset == 0 || offset >= all.len() {
                return Err(invalid(list, None));
            }
            offset
        }
    };
    let end = start.saturating_add(size).min(all.len());
    let next_cursor = (end < all.len()).then(|| encode(list, fingerprint, end));
    all.truncate(end);
    all.drain(..start);
    Ok(Page {
        items: all,
        next_cursor,
    })
}

fn invalid(list: List, from: Option<List>) -> ErrorData {
    let why = match from {
        Some(other) => format!("it is a cursor of {}", other.method()),
        None => "it is not a cursor this gateway gave out".to_owned(),
    };
    error_data(
        INVALID_PARAMS,
        format!(
            "invalid cursor for {}: {why}; list again without one",
            list.method()
        ),
        None,
    )
}

/// The first 8 bytes of SHA-256 over the list's tag and its items' keys.
fn fingerprint<'a>(list: List, keys: impl Iterator<Item = &'a str>) -> u64 {
    let mut h = Sha256::new();
    h.update(list.tag().as_bytes());
    for k in keys {
        // a separator that no name or URI contains
        h.update([0]);
        h.update(k.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn encode(list: List, fingerprint: u64, offset: usize) -> String {
    let plain = format!("{}/{fingerprint:016x}/{offset}", list.tag());
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(cursor: &str) -> Option<(List, u64, usize)> {
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).ok()?;
    let mut parts = plain.split('/');
    let (tag, print, offset) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let list = List::ALL.into_iter().find(|l| l.tag() == tag)?;
    Some((
        list,
        u64::from_str_radix(print, 16).ok()?,
        offset.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:03}")).collect()
    }

    fn walk(list: List, all: &[String], size: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = page(list, all.to_vec(), |s| s, cursor.as_deref(), size).unwrap();
            assert!(p.items.len() <= size.max(1));
            seen.extend(p.items);
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return seen,
            }
        }
    }

    #[test]
    fn pages_walk_to_the_whole_list() {
        for (n, size) in [(0, 10), (10, 10), (11, 10), (250, 100), (7, 1), (5, 0)] {
            assert_eq!(
                walk(List::Tools, &names(n), size),
                names(n),
                "{n} by {size}"
            );
        }
    }

    #[test]
    fn a_short_list_has_no_cursor() {
        let p = page(List::Prompts, names(3), |s| s, None, 100).unwrap();
        assert_eq!((p.items.len(), p.next_cursor), (3, None));
    }

    #[test]
    fn stale_foreign_and_made_up_cursors_are_refused() {
        let all = names(30);
        let first = page(List::Tools, all.clone(), |s| s, None, 10).unwrap();
        let cursor = first.next_cursor.unwrap();
        // the list changed under the cursor
        let mut changed = all.clone();
        changed.remove(3);
        let e = page(List::Tools, changed, |s| s, Some(&cursor), 10).unwrap_err();
        assert_eq!(i64::from(e.code.0), INVALID_PARAMS);
        assert!(
            e.message.starts_with("cursor no longer valid; list again"),
            "{}",
            e.message
        );
        // another list's cursor
        let e = page(List::Prompts, all.clone(), |s| s, Some(&cursor), 10).unwrap_err();
        assert!(e.message.contains("cursor of tools/list"), "{}", e.message);
        // never given out
        let print = fingerprint(List::Tools, all.iter().map(String::as_str));
        let (zero, past) = (
            encode(List::Tools, print, 0),
            encode(List::Tools, print, 30),
        );
        for bad in ["zz", "abc", "not a cursor", &zero, &past] {
            let e = page(List::Tools, all.clone(), |s| s, Some(bad), 10).unwrap_err();
            assert_eq!(i64::from(e.code.0), INVALID_PARAMS);
            assert!(
                e.message.starts_with("invalid cursor"),
                "{bad}: {}",
                e.message
            );
        }
        // a long list's cursor on a short one
        let short = names(3);
        let e = page(List::Tools, short, |s| s, Some(&cursor), 10).unwrap_err();
        assert!(
            e.message.starts_with("cursor no longer valid"),
            "{}",
            e.message
        );
    }
}
