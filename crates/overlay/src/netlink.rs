//! The overlay's devices and forwarding entries read and written through rtnetlink (never by
//! running `ip`): [`Netlink::observe`] reads what exists, [`Netlink::apply`] carries out a
//! [`Change`] list from [`crate::plan::diff`].

use crate::net::Ipv4Net;
use crate::plan::{Change, Dev, Entries, Link, Mac, Observed, BRIDGE_DEV, VXLAN_DEV};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("netlink: {what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{0} disappeared while the overlay was being set up")]
    Vanished(&'static str),
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

fn dev_name(dev: Dev) -> &'static str {
    match dev {
        Dev::Vxlan => VXLAN_DEV,
        Dev::Bridge => BRIDGE_DEV,
    }
}

/// A netlink connection in this process's network namespace.
pub struct Netlink {
    handle: Handle,
    /// The messages behind the observed entries, to delete exactly what was read.
    fdb: BTreeMap<(Mac, Ipv4Addr), NeighbourMessage>,
    neighbours: BTreeMap<(Ipv4Addr, Mac), NeighbourMessage>,
    routes: BTreeMap<(Ipv4Net, Ipv4Addr), RouteMessage>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            fdb: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            routes: BTreeMap::new(),
        })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            // ENODEV: no such device.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
            Err(e) => Err(req(format!("reading link {name}"))(e)),
        }
    }

    async fn index(&self, dev: Dev) -> Result<u32, NetlinkError> {
        self.link(dev_name(dev))
            .await?
            .map(|l| l.header.index)
            .ok_or(NetlinkError::Vanished(dev_name(dev)))
    }

    async fn observe_link(&self, name: &str) -> Result<Option<(u32, Link)>, NetlinkError> {
        let Some(msg) = self.link(name).await? else {
            return Ok(None);
        };
        let mut link = Link {
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: 0,
            mac: None,
            vxlan: None,
            addresses: Default::default(),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Address(a) => link.mac = mac_of(a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(v)) = info {
                            let (mut id, mut port, mut local) = (0, 0, None);
                            for x in v {
                                match x {
                                    InfoVxlan::Id(i) => id = *i,
                                    InfoVxlan::Port(p) => port = *p,
                                    InfoVxlan::Local(l) => local = Some(*l),
                                    _ => {}
                                }
                            }
                            link.vxlan = Some((id, port, local));
                        }
                    }
                }
                _ => {}
            }
        }
        let index = msg.header.index;
        let mut addrs = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(a) = addrs.try_next().await.map_err(req("reading addresses"))? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    link.addresses.insert((*ip, a.header.prefix_len));
                }
            }
        }
        Ok(Some((index, link)))
    }

    /// What exists now. `bridge`: whether this member has a bridge (a runner).
    pub async fn observe(&mut self, bridge: bool) -> Result<Observed, NetlinkError> {
        let mut seen = Observed::default();
        self.fdb.clear();
        self.neighbours.clear();
        self.routes.clear();
        if bridge {
            seen.bridge = self.observe_link(BRIDGE_DEV).await?.map(|(_, l)| l);
        }
        let Some((index, vxlan)) = self.observe_link(VXLAN_DEV).await? else {
            return Ok(seen);
        };
        seen.vxlan = Some(vxlan);
        let mut entries = Entries::default();
        for family in [AddressFamily::Bridge, AddressFamily::Inet] {
            let mut dump = self.handle.neighbours().get().set_address_family(family).execute();
            while let Some(n) = dump.try_next().await.map_err(req("reading neighbours"))? {
                if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let (mut mac, mut dst) = (None, None);
                for attr in &n.attributes {
                    match attr {
                        NeighbourAttribute::LinkLayerAddress(a) => mac = mac_of(a),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                        // In bridge-family messages the parser cannot tell the address family.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                        }
                        _ => {}
                    }
                }
                let (Some(mac), Some(ip)) = (mac, dst) else { continue };
                if family == AddressFamily::Bridge {
                    entries.fdb.insert((mac, ip));
                    self.fdb.insert((mac, ip), n);
                } else {
                    entries.neighbours.insert((ip, mac));
                    self.neighbours.insert((ip, mac), n);
                }
            }
        }
        let mut dump = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = dump.try_next().await.map_err(req("reading routes"))? {
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let (mut oif, mut dst, mut gw) = (None, None, None);
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                    _ => {}
                }
            }
            if oif != Some(index) {
                continue;
            }
            let (Some(dst), Some(gw)) = (dst, gw) else { continue };
            if let Some(net) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                entries.routes.insert((net, gw));
                self.routes.insert((net, gw), r);
            }
        }
        seen.entries = entries;
        Ok(seen)
    }

    /// Carries out `changes` (from [`crate::plan::diff`] against the last [`Self::observe`]).
    pub async fn apply(&mut self, changes: &[Change], want_vxlan: &Link, mtu: u32) -> Result<(), NetlinkError> {
        // Devices' indices, looked up once each (a lookup is a netlink round trip), and again
        // after a device is created.
        let mut known: BTreeMap<Dev, u32> = BTreeMap::new();
        for change in changes {
            if let Change::Create(dev, _) = change {
                known.remove(dev);
            }
            tracing::debug!(?change, "overlay");
            match change {
                Change::Create(Dev::Vxlan, why) => {
                    if let Some(link) = self.link(VXLAN_DEV).await? {
                        tracing::warn!("recreating {VXLAN_DEV}: {}", why.as_deref().unwrap_or("changed"));
                        self.handle
                            .link()
                            .del(link.header.index)
                            .execute()
                            .await
                            .map_err(req("deleting the old VXLAN device"))?;
                    }
                    let (vni, port, local) = want_vxlan.vxlan.unwrap_or_default();
                    let mut b = LinkVxlan::new(VXLAN_DEV, vni).port(port).learning(false).mtu(mtu);
                    if let Some(local) = local {
                        b = b.local(local);
                    }
                    if let Some(mac) = want_vxlan.mac {
                        b = b.address(mac.to_vec());
                    }
                    self.handle
                        .link()
                        .add(b.up().build())
                        .execute()
                        .await
                        .map_err(req("creating the VXLAN device"))?;
                }
                Change::Create(Dev::Bridge, _) => {
                    self.handle
                        .link()
                        .add(LinkBridge::new(BRIDGE_DEV).mtu(mtu).up().build())
                        .execute()
                        .await
                        .map_err(req("creating the overlay bridge"))?;
                }
                Change::SetMtu(dev, m) => {
                    let i = self.cached_index(&mut known, *dev).await?;
                    self.set(LinkUnspec::new_with_index(i).mtu(*m).build(), "setting the MTU")
                        .await?;
                }
                Change::SetMac(dev, mac) => {
                    let i = self.cached_index(&mut known, *dev).await?;
                    let msg = LinkUnspec::new_with_index(i).address(mac.to_vec()).build();
                    self.set(msg, "setting the MAC address").await?;
                }
                Change::Up(dev) => {
                    let i = self.cached_index(&mut known, *dev).await?;
                    self.set(LinkUnspec::new_with_index(i).up().build(), "bringing the link up")
                        .await?;
                }
                Change::AddAddress(dev, ip, prefix) => {
                    let i = self.cached_index(&mut known, *dev).await?;
                    self.handle
                        .address()
                        .add(i, IpAddr::V4(*ip), *prefix)
                        .replace()
                        .execute()
                        .await
                        .map_err(req(format!("adding {ip}/{prefix}")))?;
                }
                Change::AddFdb(mac, ip) => {
                    let i = self.cached_index(&mut known, Dev::Vxlan).await?;
                    self.handle
                        .neighbours()
                        .add_bridge(i, mac)
                        .destination(IpAddr::V4(*ip))
                        .flags(NeighbourFlags::Own)
                        .replace()
                        .execute()
                        .await
                        .map_err(req(format!("adding the FDB entry for {ip}")))?;
                }
                Change::AddNeighbour(ip, mac) => {
                    let i = self.cached_index(&mut known, Dev::Vxlan).await?;
                    self.handle
                        .neighbours()
                        .add(i, IpAddr::V4(*ip))
                        .link_layer_address(mac)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                        .map_err(req(format!("adding the neighbour {ip}")))?;
                }
                Change::AddRoute(net, gw) => {
                    let i = self.cached_index(&mut known, Dev::Vxlan).await?;
                    let route = RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(net.network(), net.prefix())
                        .gateway(*gw)
                        .output_interface(i)
                        .onlink()
                        .build();
                    self.handle
                        .route()
                        .add(route)
                        .replace()
                        .execute()
                        .await
                        .map_err(req(format!("adding the route to {net}")))?;
                }
                Change::DelFdb(mac, ip) => {
                    if let Some(m) = self.fdb.remove(&(*mac, *ip)) {
                        self.handle
                            .neighbours()
                            .del(m)
                            .execute()
                            .await
                            .map_err(req(format!("removing the FDB entry for {ip}")))?;
                    }
                }
                Change::DelNeighbour(ip, mac) => {
                    if let Some(m) = self.neighbours.remove(&(*ip, *mac)) {
                        self.handle
                            .neighbours()
                            .del(m)
                            .execute()
                            .await
                            .map_err(req(format!("removing the neighbour {ip}")))?;
                    }
                }
                Change::DelRoute(net, gw) => {
                    if let Some(r) = self.routes.remove(&(*net, *gw)) {
                        self.handle
                            .route()
                            .del(r)
                            .execute()
                            .await
                            .map_err(req(format!("removing the route to {net}")))?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn cached_index(&self, known: &mut BTreeMap<Dev, u32>, dev: Dev) -> Result<u32, NetlinkError> {
        if let Some(i) = known.get(&dev) {
            return Ok(*i);
        }
        let i = self.index(dev).await?;
        known.insert(dev, i);
        Ok(i)
    }

    async fn set(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        self.handle.link().set(msg).execute().await.map_err(req(what))
    }

    /// The MTU of the device holding `ip`, if one here does.
    pub async fn mtu_of_address(&self, ip: Ipv4Addr) -> Result<Option<u32>, NetlinkError> {
        let mut addrs = self.handle.address().get().set_address_filter(IpAddr::V4(ip)).execute();
        let Some(a) = addrs.try_next().await.map_err(req("reading addresses"))? else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(a.header.index).execute();
        let Some(l) = links.try_next().await.map_err(req("reading links"))? else {
            return Ok(None);
        };
        Ok(l.attributes.iter().find_map(|x| match x {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        }))
    }

    /// Removes the overlay's devices (and with them every entry): `river node remove` on a
    /// runner that is still up, or turning the overlay off.
    pub async fn remove(&self) -> Result<(), NetlinkError> {
        for name in [VXLAN_DEV, BRIDGE_DEV] {
            if let Some(l) = self.link(name).await? {
                self.handle
                    .link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(req(format!("deleting {name}")))?;
            }
        }
        Ok(())
    }
}

/// "No such device", without a libc dependency for one constant.
const ENODEV: i32 = 19;
