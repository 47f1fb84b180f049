//! What a trusted front proxy (a load balancer, a TLS-terminating reverse
//! proxy) tells a server about its client: which peers are such proxies
//! ([`trusts`], from settings read by [`parse_net`]) and the client's own
//! address behind them ([`client_ip`]). A forwarded client certificate
//! ([`crate::ForwardedCertificate`]) is believed from the same kind of peer.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// A trusted-proxy entry of a setting: a CIDR network, or one address (a
/// host). `None` for anything else.
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Whether `peer` is in one of the `trusted` networks; an IPv4-mapped IPv6
/// address (a dual-stack listener's) is read as the IPv4 address it is.
pub fn trusts(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client's address: the connection's `peer`, unless `peer` is one of
/// the `trusted` proxies; then the nearest address in `X-Forwarded-For`
/// (read from the right, every header's list in order) that is not one of
/// them. Each trusted proxy appends the address it was reached from, so the
/// entries left of the first untrusted one are the client's own words and
/// are never used. An entry that is not an address (`unknown`, garbage)
/// ends the walk at the last trusted hop. With every entry trusted, the
/// leftmost one. IPv4-mapped IPv6 addresses (a dual-stack listener's) are
/// read as the IPv4 addresses they are.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusts(trusted, peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for e in entries.iter().rev() {
        // An address, or one with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
        let Some(ip) = e
            .parse::<IpAddr>()
            .ok()
            .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        else {
            return client;
        };
        let ip = ip.to_canonical();
        client = ip;
        if !trusts(trusted, ip) {
            return ip;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_address_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let lb = ip("10.1.2.3");
        // Nothing trusted, or an untrusted peer: the header is ignored.
        assert_eq!(client_ip(lb, &xff(&["192.0.2.7"]), &[]), lb);
        let stranger = ip("198.51.100.9");
        assert_eq!(
            client_ip(stranger, &xff(&["192.0.2.7"]), &trusted),
            stranger
        );
        // Behind the proxy: the address it was reached from.
        assert_eq!(
            client_ip(lb, &xff(&["192.0.2.7"]), &trusted),
            ip("192.0.2.7")
        );
        // The client's own entries, left of the first untrusted one, are
        // never used; trusted hops are skipped from the right.
        for h in [
            xff(&["1.1.1.1, 192.0.2.7, 10.9.9.9"]),
            xff(&["1.1.1.1", "192.0.2.7", "10.9.9.9"]),
            xff(&["6.6.6.6, 1.1.1.1", "192.0.2.7 ,10.9.9.9"]),
            xff(&["1.1.1.1, 192.0.2.7:4711, 10.9.9.9"]),
        ] {
            assert_eq!(client_ip(lb, &h, &trusted), ip("192.0.2.7"), "{h:?}");
        }
        // IPv6, with and without a port; the /48 is trusted.
        assert_eq!(
            client_ip(
                ip("2001:db8:1::5"),
                &xff(&["2001:db8:9::1, 2001:db8:1::6"]),
                &trusted
            ),
            ip("2001:db8:9::1")
        );
        assert_eq!(
            client_ip(lb, &xff(&["[2001:db8:9::1]:443"]), &trusted),
            ip("2001:db8:9::1")
        );
        // Garbage or `unknown` ends the walk at the last trusted hop.
        assert_eq!(
            client_ip(lb, &xff(&["192.0.2.7, unknown, 10.9.9.9"]), &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(client_ip(lb, &xff(&["not an address"]), &trusted), lb);
        assert_eq!(client_ip(lb, &xff(&[""]), &trusted), lb);
        // A dual-stack listener's IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &xff(&["::ffff:192.0.2.7"]), &trusted),
            ip("192.0.2.7")
        );
        // No header: the proxy itself. Every entry trusted: the leftmost.
        assert_eq!(client_ip(lb, &HeaderMap::new(), &trusted), lb);
        assert_eq!(
            client_ip(lb, &xff(&["10.0.0.1, 10.0.0.2"]), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn entries_are_networks_or_single_addresses() {
        assert_eq!(parse_net("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(
            parse_net("192.0.2.1"),
            Some("192.0.2.1/32".parse().unwrap())
        );
        assert_eq!(
            parse_net("2001:db8::1"),
            Some("2001:db8::1/128".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "lb.internal", "", "10.0.0.1 "] {
            assert_eq!(parse_net(bad), None, "{bad:?}");
        }
        let nets = [parse_net("10.0.0.0/8").unwrap()];
        assert!(trusts(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!trusts(&nets, "11.0.0.1".parse().unwrap()));
    }
}
