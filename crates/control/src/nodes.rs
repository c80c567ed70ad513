//! This node among the others (see docs/ARCHITECTURE.md, "Nodes"): its heartbeat in the
//! database every third of the down time, so Neutron's agent API shows it alive, and after
//! each heartbeat the live nodes handed to the scheduler (`Control::live_nodes`: the first
//! live node moves the networks of nodes that went down).

use std::sync::Arc;
use std::time::Duration;

use qdhcp_store::NodeRow;

use crate::{Control, ControlError};

/// Records `node` in the database (keeping the agent id it had before) and keeps its
/// heartbeat going on a thread of its own; a node is down once its last heartbeat is older
/// than `down_secs`.
pub fn start_heartbeats(
    control: &Arc<Control>,
    node: &str,
    down_secs: u64,
) -> Result<(), ControlError> {
    let id = control
        .nodes()?
        .into_iter()
        .find(|n| n.host == node)
        .map(|n| n.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let started = chrono::Utc::now().naive_utc();
    let mut row = NodeRow {
        host: node.to_string(),
        id: id.clone(),
        started_at: started,
        heartbeat_at: started,
    };
    control.heartbeat(&row)?;
    update_live_nodes(control, node, down_secs);
    let every = (down_secs / 3).max(1);
    tracing::info!("node {node} (DHCP agent {id}) heartbeats every {every} s");
    let c = control.clone();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(every));
            row.heartbeat_at = chrono::Utc::now().naive_utc();
            if let Err(e) = c.heartbeat(&row) {
                tracing::warn!("heartbeat not recorded: {e}");
            }
            update_live_nodes(&c, &row.host, down_secs);
        })?;
    Ok(())
}

/// Tells the scheduler which nodes are alive now (heartbeats younger than the down time).
fn update_live_nodes(control: &Control, node: &str, down_secs: u64) {
    let rows = match control.nodes() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot read the nodes' heartbeats: {e}");
            return;
        }
    };
    let now = chrono::Utc::now().naive_utc();
    let live: Vec<String> = rows
        .into_iter()
        .filter(|n| n.alive(now, down_secs))
        .map(|n| n.host)
        .collect();
    if let Err(e) = control.live_nodes(live, node) {
        tracing::warn!("DHCP scheduler: networks not moved yet: {e}");
    }
}
