//! Where a reply goes (RFC 2131 §4.1). Pure: the socket code in `listener` carries it out.

use std::net::{Ipv4Addr, SocketAddrV4};

use qdhcp_protocol::{Inbound, Mac, ReplyKind};

/// The DHCP server port, also where relays listen.
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// How to send one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the relay agent at giaddr, port 67.
    Relay(SocketAddrV4),
    /// To an address the client already has (ciaddr), port 68.
    Unicast(SocketAddrV4),
    /// To 255.255.255.255, port 68, on the ingress interface.
    Broadcast,
    /// To yiaddr at chaddr, without ARP (the client cannot answer ARP yet).
    UnicastNoArp(Ipv4Addr, Mac),
}

/// Chooses the destination of a reply per RFC 2131 §4.1. `always_broadcast` is dnsmasq's
/// `--dhcp-broadcast`, for clients that cannot take a unicast before they are configured.
pub fn destination(
    req: &Inbound,
    kind: ReplyKind,
    yiaddr: Ipv4Addr,
    always_broadcast: bool,
) -> Delivery {
    if !req.giaddr.is_unspecified() {
        return Delivery::Relay(SocketAddrV4::new(req.giaddr, SERVER_PORT));
    }
    if kind == ReplyKind::Nak {
        return Delivery::Broadcast;
    }
    if !req.ciaddr.is_unspecified() {
        return Delivery::Unicast(SocketAddrV4::new(req.ciaddr, CLIENT_PORT));
    }
    if req.broadcast() || always_broadcast || yiaddr.is_unspecified() {
        return Delivery::Broadcast;
    }
    Delivery::UnicastNoArp(yiaddr, req.chaddr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ciaddr: [u8; 4], giaddr: [u8; 4], flags: u16) -> Inbound {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[10..12].copy_from_slice(&flags.to_be_bytes());
        b[12..16].copy_from_slice(&ciaddr);
        b[24..28].copy_from_slice(&giaddr);
        b[28..34].copy_from_slice(&[0xfa, 0x16, 0x3e, 1, 2, 3]);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 3, 255]);
        qdhcp_protocol::parse(&b).unwrap()
    }

    const Y: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    #[test]
    fn relayed_replies_go_to_the_relay_even_naks() {
        let r = req([0; 4], [10, 0, 0, 1], 0);
        let relay = Delivery::Relay("10.0.0.1:67".parse().unwrap());
        assert_eq!(destination(&r, ReplyKind::Ack, Y, false), relay);
        assert_eq!(destination(&r, ReplyKind::Nak, Y, false), relay);
    }

    #[test]
    fn naks_are_broadcast_when_not_relayed() {
        assert_eq!(
            destination(&req([10, 0, 0, 5], [0; 4], 0), ReplyKind::Nak, Y, false),
            Delivery::Broadcast
        );
    }

    #[test]
    fn renewals_are_unicast_to_ciaddr() {
        assert_eq!(
            destination(
                &req([10, 0, 0, 5], [0; 4], 0x8000),
                ReplyKind::Ack,
                Y,
                false
            ),
            Delivery::Unicast("10.0.0.5:68".parse().unwrap())
        );
    }

    #[test]
    fn broadcast_flag_or_config_broadcasts_else_unicast_without_arp() {
        assert_eq!(
            destination(&req([0; 4], [0; 4], 0x8000), ReplyKind::Offer, Y, false),
            Delivery::Broadcast
        );
        assert_eq!(
            destination(&req([0; 4], [0; 4], 0), ReplyKind::Offer, Y, true),
            Delivery::Broadcast
        );
        assert_eq!(
            destination(&req([0; 4], [0; 4], 0), ReplyKind::Offer, Y, false),
            Delivery::UnicastNoArp(Y, Mac([0xfa, 0x16, 0x3e, 1, 2, 3]))
        );
    }
}
