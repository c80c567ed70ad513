//! Namespace plumbing, as Neutron's DHCP agent and interface driver do it, over netlink from
//! this process (no `ip` commands): named network namespaces (`/var/run/netns/<name>`), a veth
//! pair whose `tap…` end is a port of the network's bridge and whose `ns-…` end lives in the
//! namespace with the DHCP port's address. Every operation is idempotent, so start-up can
//! reconcile whatever a previous run left.
#![forbid(unsafe_code)]

use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

mod segments;
mod visit;
pub use segments::{ensure_in_bridge, ensure_vlan, ensure_vxlan, VlanSegment, VxlanSegment};
pub use visit::{in_netns, within_netns};

/// Where named namespaces are bound, as `ip netns` expects.
pub const NETNS_DIR: &str = "/var/run/netns";
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// A plumbing failure, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    /// A namespace operation failed.
    #[error("namespace {name}: {why}")]
    Netns {
        /// The namespace.
        name: String,
        /// What went wrong.
        why: String,
    },
    /// A netlink operation failed.
    #[error("netlink: {0}")]
    Netlink(String),
}

fn ns_err(name: &str, why: impl std::fmt::Display) -> PlumbError {
    PlumbError::Netns {
        name: name.into(),
        why: why.to_string(),
    }
}

pub(crate) fn nl<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> PlumbError + '_ {
    move |e| PlumbError::Netlink(format!("{what}: {e}"))
}

/// Path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// True when `/var/run/netns/<name>` is a live namespace (not a stale file).
pub fn netns_exists(name: &str) -> bool {
    nix::sys::statfs::statfs(&netns_path(name)).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Opens a namespace handle, for `setns` or for moving a link into it.
pub fn open_netns(name: &str) -> Result<File, PlumbError> {
    File::open(netns_path(name)).map_err(|e| ns_err(name, e))
}

/// Makes [`NETNS_DIR`] a shared mount point, bind-mounting it onto itself first when it is not
/// a mount point, as iproute2's `ip netns add` does: a namespace bound under it then propagates
/// to every mount namespace that is its peer (a container with `/run/netns` shared, as kolla
/// runs Neutron's agents) or was cloned from it after this (`ip netns exec`, an agent's
/// helpers), instead of staying in this process's mount namespace alone.
///
/// A mount namespace that is a *slave* of the host's (what `ip netns exec` gives the command it
/// runs) never propagates back to the host, for iproute2 either: start `qdhcp serve` with
/// `--netns HOST`, which enters only the network namespace, rather than under `ip netns exec`.
pub fn share_netns_dir() -> nix::Result<()> {
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Err(nix::errno::Errno::EINVAL) => {
            // not a mount point yet: make it one, then share it
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            shared()
        }
        r => r,
    }
}

/// True when this process's mount of [`NETNS_DIR`] receives mounts from another mount
/// namespace but cannot send any back (`master:` in mountinfo): what `ip netns exec` gives the
/// command it runs. Namespaces created from such a process are invisible outside it.
pub fn netns_dir_is_slave() -> bool {
    let dir = std::fs::canonicalize(NETNS_DIR).unwrap_or_else(|_| PathBuf::from("/run/netns"));
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            mount_of(&t, &dir.to_string_lossy()).is_some_and(|fields| fields.contains("master:"))
        })
        .unwrap_or(false)
}

/// The optional fields (`shared:N`, `master:N`, …) of the mount holding `path`: the last entry
/// (the one on top) with the longest mount point that contains it.
fn mount_of<'a>(mountinfo: &'a str, path: &str) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.splitn(7, ' ').collect();
        let (Some(point), Some(rest)) = (f.get(4), f.get(6)) else {
            continue;
        };
        let inside = path == *point
            || *point == "/"
            || path.strip_prefix(point).is_some_and(|r| r.starts_with('/'));
        if inside && best.is_none_or(|(len, _)| point.len() >= len) {
            let optional = match rest.strip_prefix("- ") {
                Some(_) => "",
                None => rest.split(" - ").next().unwrap_or(""),
            };
            best = Some((point.len(), optional));
        }
    }
    best.map(|(_, o)| o)
}

/// The mount namespace named namespaces are bound in when it is not this process's own (see
/// [`bind_in_parent_mount_namespace`]).
static BIND_MOUNT_NS: std::sync::OnceLock<File> = std::sync::OnceLock::new();

