//! What a web browser may do with the server: the `Host` of every request and the `Origin` of every
//! WebSocket upgrade are checked (threat model: `docs/protocol.md`, "Browsers").
//!
//! - **Host** (against DNS rebinding: a page of `evil.example` whose name is made to resolve to
//!   127.0.0.1 reaches this server with `Host: evil.example:PORT`): allowed are IP literals (a
//!   browser sends one only when the page itself was loaded from that address), `localhost` and
//!   `*.localhost` (browsers resolve them to loopback themselves), and the names in
//!   `[server] allowed_hosts`. A request without `Host` is not from a browser and is allowed.
//! - **Origin** of the upgrade (a page of another origin opened in the host's browser can open a
//!   WebSocket to any address; loopback peers need no token, so that page could drive the idol):
//!   allowed are the server's own origins (the `Host` the request came to, and
//!   `http(s)://{127.0.0.1, localhost, [::1], the bind address, each allowed host}:PORT`) and the
//!   origins in `[server] allowed_origins`. An upgrade without `Origin` is not from a browser and is
//!   allowed (the token rules still apply off loopback); `null` (a sandboxed frame, a `file://`
//!   page) and every other origin are refused with 403 and a reason.

use std::net::IpAddr;

/// The allowed hosts and origins of one running server.
#[derive(Debug, Clone)]
pub struct Guard {
    port: u16,
    bind: IpAddr,
    /// Lowercase names from `[server] allowed_hosts`; `*` allows any host.
    hosts: Vec<String>,
    /// Normalized origins from `[server] allowed_origins`; `*` allows any origin.
    origins: Vec<String>,
    /// The origins of sibling relays (a relay's viewer page reconnects to them when its relay
    /// dies), kept current by the relay from their announcements on NATS.
    peers: std::sync::Arc<parking_lot::RwLock<Vec<String>>>,
}

impl Guard {
    /// For a server listening on `bind`:`port` (the real port, not 0).
    pub fn new(
        bind: IpAddr,
        port: u16,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Self {
        Guard {
            port,
            bind,
            hosts: allowed_hosts.iter().map(|h| normalize_name(h)).collect(),
            origins: allowed_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
            peers: Default::default(),
        }
    }

    /// Allow pages of these origins too (the sibling relays' `http(s)://host:port`), replacing the
    /// previous list.
    pub fn set_peer_origins(&self, origins: impl IntoIterator<Item = String>) {
        *self.peers.write() = origins.into_iter().map(|o| normalize_origin(&o)).collect();
    }

    /// The web origin of a page served by the server at WebSocket URL `ws` (`ws://h:p/...` →
    /// `http://h:p`), `None` when `ws` is not a ws:// or wss:// URL.
    pub fn origin_of_ws_url(ws: &str) -> Option<String> {
        let (scheme, rest) = ws.split_once("://")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => "http",
            "wss" => "https",
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        split_authority(authority)?;
        Some(normalize_origin(&format!("{scheme}://{authority}")))
    }

    /// `Ok` when a request with this `Host` header (`None`: none sent) may be served.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), String> {
        let Some(raw) = host else {
            return Ok(());
        };
        let name = split_authority(raw).map(|(h, _)| h);
        match name {
            Some(name) if self.host_allowed(&name) => Ok(()),
            _ => Err(format!(
                "host {:?} is not a name of this server: browse it at http://127.0.0.1:{} (or localhost), \
                 or add the name to [server] allowed_hosts in idol.toml (this check keeps DNS-rebinding \
                 web pages out)",
                shorten(raw),
                self.port
            )),
        }
    }

    fn host_allowed(&self, name: &str) -> bool {
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|h| h == "*" || h == name)
    }

    /// `Ok` when a WebSocket upgrade with this `Origin` (`None`: none sent), arriving with this
    /// `Host`, may be accepted.
    pub fn check_origin(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        let Some(raw) = origin else {
            return Ok(());
        };
        let origin = normalize_origin(raw);
        if self.origins.iter().any(|o| o == "*" || *o == origin)
            || self.own_origin(&origin, host)
            || self.peers.read().contains(&origin)
        {
            return Ok(());
        }
        let what = if origin == "null" {
            "a page with an opaque origin (null: a sandboxed frame or a file:// page)".to_string()
        } else {
            format!("a page of {:?}", shorten(raw))
        };
        Err(format!(
            "{what} may not open the stream: only pages this server serves (http://127.0.0.1:{}/) \
             and the origins in [server] allowed_origins in idol.toml may",
            self.port
        ))
    }

    /// Whether `origin` (normalized) is one of the server's own: same scheme-less authority as the
    /// request's `Host`, or a loopback name, the bind address or an allowed host on the server's port.
    fn own_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if !matches!(scheme, "http" | "https") || authority.contains(['/', '?', '#', '@']) {
            return false;
        }
        if let Some(host) = host
            && authority == host.to_ascii_lowercase()
            && self.check_host(Some(host)).is_ok()
        {
            return true;
        }
        let Some((name, port)) = split_authority(authority) else {
            return false;
        };
        let default = if scheme == "https" { 443 } else { 80 };
        if port.unwrap_or(default) != self.port {
            return false;
        }
        let ip = name.parse::<IpAddr>().ok();
        name == "localhost"
            || ip.is_some_and(|ip| {
                ip.is_loopback() || (!self.bind.is_unspecified() && ip == self.bind)
            })
            || self.hosts.iter().any(|h| h != "*" && *h == name)
    }
}

