//! Netlink and sockets in a network namespace from the thread that plumbs (see
//! docs/ARCHITECTURE.md, "Segments and tenant networks"): a runtime and a connection kept per
//! thread, and visits to other namespaces (`setns` there and back) for the moment a socket is
//! opened there.

use qdhcp_netns::Visit;
use rtnetlink::{new_connection, Handle};

use crate::{nl, ns_err, open_netns, PlumbError};

/// Runs `f` with a netlink handle inside namespace `ns` (or the current one); the calling
/// thread's namespace is the same afterwards.
///
/// On a thread outside any async runtime (the API writer, start-up), this runs on the calling
/// thread, on a runtime and a connection to the current namespace it keeps for the next call;
/// a connection into another namespace is opened with the thread there for that moment only.
/// A network's plumbing makes several such calls, and a thread, a runtime and a socket each
/// time were a tenth of a create's time. Inside a runtime (a nested call), on a thread of its
/// own as before.
pub fn in_netns<T, F, Fut>(ns: Option<&str>, f: F) -> Result<T, PlumbError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, PlumbError>>,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return in_netns_on_thread(ns, f);
    }
    let file = ns.map(open_netns).transpose()?;
    let name = ns.unwrap_or("");
    LOCAL.with(|cell| {
        // `f` runs inside the runtime, so a call from it takes the branch above; this is
        // for anything else that would find the thread's runtime in use
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return in_netns_on_thread(ns, f);
        };
        let home = current_netns_inode().map_err(|e| ns_err("of this thread", e))?;
        if cell
            .as_ref()
            .is_none_or(|l| l.home != home || l.conn.is_finished())
        {
            *cell = Some(Local::new(home)?);
        }
        let local = cell.as_ref().expect("set above");
        match file {
            None => {
                let handle = local.handle.clone();
                local.rt.block_on(async move { f(handle).await })
            }
            Some(file) => local.rt.block_on(async move {
                let (conn, handle, _) = {
                    let _there = Visit::enter(&file).map_err(|e| ns_err(name, e))?;
                    new_connection().map_err(nl("connect"))?
                };
                // the connection (its socket holds the namespace) ends with `f`
                let work = std::pin::pin!(f(handle));
                match futures_util::future::select(work, conn).await {
                    futures_util::future::Either::Left((r, _)) => r,
                    futures_util::future::Either::Right(_) => {
                        Err(PlumbError::Netlink("netlink connection ended".into()))
                    }
                }
            }),
        }
    })
}

/// Runs `f` on the calling thread while the thread is in namespace `name`: the sockets `f`
/// opens (and the threads it starts) belong to that namespace; the thread is back in its own
/// when this returns.
pub fn within_netns<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, PlumbError> {
    let file = open_netns(name)?;
    let _there = Visit::enter(&file).map_err(|e| ns_err(name, e))?;
    Ok(f())
}

thread_local! {
    /// This thread's netlink runtime and connection (see [`in_netns`]), made on first use.
    static LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
}

/// A thread's runtime for netlink, with a connection to the namespace it was made in.
struct Local {
    rt: tokio::runtime::Runtime,
    /// The inode of the namespace `handle` talks to.
    home: u64,
    handle: Handle,
    /// The connection's task: made anew should it have ended.
    conn: tokio::task::JoinHandle<()>,
}

impl Local {
    fn new(home: u64) -> Result<Self, PlumbError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(nl("runtime"))?;
        let (handle, conn) = rt.block_on(async {
            let (conn, handle, _) = new_connection().map_err(nl("connect"))?;
            Ok::<_, PlumbError>((handle, tokio::spawn(conn)))
        })?;
        Ok(Local {
            rt,
            home,
            handle,
            conn,
        })
    }
}

fn current_netns_inode() -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// [`in_netns`] on a fresh thread (with a runtime and connection of its own).
fn in_netns_on_thread<T, F, Fut>(ns: Option<&str>, f: F) -> Result<T, PlumbError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, PlumbError>>,
{
    let file = ns.map(open_netns).transpose()?;
    let name = ns.unwrap_or("").to_string();
    std::thread::spawn(move || {
        if let Some(f) = file {
            qdhcp_netns::enter_for_good(&f).map_err(|e| ns_err(&name, format!("setns: {e}")))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(nl("runtime"))?;
        rt.block_on(async move {
            let (conn, handle, _) = new_connection().map_err(nl("connect"))?;
            let task = tokio::spawn(conn);
            let r = f(handle).await;
            task.abort();
            r
        })
    })
    .join()
    .map_err(|_| PlumbError::Netlink("plumbing thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link_index;

    #[test]
    fn a_call_made_while_building_a_call_is_served_too() {
        let lo = |h: Handle| async move { Ok(link_index(&h, "lo").await?.is_some()) };
        let both = in_netns(None, move |_h| {
            let inner = in_netns(None, lo);
            async move { inner }
        })
        .unwrap();
        assert!(both);
        // and the thread's own runtime still serves the next call
        assert!(in_netns(None, lo).unwrap());
    }
}
