//! Key extractors: which bucket a request belongs to, for every layer that keys its state
//! (rate limits per client, breakers per upstream, ...).
//!
//! | extractor | key | when to use |
//! | --- | --- | --- |
//! | [`GlobalKey`] | `()` | one shared state for every request |
//! | [`PeerIp`] | the socket peer's IP | clients connect to you directly |
//! | [`TrustedProxyIp`] | the client IP, read through trusted proxies | behind load balancers / CDNs |
//! | [`HeaderKey`] | a header's value | API keys, tenant ids set by an authenticating proxy |
//! | closure `Fn(&Request<B>) -> Option<K>` | anything | your own rule |
//!
//! IP keys put IPv6 clients in groups by network prefix (default `/64`, what one subscriber
//! usually owns), so a client cannot dodge a per-IP limit by cycling through its own addresses.
//! IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! # Where the peer address comes from
//!
//! [`PeerIp`] and [`TrustedProxyIp`] read the connection's remote address from the request
//! extensions: a [`SocketAddr`] extension, or axum's `ConnectInfo<SocketAddr>` with the `axum`
//! feature (serve with `into_make_service_with_connect_info::<SocketAddr>()`). With plain hyper,
//! insert the `SocketAddr` you got from `accept()` into each request's extensions. A request
//! with no peer address has no key: each layer documents what it does then.
//!
//! # Spoofing
//!
//! `X-Forwarded-For` is written by whoever sent the request. [`TrustedProxyIp`] believes it only
//! as far as it was written by proxies you list: it reads the chain from the right (the entry the
//! nearest proxy appended) and stops at the first address that is not a trusted proxy. A client
//! talking to you directly cannot change its key by sending the header.
//!
//! ```
//! use std::net::SocketAddr;
//! use bulwark::key::{KeyExtractor, TrustedProxyIp};
//! use http::Request;
//!
//! let key = TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap();
//!
//! // From the load balancer: the client is the rightmost untrusted entry.
//! let mut req = Request::builder()
//!     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.5")
//!     .body(())
//!     .unwrap();
//! req.extensions_mut().insert("10.0.0.1:443".parse::<SocketAddr>().unwrap());
//! assert_eq!(key.extract(&req), Some("203.0.113.7".parse().unwrap()));
//!
//! // Straight from the internet: the header is ignored.
//! req.extensions_mut().insert("198.51.100.9:5000".parse::<SocketAddr>().unwrap());
//! assert_eq!(key.extract(&req), Some("198.51.100.9".parse().unwrap()));
//! ```

use std::{
    fmt,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use http::{HeaderName, HeaderValue, Request, header::FORWARDED};

use crate::ConfigError;

/// Finds the key a request's state is kept under.
///
/// `None` means the request has no key (e.g. no peer address); the layer's documented
/// "missing key" policy applies.
pub trait KeyExtractor<B>: Clone + Send + Sync + 'static {
    /// The key type.
    type Key: Clone + Hash + Eq + fmt::Debug + Send + Sync + 'static;

    /// The key of `req`, if it has one.
    fn extract(&self, req: &Request<B>) -> Option<Self::Key>;
}

impl<F, B, K> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<K> + Clone + Send + Sync + 'static,
    K: Clone + Hash + Eq + fmt::Debug + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<K> {
        self(req)
    }
}

/// One key for every request: the state is global.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct GlobalKey;

impl<B> KeyExtractor<B> for GlobalKey {
    type Key = ();

    #[inline]
    fn extract(&self, _: &Request<B>) -> Option<()> {
        Some(())
    }
}

/// The IP address of the connection's peer, IPv6 grouped by prefix (default `/64`).
#[derive(Debug, Clone, Copy)]
pub struct PeerIp {
    ipv6_prefix: u8,
}

impl Default for PeerIp {
    fn default() -> Self {
        Self { ipv6_prefix: 64 }
    }
}

impl PeerIp {
    /// Keys by peer IP, IPv6 grouped by `/64`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Groups IPv6 peers by a `/prefix` network instead (128 keeps every address apart).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] if `prefix` is over 128.
    pub fn ipv6_prefix(self, prefix: u8) -> Result<Self, ConfigError> {
        check_prefix(prefix, 128)?;
        Ok(Self {
            ipv6_prefix: prefix,
        })
    }
}

impl<B> KeyExtractor<B> for PeerIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        peer_ip(req).map(|ip| group(ip, self.ipv6_prefix))
    }
}

/// The client's IP address, read through the `X-Forwarded-For` (or `Forwarded`) chain as far as
/// it was written by trusted proxies; the peer's address when the peer is not a trusted proxy.
///
/// The chain is read from the right. Each entry was appended by the hop to its right; once an
/// entry is not a trusted proxy, it is the client. If every entry is trusted, the leftmost is
/// the client. An entry that is not an IP address (`unknown`, an obfuscated `Forwarded`
/// identifier, garbage) ends the walk at the last trusted hop that reported it, so garbage never
/// lets a client pick its own key.
#[derive(Debug, Clone)]
pub struct TrustedProxyIp {
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
    ipv6_prefix: u8,
}

