//! The client to Nova's metadata API in proxy mode: one connection pool for every network,
//! on one small async runtime (`metadata-up`), never on the event loops. A request that Nova
//! does not answer within the timeout gives the VM 504; one that cannot reach Nova, 502.

use std::time::{Duration, Instant};

use crate::answer::Forward;
use crate::request::Method;
use crate::response::Response;

/// Where Nova is and how to talk to it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http[s]://host:port` of Nova's metadata API.
    pub url: String,
    /// A PEM file of CA certificates to check Nova's certificate with (else the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// Skip checking Nova's certificate (`nova_metadata_insecure`).
    pub insecure: bool,
    /// How long Nova may take to answer, connection included.
    pub timeout: Duration,
}

/// The pooled client and the runtime it runs on.
pub struct Upstream {
    base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Upstream {
    /// A client for `cfg` (the CA file read now: a bad one is a start-up error).
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Upstream> {
        let base = cfg.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!(
                "Nova metadata URL {base:?}: expected http://HOST:PORT or https://HOST:PORT"
            );
        }
        reqwest::Url::parse(&base)
            .map_err(|e| anyhow::anyhow!("Nova metadata URL {base:?}: {e}"))?;
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("qdhcp-metadata/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("Nova CA file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("Nova CA file {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if cfg.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b.build()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("metadata-up")
            .enable_all()
            .build()?;
        Ok(Upstream { base, client, rt })
    }

    /// Sends `fwd` to Nova; `done` gets Nova's answer (or 502/504) and the time it took, on
    /// the client's thread.
    pub fn send(&self, fwd: Forward, done: impl FnOnce(Response, Duration) + Send + 'static) {
        let url = format!("{}{}", self.base, fwd.path_and_query);
        let method = match fwd.method {
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            _ => reqwest::Method::GET,
        };
        let mut req = self.client.request(method, url);
        for (name, value) in &fwd.headers {
            req = req.header(*name, value);
        }
        if !fwd.body.is_empty() {
            req = req.body(fwd.body);
        }
        self.rt.spawn(async move {
            let t0 = Instant::now();
            let answer = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let content_type = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("text/plain; charset=UTF-8")
                        .to_string();
                    match resp.bytes().await {
                        Ok(body) => Response {
                            status,
                            content_type,
                            body: body.to_vec(),
                            allow: None,
                        },
                        Err(e) => failed(&e),
                    }
                }
                Err(e) => failed(&e),
            };
            done(answer, t0.elapsed());
        });
    }
}

fn failed(e: &reqwest::Error) -> Response {
    if e.is_timeout() {
        tracing::warn!("metadata: Nova did not answer in time: {e}");
        Response::error(504)
    } else {
        tracing::warn!("metadata: Nova unreachable: {e}");
        Response::error(502)
    }
}