/// For a process started under `ip netns exec`, whose mount namespace is a slave of the one it
/// was started from: from now on namespaces are bound (and unbound) in the mount namespace of
/// the process that started it, the one `ip netns exec` left, so that everyone there can enter
/// them, as with `qdhcp serve --netns`; this process sees them too, its `/var/run/netns`
/// following that one's. True when it took effect; false when there is nothing to do (the same
/// mount namespace).
pub fn bind_in_parent_mount_namespace() -> std::io::Result<bool> {
    let parent = format!("/proc/{}/ns/mnt", nix::unistd::getppid());
    if std::fs::read_link("/proc/self/ns/mnt")? == std::fs::read_link(&parent)? {
        return Ok(false);
    }
    let f = File::open(&parent)?;
    Ok(BIND_MOUNT_NS.set(f).is_ok())
}

/// Runs `f` on a thread of its own in the mount namespace namespaces are bound in.
fn in_bind_mount_ns<T: Send>(
    name: &str,
    f: impl FnOnce() -> Result<T, PlumbError> + Send,
) -> Result<T, PlumbError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(m) = BIND_MOUNT_NS.get() {
                // a thread may enter another mount namespace once its fs data is its own
                unshare(CloneFlags::CLONE_FS).map_err(|e| ns_err(name, format!("unshare: {e}")))?;
                setns(m, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| ns_err(name, format!("enter the mount namespace: {e}")))?;
            }
            f()
        })
        .join()
        .map_err(|_| ns_err(name, "thread panicked"))?
    })
}

/// Creates the named namespace (with `lo` up) unless it exists.
pub fn create_netns(name: &str) -> Result<(), PlumbError> {
    if netns_exists(name) {
        return Ok(());
    }
    let n = name.to_string();
    in_bind_mount_ns(name, move || {
        std::fs::create_dir_all(NETNS_DIR).map_err(|e| ns_err(&n, e))?;
        // once per mount namespace: a shared mount stays shared, and each recursive remount
        // walks every namespace bound below it
        static SHARED_IN: parking_lot::Mutex<Option<u64>> = parking_lot::Mutex::new(None);
        let here = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/thread-self/ns/mnt")
                .map(|m| m.ino())
                .ok()
        };
        let mut shared = SHARED_IN.lock();
        if here.is_none() || *shared != here {
            share_netns_dir().map_err(|e| ns_err(&n, e))?;
            *shared = here;
        }
        drop(shared);
        let path = netns_path(&n);
        File::create(&path).map_err(|e| ns_err(&n, e))?;
        // this thread's own network namespace becomes the named one
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(&n, format!("unshare: {e}")))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| ns_err(&n, format!("bind mount: {e}")))
    })?;
    in_netns(Some(name), |h| async move {
        let idx = link_index(&h, "lo")
            .await?
            .ok_or_else(|| PlumbError::Netlink("no lo".into()))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl("lo up"))
    })
}

/// Removes the named namespace (its links go with it).
pub fn delete_netns(name: &str) -> Result<(), PlumbError> {
    let path = netns_path(name);
    if netns_exists(name) {
        // Delete the links first: the kernel frees a namespace lazily, and a veth's outside
        // end would linger on the bridge until it does.
        in_netns(Some(name), |h| async move {
            let mut links = h.link().get().execute();
            let mut idx = Vec::new();
            while let Some(l) = links.try_next().await.map_err(nl("list links"))? {
                if l.header.index != 1 {
                    idx.push(l.header.index);
                }
            }
            for i in idx {
                let _ = h.link().del(i).execute().await;
            }
            Ok(())
        })?;
    }
    let exists = netns_exists(name);
    in_bind_mount_ns(name, || {
        if exists {
            umount2(&path, MntFlags::MNT_DETACH)
                .map_err(|e| ns_err(name, format!("umount: {e}")))?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ns_err(name, e)),
        }
    })
}

/// Index of the link called `name`, if any.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, PlumbError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // the kernel answers ENODEV for an unknown name
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(PlumbError::Netlink(format!("get {name}: {e}"))),
    }
}

/// Creates the bridge `name` in the current namespace unless it exists, and sets it up.
pub fn ensure_bridge(name: &str) -> Result<(), PlumbError> {
    let name = name.to_string();
    in_netns(None, move |h| async move {
        if link_index(&h, &name).await?.is_none() {
            h.link()
                .add(LinkBridge::new(&name).build())
                .execute()
                .await
                .map_err(nl("add bridge"))?;
        }
        no_ipv6(&name);
        let idx = link_index(&h, &name)
            .await?
            .ok_or_else(|| PlumbError::Netlink(format!("bridge {name} vanished")))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl("bridge up"))
    })
}

