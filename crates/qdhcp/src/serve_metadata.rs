//! The metadata settings of `qdhcp serve` (Neutron's `enable_isolated_metadata`,
//! `nova_metadata_*` and `metadata_proxy_shared_secret`), as flags and TOML keys.

use std::path::PathBuf;
use std::time::Duration;

use qdhcp_metadata::answer::Mode;
use qdhcp_metadata::{Settings, UpstreamConfig};
use serde::Deserialize;

/// Metadata flags of `qdhcp serve`; each is also a key of the TOML file.
#[derive(clap::Args, Debug, Default)]
pub struct MetadataArgs {
    /// Serve 169.254.169.254 in every DHCP namespace and announce its route (Neutron's
    /// enable_isolated_metadata) [default: on].
    #[arg(long, overrides_with = "no_isolated_metadata")]
    pub isolated_metadata: bool,
    /// No metadata service and no metadata route.
    #[arg(long)]
    pub no_isolated_metadata: bool,
    /// Nova's metadata API, `http[s]://HOST:PORT`: requests are forwarded there, signed
    /// (proxy mode); without it answers come from the registry (built-in mode).
    #[arg(long)]
    pub nova_metadata_url: Option<String>,
    /// The secret shared with Nova (Neutron's metadata_proxy_shared_secret); better kept in
    /// the TOML file than on a command line.
    #[arg(long)]
    pub metadata_proxy_shared_secret: Option<String>,
    /// PEM file of CA certificates Nova's certificate is checked with [default: the
    /// system's].
    #[arg(long)]
    pub nova_metadata_ca_cert: Option<PathBuf>,
    /// Do not check Nova's certificate (Neutron's nova_metadata_insecure).
    #[arg(long)]
    pub nova_metadata_insecure: bool,
    /// Requests one VM address may make per 10 seconds; more get 429 [default: 100; 0 = no
    /// limit].
    #[arg(long)]
    pub metadata_rate_limit: Option<u32>,
    /// Seconds Nova may take to answer before the VM gets 504 [default: 10].
    #[arg(long)]
    pub nova_metadata_timeout: Option<u64>,
    /// Seconds a VM may take to send a request, or keep a connection idle [default: 10].
    #[arg(long)]
    pub metadata_client_timeout: Option<u64>,
}

/// The same keys in the TOML file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct MetadataFile {
    pub(crate) isolated_metadata: Option<bool>,
    pub(crate) nova_metadata_url: Option<String>,
    pub(crate) metadata_proxy_shared_secret: Option<String>,
    pub(crate) nova_metadata_ca_cert: Option<PathBuf>,
    pub(crate) nova_metadata_insecure: Option<bool>,
    pub(crate) metadata_rate_limit: Option<u32>,
    pub(crate) nova_metadata_timeout: Option<u64>,
    pub(crate) metadata_client_timeout: Option<u64>,
}

/// The metadata service's settings (`None`: off), with the DHCP domain for host names.
pub fn resolve(
    a: &MetadataArgs,
    f: &MetadataFile,
    domain: Option<String>,
) -> anyhow::Result<Option<Settings>> {
    let on = if a.no_isolated_metadata {
        false
    } else {
        a.isolated_metadata || f.isolated_metadata.unwrap_or(true)
    };
    if !on {
        return Ok(None);
    }
    let url = a.nova_metadata_url.clone().or(f.nova_metadata_url.clone());
    let secret = a
        .metadata_proxy_shared_secret
        .clone()
        .or(f.metadata_proxy_shared_secret.clone());
    let secs = |flag: Option<u64>, file: Option<u64>, name: &str| -> anyhow::Result<Duration> {
        match flag.or(file) {
            Some(0) => anyhow::bail!("{name} must be at least 1 second"),
            Some(n) => Ok(Duration::from_secs(n)),
            None => Ok(Duration::from_secs(10)),
        }
    };
    let timeout = secs(
        a.nova_metadata_timeout,
        f.nova_metadata_timeout,
        "nova_metadata_timeout",
    )?;
    let (mode, upstream) = match url {
        Some(url) => {
            let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
                anyhow::anyhow!("nova_metadata_url needs metadata_proxy_shared_secret: Nova refuses unsigned requests")
            })?;
            (
                Mode::Proxy {
                    secret: secret.into_bytes().into(),
                },
                Some(UpstreamConfig {
                    url,
                    ca_file: a
                        .nova_metadata_ca_cert
                        .clone()
                        .or(f.nova_metadata_ca_cert.clone()),
                    insecure: a.nova_metadata_insecure || f.nova_metadata_insecure.unwrap_or(false),
                    timeout,
                }),
            )
        }
        None => (Mode::Builtin, None),
    };
    Ok(Some(Settings {
        mode,
        upstream,
        domain,
        rate_limit: a
            .metadata_rate_limit
            .or(f.metadata_rate_limit)
            .unwrap_or(100),
        rate_window: Duration::from_secs(10),
        client_timeout: secs(
            a.metadata_client_timeout,
            f.metadata_client_timeout,
            "metadata_client_timeout",
        )?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_by_default_proxy_with_a_url_and_off_on_request() {
        let s = resolve(&MetadataArgs::default(), &MetadataFile::default(), None)
            .unwrap()
            .expect("on by default");
        assert_eq!(s.mode.label(), "builtin");
        assert_eq!(s.rate_limit, 100);
        let file: MetadataFile = toml::from_str(
            "nova_metadata_url = \"http://127.0.0.1:8775\"\nmetadata_proxy_shared_secret = \"s\"\n",
        )
        .unwrap();
        let s = resolve(&MetadataArgs::default(), &file, None)
            .unwrap()
            .unwrap();
        assert_eq!(s.mode.label(), "proxy");
        assert!(
            !format!("{s:?}").contains("\"s\""),
            "the secret is never shown"
        );
        let no_secret = MetadataArgs {
            nova_metadata_url: Some("http://127.0.0.1:8775".into()),
            ..Default::default()
        };
        assert!(resolve(&no_secret, &MetadataFile::default(), None).is_err());
        let off = MetadataArgs {
            no_isolated_metadata: true,
            ..Default::default()
        };
        assert!(resolve(&off, &file, None).unwrap().is_none());
        let off_in_file: MetadataFile = toml::from_str("isolated_metadata = false").unwrap();
        assert!(resolve(&MetadataArgs::default(), &off_in_file, None)
            .unwrap()
            .is_none());
    }
}
