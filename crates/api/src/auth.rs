//! Who is calling. Loopback with no tokens file is Neutron's `auth_strategy = noauth`; with a
//! tokens file every request needs `X-Auth-Token` naming a project and a role.

use std::collections::HashMap;
use std::path::Path;

use qdhcp_registry::Caller;

/// The project noauth callers act as (admin, like Neutron's noauth context).
pub const NOAUTH_PROJECT: &str = "admin";

/// Token → caller, from a file of `TOKEN PROJECT_ID ROLE` lines (`ROLE` is `admin` or `member`).
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, Caller>);

/// A tokens-file problem, with the line.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Unreadable file.
    #[error("cannot read tokens file {0}: {1}")]
    Io(String, std::io::Error),
    /// A bad line.
    #[error("tokens file {file} line {line}: expected `TOKEN PROJECT_ID admin|member`")]
    Line {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
    },
}

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokensError::Io(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses tokens-file text.
    pub fn parse(text: &str, file: &str) -> Result<Tokens, TokensError> {
        let mut m = HashMap::new();
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            let is_admin = match f.get(2) {
                Some(&"admin") => true,
                Some(&"member") => false,
                _ => {
                    return Err(TokensError::Line {
                        file: file.into(),
                        line: i + 1,
                    })
                }
            };
            if f.len() != 3 {
                return Err(TokensError::Line {
                    file: file.into(),
                    line: i + 1,
                });
            }
            m.insert(
                f[0].to_string(),
                Caller {
                    project_id: f[1].to_string(),
                    is_admin,
                },
            );
        }
        Ok(Tokens(m))
    }

    /// The caller a token stands for.
    pub fn caller(&self, token: &str) -> Option<&Caller> {
        self.0.get(token)
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Everyone is admin (loopback only).
    NoAuth,
    /// Tokens required.
    Tokens(Tokens),
}
