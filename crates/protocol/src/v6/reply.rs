//! A decided DHCPv6 reply and its encoding at the edge: the message by `dhcproto`, wrapped in
//! one RELAY-REPL per relay it came through (RFC 8415 §19.3), with the relay's interface-id.

use dhcproto::v6::{Message, MessageType};

use crate::v6::frontdoor::Relay;

/// A decided reply: the message, and the relays (borrowed from the client's message) to wrap
/// it for on the way back.
#[derive(Debug, Clone)]
pub struct Reply6<'m> {
    /// The message to the client.
    pub msg: Message,
    /// The relays it came through (outermost first).
    pub relays: &'m [Relay],
}

impl Reply6<'_> {
    /// Encodes the reply, wrapped in one RELAY-REPL per relay (RFC 8415 §19.3): the message
    /// first, then moved up once to make room for every relay's header (`dhcproto`'s encoder
    /// writes from the start of its buffer, so it cannot append after them).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        // Encoding a message we built ourselves into a Vec cannot fail.
        let _ = dhcproto::Encodable::encode(&self.msg, &mut dhcproto::Encoder::new(out));
        if self.relays.is_empty() {
            return;
        }
        let header = |r: &Relay| 34 + r.interface_id.as_ref().map_or(0, |id| 4 + id.len()) + 4;
        let head: usize = self.relays.iter().map(header).sum();
        let total = out.len() + head;
        out.resize(total, 0);
        out.copy_within(0..total - head, head);
        let mut w = Cursor(&mut out[..head]);
        for r in self.relays {
            w.put(&[u8::from(MessageType::RelayRepl), r.hop_count]);
            w.put(&r.link.octets());
            w.put(&r.peer.octets());
            if let Some(id) = &r.interface_id {
                w.put(&18u16.to_be_bytes());
                w.put(&(id.len() as u16).to_be_bytes());
                w.put(id);
            }
            w.put(&9u16.to_be_bytes());
            // RELAY-MSG: everything after its length field
            let inner = total - (head - w.0.len()) - 2;
            w.put(&(inner as u16).to_be_bytes());
        }
    }

    /// Where it goes: the nearest relay's peer address when relayed (the outermost relay is
    /// the one that sent it to us), else the client.
    pub fn via_relay(&self) -> bool {
        !self.relays.is_empty()
    }
}

/// Writes into the front of a slice, moving past what it wrote.
struct Cursor<'a>(&'a mut [u8]);

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) {
        let (head, rest) = std::mem::take(&mut self.0).split_at_mut(b.len());
        head.copy_from_slice(b);
        self.0 = rest;
    }
}
