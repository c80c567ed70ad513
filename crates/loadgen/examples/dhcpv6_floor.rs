//! The floor under any DHCPv6 server on this machine's UDP path (`bench/dhcpv6_floor.sh`): it
//! answers every relayed SOLICIT with an ADVERTISE and every relayed REQUEST with a REPLY, each
//! in a RELAY-REPL carrying the address the client's MAC (option 79) maps to, in batches through
//! recvmmsg and sendmmsg as qdhcp does. It decides nothing, looks up nothing and keeps no lease,
//! so its latency is what the kernel and the machine give a reply on one core.
//!
//! With `--sync FILE`, a second thread on the same core is a durable lease store's group commit:
//! for every batch that held a REQUEST it writes a record per REQUEST to FILE (over zeros synced
//! ahead, as qdhcp's journal writes) and fdatasyncs, taking whatever batches came meanwhile into
//! the next commit (no reply waits for it): what the disk alone does to the replies' tail. With
//! `--sync-gap US`, commits begin at least US microseconds apart (fewer, larger flushes).
//!
//! With `--link`, the clients are on its link (`qdhcp loadgen --mode dhcpv6 --link`): it joins
//! ff02::1:2, takes each SOLICIT/REQUEST straight from a client's EUI-64 link-local address,
//! reads the MAC from that address (the kernel's neighbour table is not asked) and answers the
//! client on port 546 with the address reserved for that MAC in 2001:db8::/64.
//!
//! With `--spin`, it never sleeps in poll: it asks the socket again at once, so no wakeup of a
//! sleeping thread is in its path (what the kernel's receive and send cost without them).
//!
//! With `--coalesce US`, it sleeps US microseconds after each wakeup before it reads, so that
//! datagrams arriving one by one are read and answered in batches (a NIC's interrupt
//! moderation, in user space): what the per-datagram system calls cost.
//!
//! Usage: `dhcpv6_floor IFACE [--sync FILE [--sync-gap US]] [--spin] [--link] [--coalesce US]`
//! (port 547 on IFACE; runs until killed).
// Unsafe code here only to call the kernel directly (poll, as the server waits); every block
// says why it is sound.
#![allow(unsafe_code)]

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use qdhcp_batchio::{recv_batch_from, Outbox};
use socket2::{Domain, Protocol, Socket, Type};

const BATCH: usize = 64;
/// Where the inner message's type sits in a RELAY-REPL: after the relay header (34 bytes) and
/// the relay-message option's code and length.
const REPLY_KIND_AT: usize = 38;

/// The floor's answer to one RELAY-FORW, or `None` when it is not a relayed SOLICIT/REQUEST
/// with the client's MAC.
fn answer(b: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if b.len() < 34 || b[0] != 12 {
        return None;
    }
    let (mut mac, mut inner) = (None, None);
    let mut rest = &b[34..];
    while rest.len() >= 4 {
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let v = rest.get(4..4 + len)?;
        match code {
            79 if len == 8 => mac = Some(<[u8; 6]>::try_from(&v[2..8]).ok()?),
            9 => inner = Some(v),
            _ => {}
        }
        rest = &rest[4 + len..];
    }
    let (mac, inner) = (mac?, inner?);
    let mut msg = Vec::with_capacity(96);
    // the benchmark's reservations through the relay are in 2001:db8:1::/64
    client_answer(inner, mac, 1, &mut msg)?;
    out.clear();
    out.push(13);
    out.extend_from_slice(&b[1..34]);
    opt(out, 9, &msg);
    Some(())
}

/// The floor's answer to a SOLICIT/REQUEST from a client on the link, or `None` when it is
/// neither or its source is not an EUI-64 link-local address.
fn answer_link(b: &[u8], from: &SocketAddrV6, out: &mut Vec<u8>) -> Option<()> {
    let mac = qdhcp_loadgen::link6::mac_of_link_local(*from.ip())?;
    // the benchmark's reservations on the link are in 2001:db8::/64
    client_answer(b, mac, 0, out)
}

