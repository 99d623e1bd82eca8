//! The client address behind trusted proxies (`TrustedProxyIp`), from `X-Forwarded-For` or
//! `Forwarded` chains split over several header lines, against a model of the rule: walk the
//! chain from the right; an address outside the trusted networks is the client; an entry that
//! is not an address ends the walk at the last trusted hop. So the answer is never an address
//! that an untrusted hop wrote.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use bulwark::key::{ForwardedHeader, IpNet, KeyExtractor, TrustedProxyIp};
use http::Request;
use libfuzzer_sys::fuzz_target;

/// An address from a small pool, so that chains and trusted networks meet often.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Addr {
    family: u8,
    low: u8,
}

impl Addr {
    fn ip(self) -> IpAddr {
        let low = self.low % 8;
        match self.family % 4 {
            0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, low)),
            1 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, low)),
            2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(low))),
            // IPv4-mapped: the same host as family 0.
            _ => IpAddr::V6(Ipv4Addr::new(10, 0, 0, low).to_ipv6_mapped()),
        }
    }
}

/// One chain entry, as a proxy (or a client) would write it.
#[derive(Arbitrary, Debug, Clone)]
enum Entry {
    /// An address, bare, with a port, bracketed, quoted.
    Node {
        addr: Addr,
        port: Option<u16>,
        quoted: bool,
        spaces: bool,
    },
    /// Not an address: `unknown`, an obfuscated `_hidden` identifier, letters.
    Junk(u8),
}

impl Entry {
    fn render(&self, forwarded: bool) -> String {
        let node = match self {
            Entry::Node {
                addr,
                port,
                quoted,
                spaces,
            } => {
                let ip = addr.ip();
                let mut s = match (ip, port) {
                    (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
                    (ip, Some(p)) => format!("{ip}:{p}"),
                    (ip, None) => ip.to_string(),
                };
                if *quoted || (forwarded && (ip.is_ipv6() || port.is_some())) {
                    s = format!("\"{s}\"");
                }
                if *spaces {
                    s = format!("  {s} ");
                }
                s
            }
            Entry::Junk(n) => match n % 3 {
                0 => "unknown".to_owned(),
                1 => "_hidden".to_owned(),
                _ => "proxy-x".to_owned(),
            },
        };
        if forwarded {
            format!("for={node};proto=https")
        } else {
            node
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Entry::Node { addr, .. } => Some(addr.ip().to_canonical()),
            Entry::Junk(_) => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    trusted: Vec<(Addr, u8)>,
    peer: Addr,
    forwarded: bool,
    /// Header lines, in order; each a list of entries.
    lines: Vec<Vec<Entry>>,
    /// Bytes a client put in a line of its own, first (the left end of the chain).
    raw: Option<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let nets: Vec<IpNet> = input
        .trusted
        .iter()
        .filter_map(|(a, p)| IpNet::new(a.ip(), p % 129).ok())
        .collect();
    let header = if input.forwarded {
        ForwardedHeader::Forwarded
    } else {
        ForwardedHeader::XForwardedFor
    };
    let key = TrustedProxyIp::new(nets.clone())
        .header(header)
        .ipv6_prefix(128)
        .unwrap();
    let name = if input.forwarded {
        "forwarded"
    } else {
        "x-forwarded-for"
    };

    let mut req = Request::new(());
    if let Some(raw) = input.raw {
        if let Ok(v) = http::HeaderValue::from_bytes(raw) {
            req.headers_mut().append(name, v);
        }
    }
    let raw_line = req.headers().contains_key(name);
    // What each appended line holds, left to right: an address, or `None` for anything else
    // (an empty line is one empty entry).
    let mut entries: Vec<Option<IpAddr>> = Vec::new();
    for line in &input.lines {
        let text: Vec<String> = line.iter().map(|e| e.render(input.forwarded)).collect();
        if let Ok(v) = http::HeaderValue::from_str(&text.join(",")) {
            req.headers_mut().append(name, v);
            if line.is_empty() {
                entries.push(None);
            }
            entries.extend(line.iter().map(Entry::ip));
        }
    }
    let peer = input.peer.ip();
    req.extensions_mut().insert(SocketAddr::new(peer, 4000));
    let got = key.extract(&req).expect("a request with a peer has a key");

    let trusted = |ip: IpAddr| nets.iter().any(|n| n.contains(ip));
    // The model: right to left over the entries the lines hold.
    let mut current = peer.to_canonical();
    let mut decided = !trusted(current);
    if !decided {
        for entry in entries.iter().rev() {
            match *entry {
                None => {
                    decided = true;
                    break;
                }
                Some(ip) => {
                    current = ip;
                    if !trusted(ip) {
                        decided = true;
                        break;
                    }
                }
            }
        }
    }
    if decided || !raw_line {
        assert_eq!(got, current, "chain {:?}", req.headers());
    } else {
        // Every hop the lines name is trusted: the client's own line decides, and whatever it
        // says, the answer is an address it wrote or the last trusted hop.
        let _ = got;
    }
    if !trusted(peer) {
        assert_eq!(got, peer.to_canonical(), "an untrusted peer is the client");
    }
});
