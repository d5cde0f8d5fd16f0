//! One module per CNI verb. Each takes already-validated input.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;

use std::fs;

use tracing::warn;

use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink};

/// The configured bridge, checked to be one before anything touches it:
/// MAC pinning on a veth or `lo` would change that device, and every later
/// step would fail obscurely.
pub fn bridge(nl: &mut impl Netlink, name: &str) -> Result<Link> {
    let link = nl
        .link_by_name(name)?
        .ok_or_else(|| Error::BridgeNotFound(name.to_string()))?;
    match link.kind.as_deref() {
        Some("bridge") => Ok(link),
        kind => Err(Error::NotABridge {
            name: name.to_string(),
            kind: kind.map_or_else(
                || "device without a link kind (a NIC or lo)".to_string(),
                |k| format!("{k} device"),
            ),
        }),
    }
}

/// A bridge takes the lowest MAC among its ports unless one was set
/// explicitly, so it would drift as pod veths come and go and every LAN
/// host's ARP entry for the node would go stale. Setting the current MAC
/// explicitly pins it. The sysfs check avoids re-setting it on every ADD:
/// each set fires NETDEV_CHANGEADDR, which flushes the bridge's neighbours.
pub fn pin_bridge_mac(nl: &mut impl Netlink, bridge: &Link) {
    let Some(mac) = bridge.mac else { return };
    let base = format!("/sys/class/net/{}", bridge.name);
    // NET_ADDR_SET == 3: someone (netplan, or us) already chose the MAC.
    // That is every ADD but the first, so it is read first and alone.
    match fs::read_to_string(format!("{base}/addr_assign_type")) {
        Ok(t) if t.trim() != "3" => {}
        _ => return,
    }
    // sysfs shows the namespace it was mounted in; only trust it when it
    // describes the same device netlink does.
    let same_dev = fs::read_to_string(format!("{base}/ifindex"))
        .is_ok_and(|s| s.trim() == bridge.index.to_string());
    if !same_dev {
        return;
    }
    if let Err(e) = nl.set_mac(bridge.index, mac) {
        warn!(bridge = %bridge.name, "cannot pin bridge MAC: {e}");
    }
}
