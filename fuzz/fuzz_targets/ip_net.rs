//! `IpNet` parsing (`10.0.0.0/8`, `2001:db8::/32`, a bare address): a parsed network written
//! back parses to itself, contains its own address and every address inside its prefix, and a
//! prefix past the family's width is an error, never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use bulwark::key::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    text: &'a str,
    v6: bool,
    addr: [u8; 16],
    prefix: u8,
    probe: [u8; 16],
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(net) = input.text.parse::<IpNet>() {
        let again: IpNet = net.to_string().parse().expect("a written network parses");
        assert_eq!(again, net);
    }
    let addr = if input.v6 {
        IpAddr::V6(Ipv6Addr::from(input.addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            input.addr[0],
            input.addr[1],
            input.addr[2],
            input.addr[3],
        ))
    };
    let max = if addr.to_canonical().is_ipv4() {
        32
    } else {
        128
    };
    match IpNet::new(addr, input.prefix) {
        Err(_) => assert!(input.prefix > max),
        Ok(net) => {
            assert!(input.prefix <= max);
            assert!(net.contains(addr), "{net} holds {addr}");
            let again: IpNet = net.to_string().parse().expect("a written network parses");
            assert_eq!(again, net);
            // An address that agrees with `addr` on the first `prefix` bits is inside.
            let probe = match addr.to_canonical() {
                IpAddr::V4(a) => {
                    let m = u32::MAX
                        .checked_shl(32 - u32::from(input.prefix))
                        .unwrap_or(0);
                    let p = u32::from_be_bytes([
                        input.probe[0],
                        input.probe[1],
                        input.probe[2],
                        input.probe[3],
                    ]);
                    IpAddr::V4(Ipv4Addr::from((u32::from(a) & m) | (p & !m)))
                }
                IpAddr::V6(a) => {
                    let m = u128::MAX
                        .checked_shl(128 - u32::from(input.prefix))
                        .unwrap_or(0);
                    let p = u128::from_be_bytes(input.probe);
                    IpAddr::V6(Ipv6Addr::from((u128::from(a) & m) | (p & !m)))
                }
            };
            // IPv4-mapped IPv6 addresses count as IPv4 (documented): outside any IPv6 network.
            let mapped_into_v6 = !addr.to_canonical().is_ipv4() && probe.to_canonical().is_ipv4();
            assert_eq!(net.contains(probe), !mapped_into_v6, "{net} holds {probe}");
        }
    }
});