/// Turns IPv6 off on a host-side device (a bridge, a tap, a VXLAN device) before it comes up,
/// as Neutron's linuxbridge agent does for its bridges: DHCPv4 segments need no link-local
/// address there, and each one costs the kernel a walk of the host's whole IPv6 routing table
/// (most of a create's kernel time with a thousand networks). A kernel without IPv6 has no
/// such file: nothing to do.
pub(crate) fn no_ipv6(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1") {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!("{path}: {e}");
        }
    }
}

/// A link of the current namespace: its index, name and bridge (master), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Index of the bridge it is a port of.
    pub master: Option<u32>,
}

/// Every link of the current namespace (one dump).
pub fn links() -> Result<Vec<LinkInfo>, PlumbError> {
    in_netns(None, |h| async move {
        use rtnetlink::packet_route::link::LinkAttribute;
        let mut out = Vec::new();
        let mut dump = h.link().get().execute();
        while let Some(l) = dump.try_next().await.map_err(nl("list links"))? {
            let mut name = String::new();
            let mut master = None;
            for a in &l.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = n.clone(),
                    LinkAttribute::Controller(m) => master = Some(*m),
                    _ => {}
                }
            }
            out.push(LinkInfo {
                index: l.header.index,
                name,
                master,
            });
        }
        Ok(out)
    })
}

/// Names of the namespaces under [`NETNS_DIR`] starting with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Removes the link `name` from the current namespace if it exists (a segment's device or
/// bridge when its network goes).
pub fn delete_link(name: &str) -> Result<(), PlumbError> {
    let name = name.to_string();
    in_netns(None, move |h| async move {
        if let Some(i) = link_index(&h, &name).await? {
            h.link().del(i).execute().await.map_err(nl("delete link"))?;
        }
        Ok(())
    })
}

/// One DHCP port's plumbing.
#[derive(Debug, Clone)]
pub struct DhcpPlug {
    /// Namespace (`qdhcp-<network>`).
    pub netns: String,
    /// Outside end, on the bridge (`tap<port[:11]>`).
    pub tap: String,
    /// Inside end, where the server listens (`ns-<port[:11]>`).
    pub inner: String,
    /// Bridge for the tap end; `None` leaves it unplugged.
    pub bridge: Option<String>,
    /// The DHCP port's MAC for the inside end.
    pub mac: [u8; 6],
    /// The DHCP port's addresses with their prefixes (IPv4 and IPv6).
    pub addrs: Vec<IpNet>,
}

