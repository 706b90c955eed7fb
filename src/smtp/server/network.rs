//! Trusted networks: CIDR blocks whose clients may relay without AUTH.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network such as `10.0.0.0/8`, `192.168.1.7` (one host) or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetworkError {
    #[error(
        "`{0}` is not a network: write an address (`192.168.1.7`) or a CIDR block (`10.0.0.0/8`)"
    )]
    Syntax(String),
    #[error("`{0}`: the prefix length is larger than the address")]
    Prefix(String),
    #[error("`{0}` has host bits set: did you mean `{1}`?")]
    HostBits(String, String),
    #[error(
        "`{0}` matches every address: trusting it would make Postern an open relay; list the networks of your applications instead"
    )]
    Everything(String),
}

impl IpNetwork {
    pub fn parse(s: &str) -> Result<Self, IpNetworkError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetworkError::Syntax(s.to_string()))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| IpNetworkError::Syntax(s.to_string()))?,
        };
        if prefix > max {
            return Err(IpNetworkError::Prefix(s.to_string()));
        }
        if prefix == 0 {
            return Err(IpNetworkError::Everything(s.to_string()));
        }
        let net = Self {
            addr: mask(addr, prefix),
            prefix,
        };
        // A typo such as `10.0.0.1/8` usually means the admin had another block in mind:
        // say so rather than silently trusting more (or other) hosts than intended.
        if net.addr != addr {
            return Err(IpNetworkError::HostBits(s.to_string(), net.to_string()));
        }
        Ok(net)
    }

    /// Some address is in both (one network holds the other).
    pub fn overlaps(&self, other: &IpNetwork) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for IpNetwork {
    type Err = IpNetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_table() {
        let cases = [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("10.0.0.0/8", "::1", false),
        ];
        for (net, addr, expected) in cases {
            let n = IpNetwork::parse(net).unwrap();
            assert_eq!(n.contains(ip(addr)), expected, "{net} contains {addr}");
        }
    }

    #[test]
    fn overlaps_when_one_holds_the_other() {
        let n = |s: &str| IpNetwork::parse(s).unwrap();
        assert!(n("10.0.0.0/8").overlaps(&n("10.1.2.3")));
        assert!(n("10.1.2.3").overlaps(&n("10.0.0.0/8")));
        assert!(n("192.168.1.50").overlaps(&n("192.168.1.50/32")));
        assert!(!n("192.168.1.50").overlaps(&n("192.168.1.51")));
        assert!(!n("10.0.0.0/8").overlaps(&n("fd00::/8")));
        assert!(n("::ffff:10.0.0.1").overlaps(&n("10.0.0.0/24")));
    }

    #[test]
    fn refuses_mistakes() {
        for (input, msg) in [
            ("0.0.0.0/0", "open relay"),
            ("::/0", "open relay"),
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.0/33", "prefix"),
            ("ten", "not a network"),
            ("10.0.0.0/x", "not a network"),
        ] {
            let err = IpNetwork::parse(input).unwrap_err().to_string();
            assert!(err.contains(msg), "{input}: {err}");
        }
    }
}
