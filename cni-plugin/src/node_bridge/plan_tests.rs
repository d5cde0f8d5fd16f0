use super::*;
use crate::netlink::host::SCOPE_LINK;

pub(crate) const MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02];

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub(crate) fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(if name == "lo" { [0; 6] } else { MAC }),
        mtu: 1500,
        master: None,
        up: true,
        kind: kind.map(str::to_string),
    }
}

pub(crate) fn route(dst: &str, gw: Option<&str>, proto: u8, metric: Option<u32>) -> Route {
    Route {
        dst: net(dst),
        gateway: gw.map(ip),
        oif: 2,
        table: 254,
        metric,
        protocol: proto,
        scope: if gw.is_some() { 0 } else { SCOPE_LINK },
        tos: 0,
        prefsrc: None,
        onlink: false,
    }
}

/// A DHCP-configured dual-stack host: eth0 (index 2) with a primary and
/// a labelled secondary IPv4 address, a global and a temporary IPv6
/// address, its link-local, and default routes for both families.
pub(crate) fn host() -> Observed {
    let mut dhcp = Addr::new(net("192.168.2.11/24"));
    dhcp.valid_lft = 86_000;
    dhcp.preferred_lft = 86_000;
    dhcp.label = Some("eth0".into());
    let mut secondary = Addr::new(net("192.168.2.50/24"));
    secondary.flags = SECONDARY | 0x80;
    secondary.label = Some("eth0:1".into());
    let global6 = Addr::new(net("fd00:2::11/64"));
    let mut temp6 = Addr::new(net("fd00:2::abcd/64"));
    temp6.flags = SECONDARY;
    let ll = Addr::new(net("fe80::aa:bbff:fecc:dd02/64"));
    Observed {
        links: vec![link(1, "lo", None), link(2, "eth0", None)],
        addrs: vec![dhcp, secondary, global6, temp6, ll],
        routes: vec![
            route("0.0.0.0/0", Some("192.168.2.1"), 16, Some(100)),
            route("10.9.0.0/16", None, PROTO_BOOT, None),
            route("192.168.2.0/24", None, PROTO_KERNEL, Some(100)),
            route("::/0", Some("fd00:2::1"), PROTO_BOOT, Some(1024)),
            route("fe80::/64", None, PROTO_KERNEL, Some(256)),
        ],
        master_addrs: vec![],
        uppers: vec![],
        wireless: false,
    }
}

pub(crate) fn req() -> Request {
    Request {
        uplink: "eth0".into(),
        bridge: "br0".into(),
        gateway: None,
    }
}

fn migrate(obs: &Observed, req: &Request) -> Plan {
    match plan(req, obs).expect("plans") {
        Decision::Migrate(p) => p,
        d => panic!("{d:?}"),
    }
}

#[test]
fn the_steps_keep_the_outage_to_a_few_messages_in_a_safe_order() {
    let p = migrate(&host(), &req());
    let cmds: Vec<String> = p.steps.iter().map(|s| s.command("eth0", "br0")).collect();
    assert_eq!(
        cmds,
        vec![
            "ip link add br0 address 02:aa:bb:cc:dd:02 mtu 1500 type bridge stp_state 0 forward_delay 0 && ip link set br0 up",
            "ip link set eth0 master br0",
            // Gateway routes go first, the routes they need after them.
            "ip route del default via 192.168.2.1 dev eth0 proto 16 metric 100",
            "ip -6 route del default via fd00:2::1 dev eth0 metric 1024",
            "ip route del 10.9.0.0/16 dev eth0 scope link",
            // Secondaries before their primary.
            "ip addr del fd00:2::11/64 dev eth0",
            "ip addr del 192.168.2.50/24 dev eth0",
            "ip addr del 192.168.2.11/24 dev eth0",
            "ip addr add 192.168.2.11/24 dev br0 broadcast 192.168.2.255 valid_lft 86000 preferred_lft 86000",
            "ip addr add 192.168.2.50/24 dev br0 broadcast 192.168.2.255 label br0:1",
            "ip addr add fd00:2::11/64 dev br0 nodad",
            "ip route add 10.9.0.0/16 dev br0 scope link",
            "ip route add default via 192.168.2.1 dev br0 proto 16 metric 100",
            "ip -6 route add default via fd00:2::1 dev br0 metric 1024",
        ]
    );
    assert_eq!(p.gateway, ip("192.168.2.1"));
    assert_eq!(p.bridge.mac, MAC, "the bridge takes the uplink's MAC");
    assert_eq!(p.bridge.mtu, 1500);
    // Kernel routes come back with the addresses; link-local and
    // temporary addresses stay where the kernel makes them.
    assert_eq!(p.routes.len(), 3);
    assert_eq!(p.addrs.len(), 3);
}

#[test]
fn every_step_has_an_inverse_that_undoes_it() {
    let p = migrate(&host(), &req());
    for s in &p.steps[1..] {
        let back = s.inverse().inverse();
        assert_eq!(&back, s, "{s:?}");
    }
    assert_eq!(p.steps[0].inverse(), Step::DeleteBridge("br0".into()));
    assert_eq!(p.steps[1].inverse(), Step::Release);
}