/// Which header [`TrustedProxyIp`] reads the chain from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default: what most proxies write).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (the `for` parameter of each element).
    Forwarded,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl TrustedProxyIp {
    /// Trusts proxies in `trusted` networks.
    #[must_use]
    pub fn new(trusted: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            trusted: trusted.into_iter().collect(),
            header: ForwardedHeader::default(),
            ipv6_prefix: 64,
        }
    }

    /// Trusts proxies in networks written as text, e.g. `["10.0.0.0/8", "fd00::/8"]`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidIpNet`] or [`ConfigError::InvalidPrefix`] for the first entry that
    /// does not parse.
    pub fn try_new<I, S>(trusted: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = trusted
            .into_iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Self::new(nets))
    }

    /// Reads the chain from `header` instead of `X-Forwarded-For`.
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Groups IPv6 clients by a `/prefix` network instead of `/64`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] if `prefix` is over 128.
    pub fn ipv6_prefix(mut self, prefix: u8) -> Result<Self, ConfigError> {
        check_prefix(prefix, 128)?;
        self.ipv6_prefix = prefix;
        Ok(self)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client address, before IPv6 grouping.
    fn client<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = peer_ip(req)?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut current = peer;
        let name = match self.header {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        };
        for value in req.headers().get_all(name).iter().rev() {
            // Entry by entry from the right: bytes a client put on the left of a line its proxy
            // appended to must not hide the entries the proxies added after them.
            for entry in value.as_bytes().rsplit(|&b| b == b',') {
                let Ok(entry) = std::str::from_utf8(entry) else {
                    return Some(current);
                };
                let ip = match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(entry),
                    ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
                };
                let Some(ip) = ip else {
                    return Some(current);
                };
                current = ip;
                if !self.is_trusted(ip) {
                    return Some(ip);
                }
            }
        }
        Some(current)
    }
}

impl<B> KeyExtractor<B> for TrustedProxyIp {
    type Key = IpAddr;

    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        self.client(req).map(|ip| group(ip, self.ipv6_prefix))
    }
}

/// A request header's value, e.g. an API key set by your authenticating proxy. A request
/// without the header (or with an empty one) has no key.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the value of header `name`.
    #[must_use]
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    type Key = HeaderValue;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<HeaderValue> {
        req.headers()
            .get(&self.name)
            .filter(|v| !v.is_empty())
            .cloned()
    }
}

/// The effective request URI's authority and path-and-query (RFC 9110 §7.1): the authority
/// from the URI (absolute form, HTTP/2's `:authority`), else from the `Host` header (HTTP/1.1's
/// origin form), else empty; the path `/` when the URI has none. What the cache and the last
/// good response key requests by, so that two virtual hosts never share an entry.
pub(crate) fn request_target(parts: &http::request::Parts) -> (&str, &str) {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    (authority, pq)
}

/// The connection peer's IP, from a [`SocketAddr`] extension or axum's `ConnectInfo`.
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(addr) = req.extensions().get::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip().to_canonical());
    }
    None
}

