//! SIGHUP without a full rebuild. Neutron's agent rewrites the whole hosts file for every port
//! change and signals; re-reading 100,000 lines costs hundreds of milliseconds, while the change
//! is usually one line. [`Applied`] remembers the texts the served table was built from; on a
//! reload it compares old and new text (common prefix and suffix first, then the lines in
//! between as multisets) and returns the few reservations to upsert or remove. Whenever the
//! result could differ from a full [`crate::build_table`] (opts changed, duplicates, bad lines,
//! client ids, per-host options) it answers [`Delta::Full`] and the caller rebuilds.

use std::net::Ipv4Addr;

use ahash::{HashMap, HashSet};
use qdhcp_protocol::{Mac, NetworkTable, Reservation};

use crate::files::{content_lines, parse_host, HostLine};
use crate::table::HostContext;

/// What the served table was built from.
#[derive(Debug)]
pub struct Applied {
    hosts_texts: Vec<String>,
    opts_texts: Vec<String>,
    ctx: HostContext,
    /// Reserved addresses, to refuse a new line that reuses one (a full build would skip it).
    ips: HashSet<Ipv4Addr>,
    /// The full build had no warning: every line is one reservation with a unique MAC and IP.
    clean: bool,
}

/// What a reload has to do.
#[derive(Debug, PartialEq)]
pub enum Delta {
    /// Rebuild from scratch; the reason goes to the debug log.
    Full(&'static str),
    /// Apply these changes in place; everything else stays as it is.
    Changes(Changes),
}

/// Reservations to add or replace and MACs whose reservation is gone.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// New or changed reservations (a changed one replaces the one of the same MAC).
    pub upsert: Vec<Reservation>,
    /// MACs whose host line went away.
    pub remove: Vec<Mac>,
    /// How many of `upsert` replace an existing reservation.
    pub changed: usize,
    /// Lines that differ textually but give the reservation already served.
    pub same: usize,
    /// Addresses no line reserves any more.
    pub freed: Vec<Ipv4Addr>,
}

impl Applied {
    /// Remembers a full build: the hosts and opts texts it read, its context, its table, and
    /// whether it produced warnings (a build with warnings is never updated in place).
    pub fn new(
        hosts_texts: Vec<String>,
        opts_texts: Vec<String>,
        ctx: HostContext,
        table: &NetworkTable,
        had_warnings: bool,
    ) -> Self {
        let mut ips = HashSet::default();
        ips.reserve(table.reservations().len());
        let mut clean = !had_warnings;
        for r in table.reservations() {
            if r.mac.is_none() || r.client_id.is_some() || !ips.insert(r.ip) {
                clean = false;
            }
        }
        Applied {
            hosts_texts,
            opts_texts,
            ctx,
            ips,
            clean,
        }
    }

