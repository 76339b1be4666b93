//! Who the client is, and what it may see: the address a request is counted, logged and
//! audited under (the TCP peer, or the client a trusted reverse proxy names in
//! `X-Forwarded-For`), whether that address may read from the server at all (`--allow`), and
//! whether it may read the operator's pages (`/metrics`, the status page's client lists),
//! which tell what each node fetches and so what it runs.
//!
//! Both rules are address ranges, [`Cidr`]s, parsed by the `ipnet` crate. The client is
//! resolved once per request, by the router's one layer, which replaces the request's
//! [`crate::ClientAddr`]: the per-client stream shares, the request log, the metrics and the
//! audit trail all see the same address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is the range of that one
/// address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Whether `ip` is in the range (an IPv4 address seen through an IPv6 socket as
    /// `::ffff:a.b.c.d` is that IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // 10.1.2.3/8 is taken as written, as the network it names (10.0.0.0/8).
            return Ok(Cidr(net.trunc()));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Cidr(IpNet::from(ip.to_canonical()))),
            Err(_) => Err(format!("{s:?} is not an address range like 10.0.0.0/8, fd00::/8 or 192.0.2.7")),
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The default of `--admin-allow`: this host only (127.0.0.0/8 and ::1).
pub fn default_admin_allow() -> Vec<Cidr> {
    vec![
        Cidr(IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("valid prefix")),
        Cidr(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST))),
    ]
}

/// The process's rules for client addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Who may read `/metrics` and the status page's client lists.
    pub admin_allow: Vec<Cidr>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Who may read at all (`None`: everyone); the admins may too.
    pub allow: Option<Vec<Cidr>>,
}

impl Default for Access {
    /// This host is the admin; no proxy is trusted.
    fn default() -> Self {
        Access { admin_allow: default_admin_allow(), trusted_proxies: Vec::new(), allow: None }
    }
}

impl Access {
    /// Whether `client` may read the operator's pages.
    pub fn is_admin(&self, client: IpAddr) -> bool {
        self.admin_allow.iter().any(|net| net.contains(client))
    }

    /// Whether `client` may read from this server at all: `--allow` names it, or it is an
    /// admin, or there is no `--allow`.
    pub fn may_read(&self, client: IpAddr) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.iter().any(|net| net.contains(client))) || self.is_admin(client)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`: `peer` itself, unless it
    /// is a trusted proxy; then the right-most address of `X-Forwarded-For` (every such header,
    /// in order) that is not a trusted proxy, since each proxy appends the address it saw and
    /// only the trusted ones' appends are believed. When every address in it is trusted, the
    /// left-most; when one does not parse, the trusted hop that appended it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted_proxies.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` element: an address, possibly with a port (`192.0.2.7:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn ranges_parse_as_written() {
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("::ffff:10.0.0.1".parse::<Cidr>().unwrap().to_string(), "10.0.0.1/32");
        for bad in ["", "10.0.0.0/33", "example.org", "10.0.0.0/8/1", "10.0.0.0/-1"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains("is not an address range"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_admin_is_this_host_by_default() {
        let access = Access::default();
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(access.is_admin(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "0.0.0.0", "::2", "192.168.1.1"] {
            assert!(!access.is_admin(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let access = Access { trusted_proxies: cidrs(&["10.0.0.0/24", "::1"]), ..Access::default() };
        let peer = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer: the header is ignored, whatever it says.
        assert_eq!(access.client(peer("192.0.2.9"), &xff(&["10.0.0.5"])), peer("192.0.2.9"));
        // A trusted peer without the header: the peer.
        assert_eq!(access.client(peer("10.0.0.1"), &HeaderMap::new()), peer("10.0.0.1"));
        // The right-most untrusted address; what the client itself wrote (left of it) is not
        // believed.
        assert_eq!(access.client(peer("10.0.0.1"), &xff(&["6.6.6.6, 192.0.2.7, 10.0.0.2"])), peer("192.0.2.7"));
        // Several headers are one list, in order.
        assert_eq!(access.client(peer("10.0.0.1"), &xff(&["6.6.6.6", "192.0.2.7"])), peer("192.0.2.7"));
        // Ports and brackets, as some proxies write them; an IPv6 loopback proxy.
        assert_eq!(access.client(peer("::1"), &xff(&["[2001:db8::7]:4711"])), peer("2001:db8::7"));
        assert_eq!(access.client(peer("::ffff:10.0.0.1"), &xff(&["192.0.2.7:80"])), peer("192.0.2.7"));
        // Every hop trusted: the left-most.
        assert_eq!(access.client(peer("10.0.0.1"), &xff(&["10.0.0.3, 10.0.0.2"])), peer("10.0.0.3"));
        // Garbage: the trusted hop that appended it.
        assert_eq!(access.client(peer("10.0.0.1"), &xff(&["garbage, 10.0.0.2"])), peer("10.0.0.2"));
        assert_eq!(access.client(peer("10.0.0.1"), &xff(&["<script>"])), peer("10.0.0.1"));
        // No proxy trusted: never read.
        assert_eq!(Access::default().client(peer("127.0.0.1"), &xff(&["192.0.2.7"])), peer("127.0.0.1"));
    }
}