/// `host[:port]` or `[v6][:port]` → (lowercase host without brackets or a trailing dot, port);
/// `None` when it is not of that form.
fn split_authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    if host.is_empty() {
        return None;
    }
    Some((normalize_name(host), port))
}

fn normalize_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn normalize_origin(s: &str) -> String {
    s.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// A header value to quote in a refusal: at most 100 characters of it.
fn shorten(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bind: [u8; 4]) -> Guard {
        Guard::new(
            IpAddr::from(bind),
            8787,
            &["idol.lan".into()],
            &["https://overlay.example".into()],
        )
    }

    #[test]
    fn hosts_are_addresses_localhost_or_configured() {
        let g = guard([127, 0, 0, 1]);
        for ok in [
            None,
            Some("127.0.0.1:8787"),
            Some("localhost:8787"),
            Some("LOCALHOST"),
            Some("idol.localhost:8787"),
            Some("[::1]:8787"),
            Some("192.168.1.20:8787"),
            Some("idol.lan:8787"),
            Some("IDOL.LAN."),
        ] {
            assert!(g.check_host(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "evil.example:8787",
            "evil.example",
            "localhost.evil.example:8787",
            "127.0.0.1.evil.example",
            "",
            ":8787",
            "[::1",
            "idol.lan:80x",
        ] {
            let e = g.check_host(Some(bad)).unwrap_err();
            assert!(e.contains("allowed_hosts"), "{e}");
        }
        let any = Guard::new(IpAddr::from([0, 0, 0, 0]), 8787, &["*".into()], &[]);
        assert!(any.check_host(Some("whatever.example")).is_ok());
    }

    #[test]
    fn origins_are_the_servers_own_or_configured() {
        let g = guard([127, 0, 0, 1]);
        let host = Some("127.0.0.1:8787");
        for ok in [
            None,
            Some("http://127.0.0.1:8787"),
            Some("http://localhost:8787"),
            Some("http://[::1]:8787"),
            Some("http://idol.lan:8787"),
            Some("https://overlay.example"),
            Some("https://overlay.example/"),
        ] {
            assert!(g.check_origin(ok, host).is_ok(), "{ok:?}");
        }
        // The page came from the address the request went to (a LAN address of a 0.0.0.0 server).
        assert!(
            g.check_origin(Some("http://192.168.1.20:8787"), Some("192.168.1.20:8787"))
                .is_ok()
        );
        for bad in [
            "null",
            "https://evil.example",
            "http://127.0.0.1:3000",
            "http://localhost",
            "http://192.168.1.20:8787",
            "chrome-extension://abcdef",
            "http://evil.example:8787",
            "http://127.0.0.1:8787@evil.example",
        ] {
            let e = g.check_origin(Some(bad), host).unwrap_err();
            assert!(e.contains("allowed_origins"), "{bad}: {e}");
        }
        assert!(
            g.check_origin(Some("null"), host)
                .unwrap_err()
                .contains("opaque")
        );
        // A rebinding page's Host is refused, so its matching Origin is not "own" either.
        assert!(
            g.check_origin(Some("http://evil.example:8787"), Some("evil.example:8787"))
                .is_err()
        );
        // The bind address of a server on a LAN address.
        let lan = guard([10, 0, 0, 5]);
        assert!(lan.check_origin(Some("http://10.0.0.5:8787"), None).is_ok());
        assert!(
            lan.check_origin(Some("http://10.0.0.6:8787"), None)
                .is_err()
        );
    }

    #[test]
    fn sibling_relays_pages_may_open_the_stream() {
        let g = guard([127, 0, 0, 1]);
        let peer = "http://127.0.0.1:9001";
        assert!(g.check_origin(Some(peer), Some("127.0.0.1:8787")).is_err());
        let o = Guard::origin_of_ws_url("ws://127.0.0.1:9001/v1/stream").unwrap();
        assert_eq!(o, peer);
        g.set_peer_origins([o]);
        assert!(g.check_origin(Some(peer), Some("127.0.0.1:8787")).is_ok());
        assert_eq!(
            Guard::origin_of_ws_url("wss://Relay.example/v1/stream").as_deref(),
            Some("https://relay.example")
        );
        assert_eq!(Guard::origin_of_ws_url("http://x/"), None);
        assert_eq!(Guard::origin_of_ws_url("ws://"), None);
        g.set_peer_origins([]);
        assert!(g.check_origin(Some(peer), Some("127.0.0.1:8787")).is_err());
    }
}
