//! The cache of forwarded answers: kept for their TTL (the lowest of the answer's records;
//! for "no such name" and "no data", the SOA's negative TTL, RFC 2308), served with the TTLs
//! counted down. Time is an argument; no I/O here.

use std::collections::VecDeque;

use ahash::HashMap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use crate::answer::Question;

/// The longest any answer is kept, whatever its TTL says.
const MAX_TTL: u32 = 3600;

struct Entry {
    msg: Message,
    stored: u64,
    ttl: u32,
}

/// Forwarded answers by question.
pub struct Cache {
    entries: HashMap<Question, Entry>,
    order: VecDeque<Question>,
    cap: usize,
}

/// How long `m` may be cached, if at all.
fn cacheable_ttl(m: &Message) -> Option<u32> {
    if m.metadata.truncation {
        return None;
    }
    let ttl = match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().map(|r| r.ttl).min(),
        // negative answers: the SOA's TTL, capped by its MINIMUM (RFC 2308 §5)
        ResponseCode::NoError | ResponseCode::NXDomain => {
            m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
        }
        _ => None,
    }?;
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

impl Cache {
    /// A cache of at most `cap` answers (dnsmasq's `--cache-size`; 0 keeps none).
    pub fn new(cap: usize) -> Self {
        Cache {
            entries: HashMap::default(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Keeps `answer` to `q`, received at `now` (seconds), if it may be cached.
    pub fn put(&mut self, q: &Question, answer: &Message, now: u64) {
        if self.cap == 0 {
            return;
        }
        let Some(ttl) = cacheable_ttl(answer) else {
            return;
        };
        while self.entries.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        let mut msg = answer.clone();
        msg.metadata.id = 0;
        if self
            .entries
            .insert(
                q.clone(),
                Entry {
                    msg,
                    stored: now,
                    ttl,
                },
            )
            .is_none()
        {
            self.order.push_back(q.clone());
        }
    }

    /// The cached answer to `q` with its TTLs counted down to `now`, or `None` (expired
    /// entries are dropped).
    pub fn get(&mut self, q: &Question, now: u64) -> Option<Message> {
        let e = self.entries.get(q)?;
        let age = now.saturating_sub(e.stored);
        if age >= u64::from(e.ttl) {
            self.entries.remove(q);
            self.order.retain(|k| k != q);
            return None;
        }
        let age = age as u32;
        let mut m = e.msg.clone();
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{LowerName, Name, Record, RecordType};

    fn q(n: &str) -> Question {
        Question {
            name: LowerName::new(&Name::from_ascii(n).unwrap()),
            qtype: RecordType::A,
        }
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.answers.push(Record::from_rdata(
            Name::from_ascii("example.org.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m
    }

    #[test]
    fn answers_are_served_with_ttl_counted_down_until_they_expire() {
        let mut c = Cache::new(10);
        c.put(&q("example.org."), &answer(60), 1000);
        let m = c.get(&q("EXAMPLE.org."), 1020).expect("cached");
        assert_eq!(m.answers[0].ttl, 40);
        assert_eq!(m.metadata.id, 0);
        assert!(c.get(&q("example.org."), 1060).is_none(), "expired");
        assert!(c.is_empty());
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum_and_failures_not_at_all() {
        let mut c = Cache::new(10);
        let mut nx = Message::new(7, MessageType::Response, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("org.").unwrap();
        nx.authorities.push(Record::from_rdata(
            zone.clone(),
            900,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 1, 1, 1, 30)),
        ));
        c.put(&q("nope.org."), &nx, 0);
        assert!(c.get(&q("nope.org."), 29).is_some());
        assert!(c.get(&q("nope.org."), 30).is_none());
        let mut fail = answer(60);
        fail.metadata.response_code = ResponseCode::ServFail;
        c.put(&q("a.org."), &fail, 0);
        let mut tc = answer(60);
        tc.metadata.truncation = true;
        c.put(&q("b.org."), &tc, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn the_oldest_answer_makes_room() {
        let mut c = Cache::new(2);
        for n in ["a.org.", "b.org.", "c.org."] {
            c.put(&q(n), &answer(60), 0);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&q("a.org."), 1).is_none());
        assert!(c.get(&q("c.org."), 1).is_some());
        assert!(Cache::new(0).get(&q("a.org."), 0).is_none());
    }
}
