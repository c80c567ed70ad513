//! `qdhcp leases`: "did this VM ask for an address, what did it get, until when", as a table
//! or JSON, from a running `qdhcp serve` (`GET /v2.0/leases`, the token from the environment
//! as the OpenStack CLI takes it) or from the leases file a `qdhcp dnsmasq` keeps.

use std::path::PathBuf;

use serde_json::{json, Value};

/// `qdhcp leases` flags.
#[derive(clap::Args, Debug)]
pub struct LeasesArgs {
    /// The API of a running `qdhcp serve`; the token is taken from OS_TOKEN or OS_AUTH_TOKEN
    /// [default: http://127.0.0.1:9696].
    #[arg(long)]
    pub url: Option<String>,
    /// Read the leases file of a `qdhcp dnsmasq` (its --dhcp-leasefile) instead.
    #[arg(long, conflicts_with = "url")]
    pub leasefile: Option<PathBuf>,
    /// Output: an aligned table or the API's JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only this network's leases.
    #[arg(long)]
    pub network_id: Option<String>,
    /// Only this subnet's leases.
    #[arg(long)]
    pub subnet_id: Option<String>,
    /// Only this client's leases.
    #[arg(long)]
    pub mac_address: Option<String>,
    /// Only this address's lease.
    #[arg(long)]
    pub ip_address: Option<String>,
    /// Only leases in this state (offered, bound, expired, released, declined).
    #[arg(long)]
    pub state: Option<String>,
}

/// How the leases are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// `{"leases": [...]}`, as the API answers.
    Json,
}

impl LeasesArgs {
    fn filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("network_id", &self.network_id),
            ("subnet_id", &self.subnet_id),
            ("mac_address", &self.mac_address),
            ("ip_address", &self.ip_address),
            ("state", &self.state),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Runs `qdhcp leases`; the exit code.
pub fn run(a: &LeasesArgs) -> i32 {
    let rows = match &a.leasefile {
        Some(p) => from_leasefile(p, &a.filters()),
        None => from_server(a),
    };
    match rows {
        Ok(rows) => {
            print(&rows, a.format);
            0
        }
        Err(e) => {
            eprintln!("qdhcp leases: {e:#}");
            1
        }
    }
}

fn from_server(a: &LeasesArgs) -> anyhow::Result<Vec<Value>> {
    let base = a
        .url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9696".into());
    let mut url = reqwest::Url::parse(&format!("{}/v2.0/leases", base.trim_end_matches('/')))
        .map_err(|e| anyhow::anyhow!("--url {base:?}: {e}"))?;
    for (k, v) in a.filters() {
        url.query_pairs_mut().append_pair(k, v);
    }
    let token = std::env::var("OS_TOKEN")
        .or_else(|_| std::env::var("OS_AUTH_TOKEN"))
        .ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt
        .block_on(async {
            let mut req = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?
                .get(url.clone());
            if let Some(t) = &token {
                req = req.header("X-Auth-Token", t);
            }
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        })
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    anyhow::ensure!(status.is_success(), "{url}: {status}: {body}");
    let v: Value = serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    Ok(v["leases"].as_array().cloned().unwrap_or_default())
}

/// Neutron's timestamp format, `None` for 0 (infinite).
fn stamp(secs: u64) -> Value {
    if secs == 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null)
}

/// The leases of a `qdhcp dnsmasq` leases file; the network is the file's directory when it
/// is Neutron's layout (`…/dhcp/<network-id>/leases`).
fn from_leasefile(path: &std::path::Path, filters: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let network = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.len() == 36 && n.matches('-').count() == 4);
    let now = qdhcp_dataplane::now_secs();
    let state = |expiry: u64| {
        if expiry != 0 && expiry <= now {
            "expired"
        } else {
            "bound"
        }
    };
    let (v4, _) = qdhcp_compat::files::parse_leases(&text);
    let mut rows: Vec<Value> = v4
        .iter()
        .map(|l| {
            json!({
                "ip_address": l.ip.to_string(),
                "mac_address": l.mac.to_string(),
                "network_id": network,
                "ip_version": 4,
                "state": state(l.expiry),
                "expires_at": stamp(l.expiry),
                "hostname": l.hostname,
            })
        })
        .collect();
    for l in qdhcp_compat::leases6::parse_leases6(&text).leases {
        rows.push(json!({
            "ip_address": l.addr.to_string(),
            "mac_address": Value::Null,
            "network_id": network,
            "ip_version": 6,
            "state": state(l.expiry),
            "expires_at": stamp(l.expiry),
            "hostname": l.hostname,
            "duid": l.duid.to_string(),
            "iaid": l.iaid,
        }));
    }
    rows.retain(|r| {
        filters.iter().all(|(k, want)| {
            r.get(*k).is_some_and(|v| {
                v.as_str() == Some(*want) || v.as_u64().is_some_and(|n| want.parse() == Ok(n))
            })
        })
    });
    Ok(rows)
}

fn print(rows: &[Value], format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "leases": rows }));
        return;
    }
    let cols = [
        "ip_address",
        "mac_address",
        "state",
        "expires_at",
        "network_id",
        "port_id",
        "host",
    ];
    let cell = |r: &Value, c: &str| match r.get(c) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    };
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        let s: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_string()).collect());
    for r in rows {
        line(cols.iter().map(|c| cell(r, c)).collect());
    }
}
