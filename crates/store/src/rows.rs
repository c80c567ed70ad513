//! Stored rows and the objects they hold: a kind's stored name, a body to store, a row read
//! back as an object (or a whole table as a registry).

use std::path::Path;

use qdhcp_registry::{Kind, Network, Port, Registry, Stored, Subnet};

use crate::StoreError;

/// One stored row as the object it holds.
pub(crate) fn decode_one(
    kind: &str,
    id: &str,
    body: &str,
    path: &Path,
) -> Result<Option<qdhcp_registry::Stored>, StoreError> {
    use qdhcp_registry::Stored;
    let damaged = |kind: &'static str, e: serde_json::Error| StoreError::Damaged {
        path: path.to_path_buf(),
        kind,
        id: id.to_string(),
        why: e.to_string(),
    };
    Ok(Some(match kind {
        "network" => {
            Stored::Network(serde_json::from_str(body).map_err(|e| damaged("network", e))?)
        }
        "subnet" => Stored::Subnet(serde_json::from_str(body).map_err(|e| damaged("subnet", e))?),
        "port" => Stored::Port(serde_json::from_str(body).map_err(|e| damaged("port", e))?),
        _ => return Ok(None),
    }))
}

/// The stored name of a kind back as the kind.
pub(crate) fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "network" => Some(Kind::Network),
        "subnet" => Some(Kind::Subnet),
        "port" => Some(Kind::Port),
        _ => None,
    }
}

/// The object rows, in the order they were first written, back into a registry.
pub(crate) fn decode(
    rows: impl IntoIterator<Item = (String, String, String)>,
    path: &Path,
) -> Result<Registry, StoreError> {
    let (mut nets, mut subs, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for (kind, id, body) in rows {
        let damaged = |kind: &'static str, e: serde_json::Error| StoreError::Damaged {
            path: path.to_path_buf(),
            kind,
            id: id.clone(),
            why: e.to_string(),
        };
        match kind.as_str() {
            "network" => nets
                .push(serde_json::from_str::<Network>(&body).map_err(|e| damaged("network", e))?),
            "subnet" => {
                subs.push(serde_json::from_str::<Subnet>(&body).map_err(|e| damaged("subnet", e))?)
            }
            "port" => {
                ports.push(serde_json::from_str::<Port>(&body).map_err(|e| damaged("port", e))?)
            }
            _ => {}
        }
    }
    Ok(Registry::from_parts(nets, subs, ports))
}

/// What to store for one changed object: `Put(kind, id, body)` for one that exists, `Gone`
/// for one that was deleted.
pub(crate) enum Row<'a> {
    /// Written as this body.
    Put(Kind, &'a str, String),
    /// Deleted.
    Gone(Kind, &'a str),
}

/// The row for one changed object; an object the encoder refuses is an error that stores
/// nothing of its write.
pub(crate) fn row_of(o: &Stored) -> Result<Row<'_>, StoreError> {
    let (k, id, body) = match o {
        Stored::Network(n) => (Kind::Network, n.id.as_str(), serde_json::to_string(n)),
        Stored::Subnet(s) => (Kind::Subnet, s.id.as_str(), serde_json::to_string(s)),
        Stored::Port(p) => (Kind::Port, p.id.as_str(), serde_json::to_string(p)),
        Stored::Gone(id) => return Ok(Row::Gone(id.kind(), id.as_str())),
    };
    body.map(|b| Row::Put(k, id, b))
        .map_err(|e| StoreError::Unencodable {
            kind: kind_name(k),
            id: id.to_string(),
            why: e.to_string(),
        })
}

pub(crate) fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Network => "network",
        Kind::Subnet => "subnet",
        Kind::Port => "port",
    }
}
