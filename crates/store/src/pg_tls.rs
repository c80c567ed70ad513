//! Connections to PostgreSQL with TLS as libpq's `sslmode` and `sslrootcert` ask for it (see
//! docs/ARCHITECTURE.md, "Storage"), by rustls:
//! - `disable`: plain;
//! - `prefer` (the default): TLS when the server offers it, the certificate not checked (as
//!   libpq does);
//! - `require`: TLS or no connection; the certificate checked against `sslrootcert` when one is
//!   given (as libpq does when a root certificate exists), else not;
//! - `verify-ca`: TLS, the server's chain checked against `sslrootcert`;
//! - `verify-full`: that, and the server's name against the host connected to.
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt`, as in libpq. Unix-socket connections
//! never use TLS (PostgreSQL offers none there).

use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the URL asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A URL split into what `postgres` parses and the TLS settings it does not know.
#[derive(Debug)]
struct Target {
    url: String,
    mode: Mode,
    root_cert: Option<String>,
}

fn split(url: &str) -> Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut keep = Vec::new();
    let mut mode = Mode::Prefer;
    let mut root_cert = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                mode = match v {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => return Err(format!("sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full")),
                }
            }
            "sslrootcert" => root_cert = Some(percent_decode(v)),
            _ => keep.push(kv),
        }
    }
    if mode == Mode::Require && root_cert.is_some() {
        mode = Mode::VerifyCa;
    }
    let url = if keep.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", keep.join("&"))
    };
    Ok(Target {
        url,
        mode,
        root_cert,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Accepts any certificate but still checks the handshake's signatures with it (libpq's
/// `prefer` and `require`: encryption without authentication).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain against the roots but not the name (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn roots(path: Option<&str>) -> Result<RootCertStore, String> {
    let path = match path {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_default()
            .join(".postgresql/root.crt"),
    };
    let pem = std::fs::read(&path).map_err(|e| {
        format!(
            "sslrootcert {}: {e} (verify-ca and verify-full need the server's CA certificate)",
            path.display()
        )
    })?;
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        ));
    }
    Ok(store)
}

fn tls_config(t: &Target) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match t.mode {
        Mode::Disable | Mode::Prefer | Mode::Require => Arc::new(Unverified(provider.clone())),
        Mode::VerifyCa | Mode::VerifyFull => {
            let v = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(t.root_cert.as_deref())?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS: {e}"))?;
            if t.mode == Mode::VerifyCa {
                Arc::new(ChainOnly(v))
            } else {
                v
            }
        }
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Why a connection could not be made: the URL's TLS settings, or the server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL asks for something that cannot be done (an unknown `sslmode`, an unreadable
    /// root certificate).
    #[error("{0}")]
    Settings(String),
    /// The server refused or could not be reached.
    #[error(transparent)]
    Db(#[from] postgres::Error),
}

/// Connects to `url` with the TLS its `sslmode` asks for.
pub fn connect(url: &str) -> Result<Client, ConnectError> {
    let t = split(url).map_err(ConnectError::Settings)?;
    let mut config: Config = t.url.parse()?;
    let hosts = config.get_hosts();
    let unix = |h: &postgres::config::Host| !matches!(h, postgres::config::Host::Tcp(_));
    let unix_only = !hosts.is_empty() && hosts.iter().all(unix);
    let some_unix = hosts.iter().any(unix);
    match t.mode {
        // PostgreSQL offers no TLS on a unix socket and libpq uses none there; with a socket
        // among the hosts, `prefer` is taken as plain text (the connector cannot name one)
        _ if unix_only || (some_unix && t.mode == Mode::Prefer) => {
            config.ssl_mode(SslMode::Disable);
            Ok(config.connect(NoTls)?)
        }
        Mode::Disable => {
            config.ssl_mode(SslMode::Disable);
            Ok(config.connect(NoTls)?)
        }
        mode => {
            config.ssl_mode(if mode == Mode::Prefer {
                SslMode::Prefer
            } else {
                SslMode::Require
            });
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                tls_config(&t).map_err(ConnectError::Settings)?,
            );
            Ok(config.connect(tls)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url_as_libpq_reads_them() {
        let t = split("postgresql://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=q").unwrap();
        assert_eq!(t.url, "postgresql://u:p@h:5432/db?application_name=q");
        assert_eq!(t.mode, Mode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        let t = split("postgresql://h/db").unwrap();
        assert_eq!(
            (t.mode, t.url.as_str()),
            (Mode::Prefer, "postgresql://h/db")
        );
        // libpq: `require` with a root certificate verifies the chain
        let t = split("postgresql://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            (t.mode, t.url.as_str()),
            (Mode::VerifyCa, "postgresql://h/db")
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=disable").unwrap().mode,
            Mode::Disable
        );
        let e = split("postgresql://h/db?sslmode=always").unwrap_err();
        assert!(e.contains("sslmode=always"), "{e}");
        // a root certificate that is not there is said clearly, before any connection
        let e = connect("postgresql://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .expect("no root certificate");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