    /// The changes that turn `table` (built from the remembered texts) into what a full build
    /// of the new texts would give.
    pub fn delta(&self, hosts: &[String], opts: &[String], table: &NetworkTable) -> Delta {
        if !self.clean {
            return Delta::Full("the previous build had warnings");
        }
        if opts != self.opts_texts.as_slice() {
            return Delta::Full("an opts file changed");
        }
        if hosts.len() != self.hosts_texts.len() {
            return Delta::Full("the set of hosts files changed");
        }
        let mut gone: HashMap<&str, i32> = HashMap::default();
        for (old, new) in self.hosts_texts.iter().zip(hosts) {
            let (o, n) = differing_lines(old, new);
            for (_, l) in content_lines(o) {
                *gone.entry(l).or_default() += 1;
            }
            for (_, l) in content_lines(n) {
                *gone.entry(l).or_default() -= 1;
            }
        }
        let mut removed: Vec<HostLine> = Vec::new();
        let mut added: Vec<HostLine> = Vec::new();
        for (line, n) in gone {
            if n == 0 {
                continue;
            }
            if n.abs() != 1 {
                return Delta::Full("a host line appears more than once");
            }
            let h = match parse_host(line) {
                Ok(Some(h)) => h,
                Ok(None) => continue, // IPv6 only: never served
                Err(_) => return Delta::Full("a host line does not parse"),
            };
            if h.ignore || h.client_id.is_some() || h.mac.is_none() || h.ip.is_none() {
                return Delta::Full("a host line with ignore, a client id or no MAC or address");
            }
            if n > 0 {
                if h.tags.iter().any(|t| self.ctx.has_options_for(t)) {
                    return Delta::Full("a removed host had options of its own");
                }
                removed.push(h);
            } else {
                added.push(h);
            }
        }
        let removed_macs: HashMap<Mac, Ipv4Addr> = removed
            .iter()
            .filter_map(|h| Some((h.mac?, h.ip?)))
            .collect();
        if removed_macs.len() != removed.len() {
            return Delta::Full("two removed lines name one MAC");
        }
        let freed_ips: HashSet<Ipv4Addr> = removed_macs.values().copied().collect();
        let mut changes = Changes::default();
        let mut added_macs: HashSet<Mac> = HashSet::default();
        let mut added_ips: HashSet<Ipv4Addr> = HashSet::default();
        for h in added {
            let (Some(mac), Some(ip)) = (h.mac, h.ip) else {
                return Delta::Full("a host line without MAC or address");
            };
            if !added_macs.insert(mac) || !added_ips.insert(ip) {
                return Delta::Full("two new lines share a MAC or an address");
            }
            let replaces = removed_macs.contains_key(&mac);
            if !replaces && table.lookup(mac, None).is_some() {
                return Delta::Full("a new line repeats the MAC of another host");
            }
            if self.ips.contains(&ip) && !freed_ips.contains(&ip) {
                return Delta::Full("a new line reuses a reserved address");
            }
            let mut warnings = Vec::new();
            let r = match self.ctx.reservation(h, &mut warnings) {
                Ok(r) if warnings.is_empty() => r,
                _ => return Delta::Full("a new host's options do not parse"),
            };
            if replaces {
                if table.lookup(mac, None) == Some(&r) {
                    changes.same += 1;
                    continue;
                }
                changes.changed += 1;
            }
            changes.upsert.push(r);
        }
        changes.freed = freed_ips
            .iter()
            .filter(|ip| !added_ips.contains(ip))
            .copied()
            .collect();
        changes.remove = removed_macs
            .keys()
            .filter(|m| !added_macs.contains(m))
            .copied()
            .collect();
        Delta::Changes(changes)
    }

    /// Records that `changes` were applied and the served table now stands for `hosts`.
    pub fn commit(&mut self, hosts: Vec<String>, changes: &Changes) {
        for ip in &changes.freed {
            self.ips.remove(ip);
        }
        for r in &changes.upsert {
            self.ips.insert(r.ip);
        }
        self.hosts_texts = hosts;
    }
}

/// The whole lines in which `old` and `new` differ, after cutting their common leading and
/// trailing lines: an appended, deleted or edited line leaves just that line on either side.
fn differing_lines<'a>(old: &'a str, new: &'a str) -> (&'a str, &'a str) {
    let (ob, nb) = (old.as_bytes(), new.as_bytes());
    let mut p = common_len(ob, nb, false);
    if p < ob.len() || p < nb.len() {
        // back up to the start of the line where they part
        p = ob[..p]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
    }
    let (ot, nt) = (&ob[p..], &nb[p..]);
    let mut s = common_len(ot, nt, true);
    // the common tail must start at a line start in both
    let line_start = |b: &[u8], t: usize| t == 0 || b[t - 1] == b'\n';
    while s > 0 && !(line_start(ot, ot.len() - s) && line_start(nt, nt.len() - s)) {
        s -= 1;
    }
    (&old[p..old.len() - s], &new[p..new.len() - s])
}

