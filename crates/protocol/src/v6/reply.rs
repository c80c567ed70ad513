//! A decided DHCPv6 reply and its encoding at the edge: the message by `dhcproto`, wrapped in
//! one RELAY-REPL per relay it came through (RFC 8415 §19.3), with the relay's interface-id.

use dhcproto::v6::{Message, MessageType};

use crate::v6::frontdoor::Relay;

/// A decided reply: the message, and the relays to wrap it for on the way back.
#[derive(Debug, Clone)]
pub struct Reply6 {
    /// The message to the client.
    pub msg: Message,
    /// The relays it came through (outermost first).
    pub relays: Vec<Relay>,
}

impl Reply6 {
    /// Encodes the reply, wrapped in one RELAY-REPL per relay (RFC 8415 §19.3).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut e = dhcproto::Encoder::new(out);
        // Encoding a message we built ourselves into a Vec cannot fail.
        let _ = dhcproto::Encodable::encode(&self.msg, &mut e);
        for r in self.relays.iter().rev() {
            let inner = std::mem::take(out);
            out.push(u8::from(MessageType::RelayRepl));
            out.push(r.hop_count);
            out.extend_from_slice(&r.link.octets());
            out.extend_from_slice(&r.peer.octets());
            if let Some(id) = &r.interface_id {
                out.extend_from_slice(&18u16.to_be_bytes());
                out.extend_from_slice(&(id.len() as u16).to_be_bytes());
                out.extend_from_slice(id);
            }
            out.extend_from_slice(&9u16.to_be_bytes());
            out.extend_from_slice(&(inner.len() as u16).to_be_bytes());
            out.extend_from_slice(&inner);
        }
    }

    /// Where it goes: the nearest relay's peer address when relayed (the outermost relay is
    /// the one that sent it to us), else the client.
    pub fn via_relay(&self) -> bool {
        !self.relays.is_empty()
    }
}
