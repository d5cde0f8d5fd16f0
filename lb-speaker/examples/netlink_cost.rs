//! What one netlink request costs a process that starts cold, the way a
//! CNI exec is: a blocking `NETLINK_ROUTE` socket (what the CNI plugin
//! uses) against a tokio runtime plus an rtnetlink connection (what the
//! speaker uses), each doing the same `RTM_GETLINK` for `lo`. One sample
//! per process, so every figure includes the first-touch costs (page
//! faults, thread creation) an exec pays; run it many times:
//!
//!     cargo build --release -p flatlan-speaker --example netlink_cost
//!     for m in blocking current multi; do for i in $(seq 200); do
//!         target/release/examples/netlink_cost $m; done; done
//!
//! prints `MODE microseconds` per run: `current` is a current-thread
//! runtime with an rtnetlink connection, `multi` a multi-thread one (what
//! `#[tokio::main]` builds). docs/ARCHITECTURE.md cites the medians.

use std::time::Instant;

use futures_util::stream::TryStreamExt as _;
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

fn blocking() -> f64 {
    let t = Instant::now();
    let mut s = Socket::new(NETLINK_ROUTE).expect("socket");
    s.bind_auto().expect("bind");
    s.connect(&SocketAddr::new(0, 0)).expect("connect");
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName("lo".into()));
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)),
    );
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    s.send(&buf, 0).expect("send");
    let mut rx = Vec::with_capacity(8192);
    s.recv(&mut rx, 0).expect("recv");
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx).expect("a reply");
    assert!(matches!(
        reply.payload,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_))
    ));
    t.elapsed().as_secs_f64() * 1e6
}

fn with_runtime(multi: bool) -> f64 {
    let t = Instant::now();
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().expect("connection");
        tokio::spawn(conn);
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .match_name("lo")
            .execute()
            .try_collect()
            .await
            .expect("lo");
        assert_eq!(links.len(), 1);
    });
    drop(rt);
    t.elapsed().as_secs_f64() * 1e6
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "blocking".into());
    let us = match mode.as_str() {
        "current" => with_runtime(false),
        "multi" => with_runtime(true),
        _ => blocking(),
    };
    println!("{mode} {us:.0}");
}
