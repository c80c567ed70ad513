//! Helpers for `qdhcp serve` tests: a test host namespace holding the mapped bridge, the
//! server started inside it, HTTP from a thread that enters the namespace, the real
//! OpenStack CLI run inside it, and VM namespaces plugged into the bridge.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{qdhcp_bin, wait_for_log, Proc, Vm};

/// A host namespace with `qtbr` (physnet1) where `qdhcp serve` runs.
pub struct Host {
    pub ns: String,
    /// Prefix of the namespaces the server creates (removed on drop).
    pub prefix: String,
    pub dir: tempfile::TempDir,
    vms: Vec<String>,
    pub lease: u32,
    /// `--bridge-mappings` given to the server.
    pub mappings: String,
}

impl Host {
    pub fn new(tag: &str, lease: u32) -> Host {
        let id = format!("{:04x}", std::process::id() & 0xffff);
        let ns = format!("qth{tag}{id}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        Host {
            prefix: format!("qt{tag}{id}"),
            ns,
            dir: tempfile::tempdir().unwrap(),
            vms: vec![],
            lease,
            mappings: "physnet1:qtbr".into(),
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("qdhcp.log")
    }

    /// Starts `qdhcp serve` in the host namespace and waits for the API.
    pub fn start(&self) -> Proc {
        self.start_with(&[])
    }

    /// `start` with more `qdhcp serve` flags.
    pub fn start_with(&self, extra: &[&str]) -> Proc {
        let mut cmd = Command::new(qdhcp_bin());
        cmd.args(["serve", "--netns", &self.ns]).args(extra);
        self.start_cmd(cmd)
    }

    /// Starts `qdhcp serve` under `ip netns exec HOST` (a mount namespace of its own, as
    /// operators and containers start it) instead of `--netns`.
    pub fn start_under_ip_netns_exec(&self) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, qdhcp_bin(), "serve"]);
        self.start_cmd(cmd)
    }

    fn start_cmd(&self, mut cmd: Command) -> Proc {
        cmd.args([
            "--listen",
            "127.0.0.1:9696",
            "--bridge-mappings",
            &self.mappings,
        ])
        .arg("--state-dir")
        .arg(self.dir.path().join("state"))
        .args([
            "--namespace-prefix",
            &self.prefix,
            "--namespace-id-chars",
            &(15 - self.prefix.len()).to_string(),
        ])
        .args(["--lease-duration", &self.lease.to_string()])
        .arg("--log-file")
        .arg(self.log())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let before = std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .matches("started, qdhcp")
            .count();
        let p = Proc {
            child: cmd.spawn().unwrap(),
        };
        let start = Instant::now();
        loop {
            let n = std::fs::read_to_string(self.log())
                .unwrap_or_default()
                .matches("started, qdhcp")
                .count();
            if n > before {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "qdhcp serve did not start: {:?}",
                std::fs::read_to_string(self.log())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// An HTTP request to the API inside the host namespace.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.ns)).unwrap();
        let method = method.to_string();
        let path = path.to_string();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            http_call("127.0.0.1:9696", &method, &path, &body)
        })
        .join()
        .unwrap()
    }

    /// A GET whose body is text (metrics).
    pub fn http_text(&self, path: &str) -> (u16, String) {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.ns)).unwrap();
        let path = path.to_string();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut s = TcpStream::connect("127.0.0.1:9696").unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).unwrap();
            let text = String::from_utf8_lossy(&resp).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (status, text)
        })
        .join()
        .unwrap()
    }

    /// Runs the real OpenStack CLI in the host namespace, as the issue prescribes.
    pub fn openstack(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(openstack_bin())
            .args([
                "--os-auth-type",
                "none",
                "--os-endpoint",
                "http://127.0.0.1:9696",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The CLI with `-f json`, parsed; panics with the output when it fails.
    pub fn openstack_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let (ok, text) = self.openstack(&a);
        assert!(ok, "openstack {args:?} failed:\n{text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("openstack {args:?}: not JSON ({e}):\n{text}"))
    }

    /// A VM namespace on the bridge with `mac`.
    pub fn vm(&mut self, mac: &str) -> Vm {
        self.vm_on("qtbr", mac)
    }

    /// A VM namespace on `bridge` (one of the mapped bridges) with `mac`.
    pub fn vm_on(&mut self, bridge: &str, mac: &str) -> Vm {
        let k = self.vms.len();
        let ns = format!("{}v{k}", self.ns.replacen("qth", "qtv", 1));
        let iface = format!("qte{}{k}", &self.prefix[2..]);
        let peer = format!("qtp{}{k}", &self.prefix[2..]);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        // recorded before it exists: whatever fails below, the drop removes it
        self.vms.push(ns.clone());
        for args in [
            vec!["netns", "add", &ns],
            vec!["-n", &ns, "link", "set", "lo", "up"],
            vec![
                "-n", &self.ns, "link", "add", &peer, "type", "veth", "peer", "name", &iface,
                "netns", &ns,
            ],
            vec!["-n", &self.ns, "link", "set", &peer, "master", bridge, "up"],
            vec!["-n", &ns, "link", "set", &iface, "address", mac, "up"],
        ] {
            let o = Command::new("ip").args(&args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Vm {
            ns,
            iface,
            mac: mac.into(),
        }
    }

    /// A flat network on physnet1, created through the API; its id.
    pub fn flat_network(&self, name: &str) -> String {
        let (s, n) = self.http(
            "POST",
            "/v2.0/networks",
            Some(&serde_json::json!({"network": {"name": name, "provider:network_type": "flat", "provider:physical_network": "physnet1"}})),
        );
        assert_eq!(s, 201, "{n}");
        n["network"]["id"].as_str().unwrap().to_string()
    }

    /// An IPv6 subnet of `net` whose address and RA modes are both `mode`, with `extra` fields;
    /// the subnet as the API answered it.
    pub fn subnet6(&self, net: &str, cidr: &str, mode: &str, extra: Value) -> Value {
        let mut body = serde_json::json!({"network_id": net, "cidr": cidr, "ip_version": 6,
            "ipv6_address_mode": mode, "ipv6_ra_mode": mode});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let (s, sub) = self.http(
            "POST",
            "/v2.0/subnets",
            Some(&serde_json::json!({ "subnet": body })),
        );
        assert_eq!(s, 201, "{sub}");
        sub["subnet"].clone()
    }

    pub fn wait_log(&self, needle: &str) -> String {
        wait_for_log(&self.log(), needle, Duration::from_secs(10))
    }
}

impl Host {
    /// Deletes the DHCP namespaces the server made (what a host's death takes with it).
    pub fn remove_dhcp_namespaces(&self) {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&self.prefix) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }

    /// Plugs this host's `qtbr` and `other`'s into one layer-2 segment (a veth "wire"), as
    /// two hosts on one physical network; both bridges are made here if missing.
    pub fn wire_to(&self, other: &Host) {
        let (here, there) = (
            format!("qtw{}", &self.prefix[2..]),
            format!("qtx{}", &self.prefix[2..]),
        );
        for h in [self, other] {
            let _ = Command::new("ip")
                .args(["-n", &h.ns, "link", "add", "qtbr", "type", "bridge"])
                .output();
        }
        for args in [
            vec![
                "-n", &self.ns, "link", "add", &here, "type", "veth", "peer", "name", &there,
                "netns", &other.ns,
            ],
            vec!["-n", &self.ns, "link", "set", &here, "master", "qtbr", "up"],
            vec![
                "-n", &other.ns, "link", "set", &there, "master", "qtbr", "up",
            ],
            vec!["-n", &self.ns, "link", "set", "qtbr", "up"],
            vec!["-n", &other.ns, "link", "set", "qtbr", "up"],
        ] {
            let o = Command::new("ip").args(&args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // the log goes with the temporary directory: show its end with the failure
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of the qdhcp serve log ({}) ---",
                self.log().display()
            );
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
        self.remove_dhcp_namespaces();
        for ns in self.vms.iter().chain([&self.ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Where the OpenStack CLI is: `$QDHCP_OPENSTACK`, else the venv `scripts/test-all` makes.
pub fn openstack_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QDHCP_OPENSTACK") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-osc/bin/openstack")
}

/// Fails (CI) or skips (elsewhere) when the OpenStack CLI is not installed.
pub fn openstack_available(test: &str) -> bool {
    if openstack_bin().exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: the OpenStack CLI is missing at {:?}; scripts/test-all installs it",
            openstack_bin()
        );
    }
    eprintln!(
        "SKIPPED {test}: no OpenStack CLI at {:?} (scripts/test-all installs it)",
        openstack_bin()
    );
    false
}

/// A minimal HTTP/1.1 exchange (Connection: close); returns status and JSON body.
pub fn http_call(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, mut body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(b: &str) -> String {
    let mut out = String::new();
    let mut rest = b;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