/// Creates or repairs a DHCP port's plumbing: namespace, veth pair, bridge port, addresses.
pub fn plug(p: &DhcpPlug) -> Result<(), PlumbError> {
    create_netns(&p.netns)?;
    if let Some(b) = &p.bridge {
        ensure_bridge(b)?;
    }
    let inner_present = {
        let inner = p.inner.clone();
        in_netns(Some(&p.netns), move |h| async move {
            Ok(link_index(&h, &inner).await?.is_some())
        })?
    };
    let ns_file = open_netns(&p.netns)?;
    let q = p.clone();
    in_netns(None, move |h| async move {
        use std::os::fd::AsRawFd;
        if !inner_present {
            if let Some(old) = link_index(&h, &q.tap).await? {
                h.link()
                    .del(old)
                    .execute()
                    .await
                    .map_err(nl("del stale tap"))?;
            }
            // The inside end is made in the namespace, with the port's MAC, by the one
            // request: moving a device between namespaces waits for an RCU grace period
            // (22 ms a move here, most of a network's plumbing time).
            // One queue each way, asked for at creation: a veth made with a queue per CPU is
            // cut down to one right after, and each cut waits for an expedited RCU grace
            // period (two per network, most of the plumbing thread's waiting).
            use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
            fn one_queue<T>(
                b: rtnetlink::LinkMessageBuilder<T>,
            ) -> rtnetlink::LinkMessageBuilder<T> {
                b.append_extra_attribute(LinkAttribute::NumTxQueues(1))
                    .append_extra_attribute(LinkAttribute::NumRxQueues(1))
            }
            let peer = one_queue(
                LinkUnspec::new_with_name(&q.inner)
                    .address(q.mac.to_vec())
                    .setns_by_fd(ns_file.as_raw_fd()),
            )
            .build();
            h.link()
                .add(
                    one_queue(LinkVeth::new(&q.tap, &q.inner))
                        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("add veth"))?;
        }
        let tap = link_index(&h, &q.tap)
            .await?
            .ok_or_else(|| PlumbError::Netlink(format!("{} missing", q.tap)))?;
        no_ipv6(&q.tap);
        let mut set = LinkUnspec::new_with_index(tap).up();
        if let Some(b) = &q.bridge {
            let br = link_index(&h, b)
                .await?
                .ok_or_else(|| PlumbError::Netlink(format!("bridge {b} missing")))?;
            set = set.controller(br);
        }
        h.link()
            .set(set.build())
            .execute()
            .await
            .map_err(nl("tap up"))
    })?;
    // Before the inside end comes up, as Neutron's agent sets the DHCP port: no router
    // advertisements taken (the port is a server, not a host), and no duplicate address
    // detection, which would hold its link-local and IPv6 addresses (unique by IPAM)
    // tentative for a second or two, when DHCPv6 and metadata cannot bind to them. Sysctls
    // are read in the namespace of the thread that opens them: written from inside.
    within_netns(&p.netns, || {
        for (key, value) in [("accept_ra", "0"), ("accept_dad", "0")] {
            let path = format!("/proc/sys/net/ipv6/conf/{}/{key}", p.inner);
            if let Err(e) = std::fs::write(&path, value) {
                tracing::warn!("{path}: {e}");
            }
        }
    })?;
    let q = p.clone();
    in_netns(Some(&p.netns), move |h| async move {
        let idx = link_index(&h, &q.inner)
            .await?
            .ok_or_else(|| PlumbError::Netlink(format!("{} missing", q.inner)))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl("inner up"))?;
        let mut have: Vec<(IpAddr, u8)> = Vec::new();
        let mut addrs = h.address().get().set_link_index_filter(idx).execute();
        while let Some(a) = addrs.try_next().await.map_err(nl("get addresses"))? {
            for attr in a.attributes {
                if let rtnetlink::packet_route::address::AddressAttribute::Address(ip) = attr {
                    have.push((ip, a.header.prefix_len));
                }
            }
        }
        for n in &q.addrs {
            if !have.contains(&(n.addr(), n.prefix_len())) {
                h.address()
                    .add(idx, n.addr(), n.prefix_len())
                    .execute()
                    .await
                    .map_err(nl("add address"))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vlan_segment_is_requested_as_the_linuxbridge_agent_names_it() {
        use rtnetlink::packet_route::link::{
            InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo,
        };
        let v = VlanSegment {
            parent: "eth1".into(),
            vid: 101,
            bridge: "brq12345678-9a".into(),
        };
        assert_eq!(v.device(), "eth1.101");
        let m = v.create_request(7);
        let attrs = &m.attributes;
        assert!(attrs.contains(&LinkAttribute::IfName("eth1.101".into())));
        assert!(attrs.contains(&LinkAttribute::Link(7)));
        let info = attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("link info");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Vlan)));
        assert!(info.iter().any(
            |i| matches!(i, LinkInfo::Data(InfoData::Vlan(d)) if d.contains(&InfoVlan::Id(101)))
        ));
        // a long parent name is shortened to fit the kernel's 15 characters, keeping the VLAN
        let long = VlanSegment {
            parent: "enp129s0f1np1".into(),
            vid: 4094,
            bridge: String::new(),
        };
        assert_eq!(long.device(), "enp129s0f1.4094");
        assert!(long.device().len() <= 15);
    }

    #[test]
    fn the_mount_holding_the_netns_dir_is_found_with_its_propagation() {
        let host = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n\
                    51 40 0:25 /netns /run/netns rw shared:9 - tmpfs tmpfs rw\n";
        assert_eq!(mount_of(host, "/run/netns"), Some("shared:9"));
        let exec = "60 59 0:21 / / rw,relatime master:1 - ext4 /dev/vda rw\n\
                    61 60 0:25 / /run rw master:5 - tmpfs tmpfs rw\n\
                    62 61 0:25 /netns /run/netns rw master:9 - tmpfs tmpfs rw\n";
        assert_eq!(mount_of(exec, "/run/netns"), Some("master:9"));
        // no mount on the directory itself: the one holding it
        assert_eq!(mount_of(exec, "/run/netnsx"), Some("master:5"));
        let plain = "22 1 0:21 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(mount_of(plain, "/run/netns"), Some(""));
    }
}
