//! IPv4 networks and the overlay's address plan: which subnet each member gets and which address
//! each container gets. Pure: no sockets, no clock.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `10.128.0.0/12`. Always stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("`{0}` is not an IPv4 network like 10.128.0.0/12")]
    Malformed(String),
    #[error("`{0}` has host bits set; did you mean {1}?")]
    HostBits(String, Ipv4Net),
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// The address `n` places after the network address, if still inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.base + n as u32))
    }

    /// How many `/prefix` subnets this network holds.
    pub fn subnets(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix)
        }
    }

    /// The `index`-th `/prefix` subnet of this network.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Net> {
        (index < self.subnets(prefix)).then(|| Ipv4Net {
            base: self.base + ((index as u32) << (32 - u32::from(prefix))),
            prefix,
        })
    }

    /// Which `/prefix` subnet of this network `net` is.
    pub fn index_of(&self, net: &Ipv4Net) -> Option<u64> {
        (self.contains_net(net) && net.prefix > 0)
            .then(|| u64::from((net.base - self.base) >> (32 - u32::from(net.prefix))))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::Malformed(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let net = Ipv4Net::new(addr, prefix).ok_or_else(bad)?;
        if net.network() != addr {
            return Err(NetError::HostBits(s.to_owned(), net));
        }
        Ok(net)
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The gateway of a member's subnet: its first address, held by the member itself (on the
/// runner's bridge, on the host's VXLAN device). Peers route the subnet through it.
pub fn gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    subnet.nth(1).unwrap_or(subnet.network())
}

/// The MAC address of a member's VXLAN device, derived from its subnet so that peers know it
/// without being told: locally administered (`02`), `72` (`r`), then the subnet's address.
pub fn vtep_mac(subnet: &Ipv4Net) -> [u8; 6] {
    let o = subnet.network().octets();
    [0x02, 0x72, o[0], o[1], o[2], o[3]]
}

/// Addresses a container may get in `subnet`: all but the network address, the gateway and
/// the broadcast address.
pub fn assignable(subnet: &Ipv4Net) -> impl Iterator<Item = Ipv4Addr> + '_ {
    (2..subnet.size().saturating_sub(1)).filter_map(|n| subnet.nth(n))
}

/// The lowest free container address of `subnet`, skipping `taken` (addresses of containers
/// that have not ended, and reservations). Lowest-first keeps addresses predictable.
pub fn free_address(subnet: &Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    assignable(subnet).find(|ip| !taken.contains(ip))
}

/// The lowest subnet index not in `used`, below `count`. Index 0 is the host's.
pub fn free_subnet(count: u64, used: &BTreeSet<u64>) -> Option<u64> {
    (1..count).find(|i| !used.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses_host_bits() {
        assert_eq!(net("10.128.0.0/12").to_string(), "10.128.0.0/12");
        assert_eq!(
            "10.128.0.1/12".parse::<Ipv4Net>().unwrap_err(),
            NetError::HostBits("10.128.0.1/12".into(), net("10.128.0.0/12"))
        );
        assert!("10.128.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.128.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn default_range_holds_thousands_of_runners() {
        let range = net("10.128.0.0/12");
        assert_eq!(range.subnets(24), 4096);
        assert_eq!(range.subnet(24, 0).unwrap(), net("10.128.0.0/24"));
        assert_eq!(range.subnet(24, 300).unwrap(), net("10.129.44.0/24"));
        assert_eq!(range.subnet(24, 4095).unwrap(), net("10.143.255.0/24"));
        assert_eq!(range.subnet(24, 4096), None);
        assert_eq!(range.index_of(&net("10.129.44.0/24")), Some(300));
        assert_eq!(range.index_of(&net("10.200.0.0/24")), None);
    }

    #[test]
    fn containers_never_get_network_gateway_or_broadcast() {
        let s = net("10.128.5.0/24");
        assert_eq!(gateway(&s), Ipv4Addr::new(10, 128, 5, 1));
        let all: Vec<_> = assignable(&s).collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(10, 128, 5, 2));
        assert_eq!(*all.last().unwrap(), Ipv4Addr::new(10, 128, 5, 254));
    }

    #[test]
    fn free_address_skips_taken_and_runs_out() {
        let s = net("10.128.5.0/29");
        let mut taken = BTreeSet::from([Ipv4Addr::new(10, 128, 5, 2), Ipv4Addr::new(10, 128, 5, 4)]);
        assert_eq!(free_address(&s, &taken), Some(Ipv4Addr::new(10, 128, 5, 3)));
        taken.extend([3, 5, 6].map(|d| Ipv4Addr::new(10, 128, 5, d)));
        assert_eq!(free_address(&s, &taken), None);
    }

    #[test]
    fn subnets_are_reused_lowest_first_and_zero_is_the_hosts() {
        assert_eq!(free_subnet(4096, &BTreeSet::new()), Some(1));
        assert_eq!(free_subnet(4096, &BTreeSet::from([1, 2, 4])), Some(3));
        assert_eq!(free_subnet(3, &BTreeSet::from([1, 2])), None);
    }

    #[test]
    fn vtep_macs_differ_per_subnet_and_are_local_unicast() {
        let a = vtep_mac(&net("10.128.1.0/24"));
        let b = vtep_mac(&net("10.128.2.0/24"));
        assert_ne!(a, b);
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
    }
}