/// An IP network: an address and a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`.
///
/// A bare address parses as a single-host network (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` bits; host bits are cleared.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] if `prefix` is over 32 for IPv4 or 128 for IPv6.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ConfigError> {
        let addr = addr.to_canonical();
        check_prefix(prefix, max_prefix(addr))?;
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for IpNet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidIpNet {
            input: s.to_owned(),
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| invalid())?,
            None => max_prefix(addr.to_canonical()),
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn check_prefix(prefix: u8, max: u8) -> Result<(), ConfigError> {
    if prefix > max {
        Err(ConfigError::InvalidPrefix { prefix, max })
    } else {
        Ok(())
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// IPv4 as is; IPv6 reduced to its `/prefix` network.
#[inline]
fn group(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => mask(ip, ipv6_prefix),
    }
}

/// One chain entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, `"[::1]"`.
fn parse_node(entry: &str) -> Option<IpAddr> {
    let s = entry.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// The value of the `for` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_key_is_always_there() {
        assert_eq!(GlobalKey.extract(&Request::new(())), Some(()));
    }

    #[test]
    fn peer_ip_reads_the_socket_and_groups_ipv6() {
        let k = PeerIp::new();
        assert_eq!(
            k.extract(&req("192.0.2.1:1234", &[])),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            k.extract(&req("[2001:db8:1:2:3:4:5:6]:1", &[])),
            Some(ip("2001:db8:1:2::"))
        );
        assert_eq!(
            k.extract(&req("[::ffff:192.0.2.1]:1", &[])),
            Some(ip("192.0.2.1")),
            "IPv4-mapped counts as IPv4"
        );
        let exact = PeerIp::new().ipv6_prefix(128).unwrap();
        assert_eq!(
            exact.extract(&req("[2001:db8::1]:1", &[])),
            Some(ip("2001:db8::1"))
        );
        assert!(PeerIp::new().ipv6_prefix(129).is_err());
        assert_eq!(k.extract(&Request::new(())), None, "no peer, no key");
    }

    #[test]
    fn peer_ip_ignores_forwarding_headers() {
        let k = PeerIp::new();
        let r = req("192.0.2.1:1", &[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(k.extract(&r), Some(ip("192.0.2.1")));
    }

    #[test]
    fn spoofed_xff_from_an_untrusted_peer_is_ignored() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap();
        let r = req(
            "198.51.100.9:5000",
            &[("x-forwarded-for", "1.1.1.1, 10.0.0.2")],
        );
        assert_eq!(k.extract(&r), Some(ip("198.51.100.9")));
    }

    #[test]
    fn chain_through_two_trusted_proxies_yields_the_client() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8", "172.16.0.0/12"]).unwrap();
        // client -> 172.16.0.9 (CDN edge) -> 10.0.0.5 (LB) -> us; the client forged a first entry.
        let r = req(
            "10.0.0.5:443",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 172.16.0.9")],
        );
        assert_eq!(k.extract(&r), Some(ip("203.0.113.7")));
        // The same chain split over several header lines.
        let r = req(
            "10.0.0.5:443",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.7, 172.16.0.9"),
            ],
        );
        assert_eq!(k.extract(&r), Some(ip("203.0.113.7")));
    }

    #[test]
    fn all_trusted_means_the_leftmost_and_garbage_stops_the_walk() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap();
        let r = req("10.0.0.5:1", &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(k.extract(&r), Some(ip("10.1.1.1")));
        let r = req("10.0.0.5:1", &[("x-forwarded-for", "1.2.3.4, unknown")]);
        assert_eq!(
            k.extract(&r),
            Some(ip("10.0.0.5")),
            "garbage: last trusted hop"
        );
        let r = req("10.0.0.5:1", &[]);
        assert_eq!(
            k.extract(&r),
            Some(ip("10.0.0.5")),
            "no header: the proxy itself"
        );
    }

    #[test]
    fn client_bytes_on_the_left_do_not_hide_the_proxys_entry() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap();
        // The client sent `X-Forwarded-For: \xff`; its proxy appended the real address.
        let mut r = req("10.0.0.5:1", &[]);
        r.headers_mut().insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap(),
        );
        assert_eq!(k.extract(&r), Some(ip("203.0.113.7")));
        // Non-UTF-8 in an entry the walk reaches stops it at the last trusted hop.
        let mut r = req("10.0.0.5:1", &[]);
        r.headers_mut().insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_bytes(b"203.0.113.7, \xff").unwrap(),
        );
        assert_eq!(k.extract(&r), Some(ip("10.0.0.5")));
    }

    #[test]
    fn xff_entries_with_ports_and_brackets() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap();
        let r = req("10.0.0.5:1", &[("x-forwarded-for", "[2001:db8::7]:80")]);
        assert_eq!(k.extract(&r), Some(ip("2001:db8::")));
        let r = req("10.0.0.5:1", &[("x-forwarded-for", "203.0.113.7:4711")]);
        assert_eq!(k.extract(&r), Some(ip("203.0.113.7")));
    }

    #[test]
    fn forwarded_header() {
        let k = TrustedProxyIp::try_new(["10.0.0.0/8"])
            .unwrap()
            .header(ForwardedHeader::Forwarded);
        let r = req(
            "10.0.0.5:1",
            &[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9"#,
            )],
        );
        assert_eq!(k.extract(&r), Some(ip("2001:db8:cafe::")));
        let r = req("10.0.0.5:1", &[("forwarded", "for=_hidden, for=10.0.0.9")]);
        assert_eq!(k.extract(&r), Some(ip("10.0.0.9")));
    }

    #[test]
    fn header_key_and_closure() {
        let k = HeaderKey::new(HeaderName::from_static("x-api-key"));
        let r = req("192.0.2.1:1", &[("x-api-key", "abc")]);
        assert_eq!(k.extract(&r), Some(HeaderValue::from_static("abc")));
        assert_eq!(k.extract(&req("192.0.2.1:1", &[("x-api-key", "")])), None);
        assert_eq!(k.extract(&req("192.0.2.1:1", &[])), None);

        let by_path = |r: &Request<()>| Some(r.uri().path().to_owned());
        assert_eq!(by_path.extract(&r), Some("/".to_owned()));
    }

    #[test]
    fn ip_nets() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::a00:1")));
        let host: IpNet = "2001:db8::1".parse().unwrap();
        assert!(host.contains(ip("2001:db8::1")) && !host.contains(ip("2001:db8::2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(matches!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(ConfigError::InvalidPrefix {
                prefix: 33,
                max: 32
            })
        ));
        assert!(matches!(
            "nope/8".parse::<IpNet>(),
            Err(ConfigError::InvalidIpNet { .. })
        ));
    }
}
