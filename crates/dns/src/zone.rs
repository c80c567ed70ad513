//! The names a network's DNS server answers itself: each port's `host-<ip with dashes>` (or its
//! `dns_name`) under the network's domain and bare, as Neutron writes them into dnsmasq's
//! `--addn-hosts` file (`<ip> <fqdn> <name>`). Pure data: no I/O here.

use std::net::IpAddr;

use ahash::HashMap;
use hickory_proto::rr::{LowerName, Name};

/// A line of an addn-hosts file that could not be read, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ZoneError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// Local names and addresses of one network.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    by_name: HashMap<LowerName, Vec<IpAddr>>,
    /// TXT records (dnsmasq's `--txt-record`, Neutron's `dnsmasq_txt_record`).
    txt: HashMap<LowerName, Vec<String>>,
    /// The first name given for an address: the answer to its PTR query.
    by_ip: HashMap<IpAddr, Name>,
}

fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

impl Zone {
    /// Adds `names` for `ip`; the first becomes the address's PTR target.
    pub fn insert(&mut self, ip: IpAddr, names: &[Name]) {
        for n in names {
            let ips = self.by_name.entry(LowerName::new(n)).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if let Some(first) = names.first() {
            self.by_ip.entry(ip).or_insert_with(|| first.clone());
        }
    }

    /// Takes back what [`Zone::insert`] added for `ip` under `names`; other addresses of
    /// the same names stay, and so does a PTR of `ip` under a name not in `names`.
    pub fn remove(&mut self, ip: IpAddr, names: &[Name]) {
        for n in names {
            let key = LowerName::new(n);
            if let Some(ips) = self.by_name.get_mut(&key) {
                ips.retain(|a| *a != ip);
                if ips.is_empty() {
                    self.by_name.remove(&key);
                }
            }
        }
        if self.by_ip.get(&ip).is_some_and(|ptr| {
            names
                .iter()
                .any(|n| LowerName::new(n) == LowerName::new(ptr))
        }) {
            self.by_ip.remove(&ip);
        }
    }

    /// Reads dnsmasq's hosts-file format (`IP NAME [NAME…]`, `#` comments; IPv4 and IPv6, as
    /// Neutron writes both into addn_hosts); unreadable lines are reported and skipped.
    pub fn parse_hosts(text: &str) -> (Zone, Vec<ZoneError>) {
        let mut z = Zone::default();
        let errs = z.add_hosts(text);
        (z, errs)
    }

    /// [`Zone::parse_hosts`] into this zone (dnsmasq reads /etc/hosts and every
    /// `--addn-hosts` file into one set of names).
    pub fn add_hosts(&mut self, text: &str) -> Vec<ZoneError> {
        let z = self;
        let mut errs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let Some(addr) = words.next() else { continue };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                errs.push(ZoneError {
                    line: i + 1,
                    why: format!("{addr:?} is not an address"),
                });
                continue;
            };
            let mut names = Vec::new();
            for w in words {
                match fqdn(w) {
                    Some(n) => names.push(n),
                    None => errs.push(ZoneError {
                        line: i + 1,
                        why: format!("{w:?} is not a name"),
                    }),
                }
            }
            if names.is_empty() {
                errs.push(ZoneError {
                    line: i + 1,
                    why: "an address without a name".into(),
                });
                continue;
            }
            z.insert(ip, &names);
        }
        errs
    }

    /// Adds dnsmasq's `--txt-record=NAME[,TEXT[,TEXT…]]`.
    pub fn add_txt(&mut self, spec: &str) -> Result<(), ZoneError> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or("").trim();
        let n = fqdn(name).ok_or_else(|| ZoneError {
            line: 0,
            why: format!("--txt-record={spec}: {name:?} is not a name"),
        })?;
        let texts: Vec<String> = parts.map(|t| t.trim_matches('"').to_string()).collect();
        self.txt
            .entry(LowerName::new(&n))
            .or_default()
            .extend(texts);
        Ok(())
    }

    /// The TXT strings of `name`, if it has any.
    pub fn txt(&self, name: &LowerName) -> Option<&[String]> {
        self.txt.get(name).map(Vec::as_slice)
    }

    /// The addresses of `name`, if it is a local name.
    pub fn addresses(&self, name: &LowerName) -> Option<&[IpAddr]> {
        self.by_name.get(name).map(Vec::as_slice)
    }

    /// The name of `ip`, if it is a local address.
    pub fn name_of(&self, ip: IpAddr) -> Option<&Name> {
        self.by_ip.get(&ip)
    }

    /// How many names are known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no name is known.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Name> {
        v.iter().map(|n| fqdn(n).unwrap()).collect()
    }

    #[test]
    fn remove_takes_back_one_insert_and_leaves_the_rest() {
        let mut z = Zone::default();
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "fd00::5".parse().unwrap();
        let c: IpAddr = "10.0.0.6".parse().unwrap();
        z.insert(a, &names(&["vm1.example.", "vm1"]));
        z.insert(b, &names(&["vm1.example.", "vm1"]));
        z.insert(c, &names(&["host-10-0-0-6.example.", "host-10-0-0-6"]));
        z.remove(a, &names(&["vm1.example.", "vm1"]));
        let vm1 = LowerName::new(&fqdn("vm1").unwrap());
        assert_eq!(z.addresses(&vm1), Some(&[b][..]));
        assert_eq!(z.name_of(a), None);
        assert_eq!(
            z.name_of(b).map(|n| n.to_ascii()),
            Some("vm1.example.".into())
        );
        z.remove(b, &names(&["VM1.example.", "vm1"]));
        assert_eq!(z.addresses(&vm1), None);
        assert_eq!(z.name_of(b), None);
        assert_eq!(z.len(), 2, "the other port's names stay");
        // a PTR under another name is not this removal's to take
        z.insert(a, &names(&["x.example."]));
        z.insert(a, &names(&["y.example."]));
        z.remove(a, &names(&["y.example."]));
        assert_eq!(
            z.name_of(a).map(|n| n.to_ascii()),
            Some("x.example.".into())
        );
    }

    #[test]
    fn neutrons_addn_hosts_lines_give_fqdn_bare_name_and_ptr() {
        let (z, errs) = Zone::parse_hosts(
            "172.16.1.103\thost-172-16-1-103.openstacklocal. host-172-16-1-103\n\
             # comment\n\
             fd00::5 host-fd00--5.openstacklocal. host-fd00--5\n\
             172.16.1.104 vm2.example.org vm2\n\
             bad line\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 5);
        let a = |s: &str| z.addresses(&LowerName::new(&fqdn(s).unwrap()));
        assert_eq!(
            a("HOST-172-16-1-103.openstacklocal"),
            Some(&[IpAddr::from([172, 16, 1, 103])][..])
        );
        assert_eq!(a("host-172-16-1-103").map(<[_]>::len), Some(1));
        assert_eq!(a("vm2"), Some(&[IpAddr::from([172, 16, 1, 104])][..]));
        assert_eq!(
            z.name_of(IpAddr::from([172, 16, 1, 103]))
                .unwrap()
                .to_ascii(),
            "host-172-16-1-103.openstacklocal."
        );
        // IPv6 lines too: Neutron writes each v6 fixed IP there and dnsmasq answers AAAA
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(a("host-fd00--5"), Some(&[v6][..]));
        assert_eq!(
            z.name_of(v6).unwrap().to_ascii(),
            "host-fd00--5.openstacklocal."
        );
    }
}
