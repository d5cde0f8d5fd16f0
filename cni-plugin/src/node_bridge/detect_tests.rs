use std::fs;

use super::*;

#[test]
fn netplan_files_that_name_the_uplink() {
    let yes = [
        "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
        "network:\n  ethernets:\n    \"eth0\": {dhcp4: true}\n",
        "network:\n  ethernets:\n    lan:\n      match:\n        name: eth0\n",
        "network:\n  ethernets:\n    lan:\n      match: {name: \"et*\"}\n",
        "network:\n  bonds:\n    bond0:\n      interfaces: [eth1, eth0]\n",
        "network:\n  bonds:\n    bond0:\n      interfaces:\n        - eth0\n",
        "network:\n  ethernets:\n    nic:\n      match: {macaddress: \"aa:bb:cc:dd:ee:ff\"}\n      set-name: eth0\n",
    ];
    for y in yes {
        assert!(netplan_names(y, "eth0"), "{y}");
    }
    let no = [
        "network:\n  ethernets:\n    eth01:\n      dhcp4: true\n",
        "network:\n  ethernets:\n    eth1: {dhcp4: true}  # not eth0\n",
        "network:\n  ethernets:\n    lan:\n      match: {name: \"en*\"}\n",
        "network:\n  wifis:\n    wlan0: {}\n",
    ];
    for y in no {
        assert!(!netplan_names(y, "eth0"), "{y}");
    }
}

#[test]
fn network_manager_and_networkd_state_files() {
    assert!(nm_managed("[device]\nmanaged=true\nperm-hw-addr-fake=\n"));
    assert!(nm_managed("[device]\nroute-metric-default-aspired=100\n"));
    assert!(!nm_managed("[device]\nmanaged=false\n"));
    let nd = "# This is private data. Do not parse.\nADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\n";
    assert_eq!(
        networkd_managed(nd).as_deref(),
        Some("ADMIN_STATE=configured, NETWORK_FILE=/etc/systemd/network/10-eth0.network")
    );
    assert_eq!(
        networkd_managed("ADMIN_STATE=configuring\n").as_deref(),
        Some("ADMIN_STATE=configuring")
    );
    assert_eq!(
        networkd_managed("ADMIN_STATE=unmanaged\nOPER_STATE=carrier\n"),
        None
    );
    assert_eq!(networkd_managed("OPER_STATE=off\n"), None);
}

#[test]
fn ifupdown_stanzas_and_dhcp_client_command_lines() {
    assert!(ifupdown_names(
        "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n",
        "eth0"
    ));
    assert!(ifupdown_names("auto lo eth0\n", "eth0"));
    assert!(!ifupdown_names(
        "iface eth1 inet dhcp\n# iface eth0 inet dhcp\n",
        "eth0"
    ));
    let argv = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    for (cmd, want) in [
        ("/sbin/dhclient -4 -v -i -pf /run/dhclient.eth0.pid -lf /var/lib/dhcp/dhclient.eth0.leases eth0", Some("dhclient")),
        ("dhcpcd -q -b eth0", Some("dhcpcd")),
        ("udhcpc -R -n -p /var/run/udhcpc.eth0.pid -ieth0", Some("udhcpc")),
        ("udhcpc --interface=eth0", Some("udhcpc")),
        ("/usr/sbin/dhcpcd -q -b", Some("dhcpcd")),
        ("dhcpcd -f /etc/dhcpcd.conf -w", Some("dhcpcd")),
        ("dhcpcd -q wlan0", None),
        ("dhcpcd -f /etc/dhcpcd.conf wlan0", None),
        ("dhclient eth1", None),
        ("sleep eth0", None),
        ("dhclient -lf /var/lib/dhcp/dhclient.eth0.leases eth01", None),
    ] {
        assert_eq!(dhcp_client_for(&argv(cmd), "eth0").as_deref(), want, "{cmd}");
    }
}

#[test]
fn detect_reads_a_seeded_root_and_proc() {
    let root = tempfile::tempdir().expect("tempdir");
    let proc = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    assert!(
        detect(r, proc.path(), "eth0", 2).is_empty(),
        "an empty host"
    );

    let seed = |path: &str, text: &str| {
        let p = r.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    };
    seed(
        "etc/netplan/50-cloud-init.yaml",
        "network:\n  ethernets:\n    eth0: {dhcp4: true}\n",
    );
    seed(
        "etc/netplan/90-other.yaml",
        "network:\n  ethernets:\n    eth1: {dhcp4: true}\n",
    );
    seed("run/NetworkManager/devices/2", "[device]\nmanaged=true\n");
    seed("run/NetworkManager/devices/3", "[device]\nmanaged=true\n");
    seed("run/systemd/netif/links/2", "ADMIN_STATE=configured\n");
    seed(
        "etc/network/interfaces.d/eth0",
        "auto eth0\niface eth0 inet dhcp\n",
    );
    fs::create_dir_all(proc.path().join("42")).expect("mkdir");
    fs::write(proc.path().join("42/cmdline"), b"dhclient\0-v\0eth0\0").expect("write");
    fs::create_dir_all(proc.path().join("43")).expect("mkdir");
    fs::write(proc.path().join("43/cmdline"), b"dhclient\0eth1\0").expect("write");

    let found = detect(r, proc.path(), "eth0", 2);
    let managers: Vec<String> = found.iter().map(|f| f.manager.to_string()).collect();
    assert_eq!(
        managers,
        [
            "netplan",
            "NetworkManager",
            "systemd-networkd",
            "ifupdown",
            "dhclient (pid 42)"
        ]
    );
    assert!(
        found[0].evidence.contains("50-cloud-init.yaml names eth0"),
        "{found:?}"
    );
    assert!(found[4].evidence.contains("dhclient -v eth0"), "{found:?}");
}
