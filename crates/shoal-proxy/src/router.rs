//! Routing, node-http-proxy style: a request's host and path pick an upstream.
//!
//! Routes naming a host win over host-less ones; among the matches the longest
//! path prefix wins (`www.mywebsite.com/friends` before `www.mywebsite.com`).

use crate::config::RouteConfig;

/// Compiled routes.
#[derive(Debug, Clone)]
pub struct Router {
    /// Sorted: host routes first, then longer paths first.
    routes: Vec<RouteConfig>,
}

/// The `Host` header without port, lower-case, trailing dot removed.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        // [::1]:8080
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

impl Router {
    /// Compile `routes`.
    pub fn new(mut routes: Vec<RouteConfig>) -> Self {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path.len().cmp(&a.path.len()))
        });
        Router { routes }
    }

    /// The upstream for `host` (already normalised) and `path`, if any route matches.
    pub fn route(&self, host: &str, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| {
                r.host.as_deref().is_none_or(|h| h == host) && path.starts_with(r.path.as_str())
            })
            .map(|r| r.upstream.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, path: &str, up: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(String::from),
            path: path.into(),
            upstream: up.into(),
        }
    }

    #[test]
    fn host_then_longest_path() {
        let router = Router::new(vec![
            r(None, "/", "default"),
            r(Some("www.mywebsite.com"), "/", "site"),
            r(Some("www.mywebsite.com"), "/friends", "friends"),
            r(Some("www.mywebsite.com"), "/foes", "foes"),
            r(Some("www.myothersite.com"), "/", "other"),
        ]);
        assert_eq!(
            router.route("www.mywebsite.com", "/friends/list"),
            Some("friends")
        );
        assert_eq!(router.route("www.mywebsite.com", "/foes"), Some("foes"));
        assert_eq!(router.route("www.mywebsite.com", "/"), Some("site"));
        assert_eq!(
            router.route("www.myothersite.com", "/friends"),
            Some("other")
        );
        assert_eq!(router.route("unknown", "/x"), Some("default"));
        let strict = Router::new(vec![r(Some("a"), "/", "a")]);
        assert_eq!(strict.route("b", "/"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("WWW.Example.com:8080"), "www.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }
}
