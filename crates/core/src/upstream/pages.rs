//! Reading a server's whole list (`tools/list`, `resources/list`, `resources/templates/list`,
//! `prompts/list`) by following its `nextCursor`, bounded by [`Bounds`]. A server whose cursor
//! repeats, or whose list runs past a bound, is cut off with a warning naming it; what was read
//! is kept. A leaf: the caller says how one page is fetched.

use std::collections::HashSet;
use std::future::Future;

use serde_json::{Value, json};

/// How much of one list a server may hand us.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Pages read at most: a server that still has a cursor after them is cut off.
    pub(crate) pages: usize,
    /// Items kept at most, whatever their pages.
    pub(crate) items: usize,
}

/// The bounds of every list read from a server.
pub(crate) const BOUNDS: Bounds = Bounds {
    pages: 100,
    items: 10_000,
};

/// Every item of list `method` (its pages' `field`), fetching each page with `fetch` (given the
/// page's params: `{}`, then `{"cursor": …}`). An error on the first page is the answer; an
/// error on a later one keeps what was read, with a warning, as the bounds do.
pub(crate) async fn collect<E, F, Fut>(
    server: &str,
    method: &str,
    field: &str,
    bounds: Bounds,
    mut fetch: F,
) -> Result<Vec<Value>, E>
where
    E: std::fmt::Display,
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for page in 0..bounds.pages {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let mut result = match fetch(params).await {
            Ok(r) => r,
            Err(e) if page == 0 => return Err(e),
            Err(e) => {
                tracing::warn!(server, method, error = %e, kept = items.len(),
                    "a later page failed; keeping the items read");
                return Ok(items);
            }
        };
        if let Some(Value::Array(list)) = result.get_mut(field).map(Value::take) {
            items.extend(list);
        }
        if items.len() > bounds.items {
            tracing::warn!(
                server,
                method,
                max = bounds.items,
                "the list is longer than allowed; keeping its first items"
            );
            items.truncate(bounds.items);
            return Ok(items);
        }
        // an empty cursor is taken for none: some servers write `""` at the end
        let next = match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => c.to_owned(),
            _ => return Ok(items),
        };
        if !seen.insert(next.clone()) {
            tracing::warn!(server, method, cursor = %next, kept = items.len(),
                "the server repeated a cursor; keeping the items read");
            return Ok(items);
        }
        cursor = Some(next);
    }
    tracing::warn!(
        server,
        method,
        pages = bounds.pages,
        kept = items.len(),
        "the list has more pages than allowed; keeping the items read"
    );
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server of `n` items in pages of `k`; `repeat`: its cursor never moves past the second
    /// page.
    async fn list(n: usize, k: usize, repeat: bool, bounds: Bounds) -> Vec<Value> {
        let fetch = |params: Value| async move {
            let start: usize = params["cursor"]
                .as_str()
                .map_or(0, |c| c.parse().unwrap_or(0));
            let end = (start + k).min(n);
            let mut page = json!({"items": (start..end).collect::<Vec<_>>()});
            if end < n {
                page["nextCursor"] = json!(if repeat { k } else { end }.to_string());
            }
            Ok::<_, String>(page)
        };
        collect("fx", "tools/list", "items", bounds, fetch)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn follows_cursors_to_the_end() {
        assert_eq!(list(25, 10, false, BOUNDS).await.len(), 25);
        assert_eq!(list(0, 10, false, BOUNDS).await.len(), 0);
    }

    #[tokio::test]
    async fn a_repeated_cursor_ends_the_list() {
        // pages 0..10, 10..20, then the cursor "10" again
        assert_eq!(list(100, 10, true, BOUNDS).await.len(), 20);
    }

    #[tokio::test]
    async fn the_bounds_cut_long_lists() {
        let pages = Bounds {
            pages: 3,
            items: 1000,
        };
        assert_eq!(list(100, 10, false, pages).await.len(), 30);
        let items = Bounds {
            pages: 100,
            items: 15,
        };
        assert_eq!(list(100, 10, false, items).await.len(), 15);
    }

    #[tokio::test]
    async fn only_a_first_page_error_fails() {
        let mut calls = 0;
        let fetch = |_| {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    Ok(json!({"items": [1], "nextCursor": "a"}))
                } else {
                    Err("broken".to_owned())
                }
            }
        };
        let got = collect("fx", "tools/list", "items", BOUNDS, fetch).await;
        assert_eq!(got.unwrap().len(), 1);
        let fail = |_| async { Err::<Value, _>("down".to_owned()) };
        assert!(
            collect("fx", "tools/list", "items", BOUNDS, fail)
                .await
                .is_err()
        );
    }
}