/// ADVERTISE for a SOLICIT, REPLY for a REQUEST: the reservation of `mac` in
/// 2001:db8:`subnet`::/64 (index + 16, as bench/dhcpv6.sh writes its hosts), into `out`.
fn client_answer(inner: &[u8], mac: [u8; 6], subnet: u16, out: &mut Vec<u8>) -> Option<()> {
    let kind = match inner.first()? {
        1 => 2, // SOLICIT → ADVERTISE
        3 => 7, // REQUEST → REPLY
        _ => return None,
    };
    let i = u32::from_be_bytes([0, mac[3], mac[4], mac[5]]) + 16;
    let addr = Ipv6Addr::new(0x2001, 0xdb8, subnet, 0, 0, 0, (i >> 16) as u16, i as u16);
    out.clear();
    out.push(kind);
    out.extend_from_slice(inner.get(1..4)?);
    opt(out, 2, &[0, 3, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 1]);
    let mut ia = Vec::with_capacity(40);
    ia.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x54, 0x60, 0, 1, 0x27, 0xa0]);
    let mut ad = addr.octets().to_vec();
    ad.extend_from_slice(&[0, 1, 0x51, 0x80, 0, 1, 0x51, 0x80]);
    opt(&mut ia, 5, &ad);
    opt(out, 3, &ia);
    Some(())
}

fn opt(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Group commit: waits for batches, writes a record for each REQUEST of every batch waiting,
/// fdatasyncs; until the process is killed. As qdhcp's journal does, it overwrites zeros written
/// and synced ahead (64 MiB, then it wraps), so each fdatasync carries data and no size change.
/// With `gap`, a commit starts no sooner than `gap` after the one before began.
fn sync_forever(
    path: &str,
    batches: std::sync::mpsc::Receiver<usize>,
    gap: std::time::Duration,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const AHEAD: u64 = 64 << 20;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..AHEAD / zeros.len() as u64 {
        f.write_all_at(&zeros, i * zeros.len() as u64)?;
    }
    f.sync_all()?;
    let mut line = [b'x'; 96];
    line[95] = b'\n';
    let mut buf = Vec::with_capacity(64 << 10);
    let mut at = 0u64;
    while let Ok(first) = batches.recv() {
        let began = std::time::Instant::now();
        let records = first + batches.try_iter().sum::<usize>();
        buf.clear();
        for _ in 0..records {
            buf.extend_from_slice(&line);
        }
        if at + buf.len() as u64 > AHEAD {
            at = 0;
        }
        f.write_all_at(&buf, at)?;
        at += buf.len() as u64;
        f.sync_data()?;
        if let Some(rest) = gap.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        std::io::Error::other(
            "usage: dhcpv6_floor IFACE [--sync FILE [--sync-gap US]] [--spin] [--link] [--coalesce US]",
        )
    };
    let spin = args.iter().any(|a| a == "--spin");
    let link = args.iter().any(|a| a == "--link");
    let micros = |flag: &str| match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(|us| Some(std::time::Duration::from_micros(us)))
            .ok_or_else(usage),
        None => Ok(None),
    };
    let coalesce = micros("--coalesce")?;
    let gap = micros("--sync-gap")?.unwrap_or_default();
    let iface = args.get(1).ok_or_else(usage)?.clone();
    let mut commits = None;
    if let Some(i) = args.iter().position(|a| a == "--sync") {
        let path = args.get(i + 1).ok_or_else(usage)?.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        commits = Some(tx);
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || {
                if let Err(e) = sync_forever(&path, rx, gap) {
                    eprintln!("dhcpv6_floor: {path}: {e}");
                    std::process::exit(1);
                }
            })?;
    }
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_only_v6(true)?;
    sock.set_recv_buffer_size(4 << 20)?;
    sock.bind_device(Some(iface.as_bytes()))?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 547, 0, 0).into())?;
    if link {
        let name = std::ffi::CString::new(iface.clone()).map_err(|_| usage())?;
        // SAFETY: a valid NUL-terminated name; if_nametoindex only reads it.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        sock.join_multicast_v6(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2), index)?;
    }
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 1500]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut froms = [SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0); BATCH];
    let mut outbox: Outbox<SocketAddrV6> = Outbox::new(true);
    let mut reply = Vec::with_capacity(256);
    loop {
        let k = recv_batch_from(fd, &mut bufs, &mut lens, &mut froms)?;
        if k == 0 {
            if !spin {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, count 1; poll writes only its revents.
                unsafe { libc::poll(&mut p, 1, -1) };
                if let Some(d) = coalesce {
                    std::thread::sleep(d);
                }
            }
            continue;
        }
        let mut requests = 0;
        for i in 0..k {
            let answered = if link {
                answer_link(&bufs[i][..lens[i]], &froms[i], &mut reply)
            } else {
                answer(&bufs[i][..lens[i]], &mut reply)
            };
            if answered.is_some() {
                let kind_at = if link { 0 } else { REPLY_KIND_AT };
                requests += usize::from(reply.get(kind_at) == Some(&7));
                outbox.push(froms[i], &reply);
            }
        }
        outbox.flush(fd, |_, _| {});
        if let (Some(tx), true) = (&commits, requests > 0) {
            let _ = tx.send(requests);
        }
    }
}