#[test]
fn the_gateway_is_the_default_route_ipv4_first_unless_given() {
    let mut obs = host();
    assert_eq!(migrate(&obs, &req()).gateway, ip("192.168.2.1"));
    obs.routes.retain(|r| r.dst.addr().is_ipv6());
    assert_eq!(migrate(&obs, &req()).gateway, ip("fd00:2::1"));
    let mut r = req();
    r.gateway = Some(ip("192.168.2.7"));
    assert_eq!(migrate(&obs, &r).gateway, ip("192.168.2.7"));
    obs.routes.clear();
    let e = plan(&req(), &obs).expect_err("no gateway");
    assert!(e.to_string().contains("--gateway"), "{e}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
}

#[test]
fn an_uplink_already_in_the_bridge_is_a_no_op() {
    let mut obs = host();
    obs.links.push(link(3, "br0", Some("bridge")));
    obs.links[1].master = Some(3);
    obs.master_addrs = vec![Addr::new(net("192.168.2.11/24"))];
    match plan(&req(), &obs).expect("decides") {
        Decision::AlreadyDone(m) => {
            assert!(m.contains("already a port of br0"), "{m}");
            assert!(m.contains("192.168.2.11/24"), "{m}");
            assert!(m.contains("nothing to do"), "{m}");
        }
        d => panic!("{d:?}"),
    }
}

/// [`host`] as NetworkManager configures it: addresses flagged
/// noprefixroute and NM's own (`proto kernel`) prefix routes.
pub(crate) fn nm_host() -> Observed {
    let mut obs = host();
    for a in &mut obs.addrs {
        if !a.net.to_string().starts_with("fe80") {
            a.flags |= NOPREFIXROUTE;
        }
    }
    obs.routes
        .push(route("fd00:2::/64", None, PROTO_KERNEL, Some(100)));
    obs
}

#[test]
fn network_managers_prefix_routes_move_with_their_noprefixroute_addresses() {
    let p = migrate(&nm_host(), &req());
    let cmds: Vec<String> = p.steps.iter().map(|s| s.command("eth0", "br0")).collect();
    for dst in ["192.168.2.0/24", "fd00:2::/64"] {
        let v6 = if dst.contains(':') { "-6 " } else { "" };
        for verb in ["del", "add"] {
            let dev = if verb == "del" { "eth0" } else { "br0" };
            let want = format!("ip {v6}route {verb} {dst} dev {dev} proto 2 metric 100 scope link");
            assert!(cmds.contains(&want), "{want} in {cmds:#?}");
        }
    }
    assert!(
        cmds.contains(&"ip addr add fd00:2::11/64 dev br0 nodad noprefixroute".to_string()),
        "{cmds:#?}"
    );
    // The prefix route reaches the bridge before the default route that
    // needs it.
    let at = |c: &str| cmds.iter().position(|x| x == c).expect(c);
    assert!(
        at("ip route add 192.168.2.0/24 dev br0 proto 2 metric 100 scope link")
            < at("ip route add default via 192.168.2.1 dev br0 proto 16 metric 100")
    );
    // The kernel's own (fe80::/64, made for every link) still stays.
    assert!(!cmds.iter().any(|c| c.contains("fe80::/64")), "{cmds:#?}");
    assert_eq!(p.routes.len(), 5);
}

#[test]
fn a_port_of_a_bridge_without_the_address_is_a_half_done_migration() {
    let mut obs = host();
    obs.links.push(link(3, "br0", Some("bridge")));
    obs.links[1].master = Some(3);
    // Only the bridge's own link-local: the IP never arrived.
    for master in [vec![], vec![Addr::new(net("fe80::aa:bbff:fecc:dd02/64"))]] {
        obs.master_addrs = master;
        let e = plan(&req(), &obs).expect_err("half done");
        let msg = e.to_string();
        assert!(matches!(e, Error::NodeBridge(_)), "{e:?}");
        assert!(msg.contains("half-done migration"), "{msg}");
        assert!(
            msg.contains("`ip link set eth0 nomaster; ip link del br0`"),
            "{msg}"
        );
        assert!(!msg.contains("nothing to do"), "{msg}");
    }
}

#[test]
fn hosts_it_cannot_migrate_are_refused_with_the_reason() {
    type Edit = Box<dyn Fn(&mut Observed, &mut Request)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "no interface named \"eth9\"",
            Box::new(|_, r| r.uplink = "eth9".into()),
        ),
        (
            "is itself a bridge",
            Box::new(|o, _| o.links[1].kind = Some("bridge".into())),
        ),
        (
            "already a port of bond0",
            Box::new(|o, _| {
                o.links.push(link(3, "bond0", Some("bond")));
                o.links[1].master = Some(3);
            }),
        ),
        (
            "br0 already exists",
            Box::new(|o, _| o.links.push(link(3, "br0", Some("bridge")))),
        ),
        ("eth0 is down", Box::new(|o, _| o.links[1].up = false)),
        (
            "eth0 carries ha-shim (a macvlan)",
            Box::new(|o, _| o.uppers = vec![("ha-shim".into(), "macvlan".into())]),
        ),
        (
            "eth0 carries ipv0 (a ipvlan)",
            Box::new(|o, _| {
                o.uppers = vec![
                    ("eth0.10".into(), "vlan".into()),
                    ("ipv0".into(), "ipvlan".into()),
                ]
            }),
        ),
        ("eth0 is a Wi-Fi NIC", Box::new(|o, _| o.wireless = true)),
        (
            "no Ethernet address",
            Box::new(|o, _| o.links[1].mac = None),
        ),
        (
            "no address to move",
            Box::new(|o, _| {
                o.addrs.retain(|a| {
                    a.net.addr().is_ipv6() && a.flags == 0 && a.net.to_string().starts_with("fe80")
                })
            }),
        ),
    ];
    for (want, edit) in cases {
        let (mut o, mut r) = (host(), req());
        edit(&mut o, &mut r);
        let e = plan(&r, &o).expect_err(want);
        assert!(matches!(e, Error::NodeBridge(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{want}: {e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    }
}