/// How many bytes `a` and `b` share at the front (or the back); compares whole blocks first so
/// that a 40 MB file is compared at memcmp speed.
fn common_len(a: &[u8], b: &[u8], from_back: bool) -> usize {
    const BLOCK: usize = 4096;
    let n = a.len().min(b.len());
    let (a, b) = if from_back {
        (&a[a.len() - n..], &b[b.len() - n..])
    } else {
        (&a[..n], &b[..n])
    };
    let mut i = 0;
    if from_back {
        while i + BLOCK <= n && a[n - i - BLOCK..n - i] == b[n - i - BLOCK..n - i] {
            i += BLOCK;
        }
        while i < n && a[n - 1 - i] == b[n - 1 - i] {
            i += 1;
        }
    } else {
        while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
            i += BLOCK;
        }
        while i < n && a[i] == b[i] {
            i += 1;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_args;
    use crate::files::{parse_hosts, parse_opts};
    use crate::table::build_with_context;
    use proptest::prelude::*;

    #[test]
    fn differing_lines_cut_common_lines() {
        assert_eq!(differing_lines("a\nb\n", "a\nb\nc\n"), ("", "c\n"));
        assert_eq!(differing_lines("a\nb\nc\n", "a\nc\n"), ("b\n", ""));
        assert_eq!(
            differing_lines("a\nbx\nc\n", "a\nby\nc\n"),
            ("bx\n", "by\n")
        );
        assert_eq!(differing_lines("a\nb", "a\nbc"), ("b", "bc"));
        assert_eq!(differing_lines("ab\n", "b\n"), ("ab\n", "b\n"));
        assert_eq!(differing_lines("", "x\n"), ("", "x\n"));
        assert_eq!(differing_lines("x\n", "x\n"), ("", ""));
        assert_eq!(differing_lines("b\n", "ab\n"), ("b\n", "ab\n"));
        assert_eq!(differing_lines("a\na\n", "a\n"), ("a\n", ""));
        let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let edited = big.replace("line 2500\n", "line 2500x\n");
        assert_eq!(
            differing_lines(&big, &edited),
            ("line 2500\n", "line 2500x\n")
        );
    }

    const RANGE: &str = "--dhcp-range=set:subnet-a,10.0.0.0,static,255.0.0.0,86400s";

    fn build(hosts: &str, opts: &str) -> (NetworkTable, Applied, crate::cmdline::DnsmasqConfig) {
        let cfg = parse_args(&[RANGE.to_string()], |_| unreachable!()).unwrap();
        let (h, he) = parse_hosts(hosts);
        let (o, oe) = parse_opts(opts);
        let (b, ctx) = build_with_context(&cfg, h, &o);
        let warned = !b.warnings.is_empty() || !he.is_empty() || !oe.is_empty();
        let a = Applied::new(
            vec![hosts.to_string()],
            vec![opts.to_string()],
            ctx,
            &b.table,
            warned,
        );
        (b.table, a, cfg)
    }

    /// Applies a delta the way the dataplane does (upsert, then remove by MAC).
    fn apply(table: &mut NetworkTable, c: &Changes) {
        for r in &c.upsert {
            table.upsert(r.clone());
        }
        for m in &c.remove {
            table.remove_mac(*m);
        }
    }

    fn sorted(t: &NetworkTable) -> Vec<Reservation> {
        let mut v = t.reservations().to_vec();
        v.sort_by_key(|r| (r.mac, r.ip));
        v
    }

    #[test]
    fn an_appended_line_is_one_upsert() {
        let old = "fa:16:3e:00:00:01,h1,10.0.0.1\nfa:16:3e:00:00:02,h2,10.0.0.2\n";
        let new = format!("{old}fa:16:3e:00:00:03,h3,10.0.0.3\n");
        let (t, a, _) = build(old, "");
        let Delta::Changes(c) = a.delta(&[new], &[String::new()], &t) else {
            panic!("expected a delta")
        };
        assert_eq!(c.upsert.len(), 1);
        assert_eq!(c.upsert[0].ip, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(c.upsert[0].hostname.as_deref(), Some("h3"));
        assert!(c.remove.is_empty());
    }

    #[test]
    fn a_new_line_reusing_a_reserved_address_needs_a_full_build() {
        let old = "fa:16:3e:00:00:01,h1,10.0.0.1\n";
        let new = format!("{old}fa:16:3e:00:00:03,h3,10.0.0.1\n");
        let (t, a, _) = build(old, "");
        assert!(matches!(
            a.delta(&[new], &[String::new()], &t),
            Delta::Full(_)
        ));
    }

    #[test]
    fn changed_opts_or_a_build_with_warnings_need_a_full_build() {
        let old = "fa:16:3e:00:00:01,h1,10.0.0.1\n";
        let (t, a, _) = build(old, "");
        let d = a.delta(
            &[old.into()],
            &["tag:subnet-a,option:mtu,1400\n".into()],
            &t,
        );
        assert!(matches!(d, Delta::Full(_)));
        let (t, a, _) = build("fa:16:3e:00:00:01,h1,10.0.0.1\nbogus line\n", "");
        assert!(matches!(
            a.delta(&[old.into()], &[String::new()], &t),
            Delta::Full(_)
        ));
    }

    #[test]
    fn deleting_or_moving_a_host_is_applied_in_place() {
        let old = "fa:16:3e:00:00:01,h1,10.0.0.1\nfa:16:3e:00:00:02,h2,10.0.0.2\nfa:16:3e:00:00:03,h3,10.0.0.3\n";
        let (t, a, _) = build(old, "");
        let deleted = old.replace("fa:16:3e:00:00:02,h2,10.0.0.2\n", "");
        let Delta::Changes(c) = a.delta(&[deleted], &[String::new()], &t) else {
            panic!("expected a delta")
        };
        assert_eq!(c.remove, vec!["fa:16:3e:00:00:02".parse::<Mac>().unwrap()]);
        assert_eq!(c.freed, vec![Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(c.upsert.is_empty());
        // moved to an address nobody holds: one changed reservation, the old address freed
        let moved = old.replace("h2,10.0.0.2", "h2,10.0.0.9");
        let Delta::Changes(c) = a.delta(&[moved], &[String::new()], &t) else {
            panic!("expected a delta")
        };
        assert_eq!((c.upsert.len(), c.changed, c.remove.len()), (1, 1, 0));
        assert_eq!(c.upsert[0].ip, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(c.freed, vec![Ipv4Addr::new(10, 0, 0, 2)]);
        // two hosts swapping addresses in one rewrite
        let swapped = old
            .replace("h1,10.0.0.1", "h1,10.0.0.X")
            .replace("h2,10.0.0.2", "h2,10.0.0.1")
            .replace("10.0.0.X", "10.0.0.2");
        let Delta::Changes(c) = a.delta(&[swapped], &[String::new()], &t) else {
            panic!("expected a delta")
        };
        assert_eq!((c.upsert.len(), c.changed), (2, 2));
        assert!(c.freed.is_empty());
    }

    fn host_line() -> impl Strategy<Value = String> {
        // a small space of MACs, addresses and names so that collisions happen
        (0u8..12, 0u8..12, 0u8..3, prop::bool::weighted(0.1)).prop_map(|(m, ip, name, tag)| {
            format!(
                "fa:16:3e:00:00:{m:02x},{}h{name},10.0.0.{}",
                if tag { "set:port-p1," } else { "" },
                ip + 1
            )
        })
    }

    proptest! {
        /// Whatever the edit, a delta applied in place gives the table a full build gives.
        #[test]
        fn a_delta_equals_a_full_build(
            n in 1usize..8,
            keep in prop::collection::vec(prop::bool::weighted(0.8), 8),
            extra in prop::collection::vec(host_line(), 0..3),
            at in 0usize..8,
        ) {
            let opts = "tag:port-p1,option:mtu,1400\n";
            // a clean file: unique MACs and addresses, the tagged port present
            let old: Vec<String> = (0..n)
                .map(|i| format!("fa:16:3e:00:00:{i:02x},{}h{i},10.0.0.{}",
                    if i == 0 { "set:port-p1," } else { "" }, i + 1))
                .collect();
            let mut new: Vec<String> =
                old.iter().zip(&keep).filter(|(_, k)| **k).map(|(l, _)| l.clone()).collect();
            for (j, l) in extra.into_iter().enumerate() {
                let pos = (at + j).min(new.len());
                new.insert(pos, l);
            }
            let old_text: String = old.iter().map(|l| format!("{l}\n")).collect();
            let new_text: String = new.iter().map(|l| format!("{l}\n")).collect();
            let (mut t, a, cfg) = build(&old_text, opts);
            prop_assert!(a.clean);
            let (o, _) = parse_opts(opts);
            let (h, _) = parse_hosts(&new_text);
            let (full, _) = build_with_context(&cfg, h, &o);
            if let Delta::Changes(c) = a.delta(std::slice::from_ref(&new_text), &[opts.into()], &t) {
                apply(&mut t, &c);
                prop_assert_eq!(sorted(&t), sorted(&full.table));
            }
        }

        /// A one-line edit of a clean file is always applied in place.
        #[test]
        fn a_single_append_is_never_a_full_build(n in 1usize..50, extra in 0u8..50) {
            let old: String = (0..n).map(|i| format!("fa:16:3e:00:01:{i:02x},h{i},10.0.1.{}\n", i + 1)).collect();
            let new = format!("{old}fa:16:3e:00:02:{extra:02x},x,10.0.2.{}\n", extra + 1);
            let (mut t, mut a, cfg) = build(&old, "");
            let d = a.delta(std::slice::from_ref(&new), &[String::new()], &t);
            let Delta::Changes(c) = d else { panic!("full build for an append: {d:?}") };
            apply(&mut t, &c);
            a.commit(vec![new.clone()], &c);
            let (full, _) = build_with_context(&cfg, parse_hosts(&new).0, &[]);
            prop_assert_eq!(sorted(&t), sorted(&full.table));
        }
    }
}
