//! [`Hop`]: the fault point between nginx and the backend. nginx's upstream is the hop's
//! address, which the hop owns for the stack's whole life: a [`FaultProxy`] listens on it
//! while the backend runs, and while it is down the address is held by a bound, non-listening
//! socket, so nginx's connects are refused and no other socket can take the port.

use crate::error::HarnessError;
use crate::ready::{poll, READY_DEADLINE};
use crate::tcp::{self, TcpState};
use mock_twilio::{FaultProxy, FaultSet, Journal, ProxyConfig};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long [`Hop::down`] lets its connections pass on what the backend sent before it went.
const FORWARD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The nginx→backend fault point.
pub struct Hop {
    addr: SocketAddr,
    faults: Arc<FaultSet>,
    journal: Arc<Journal>,
    state: Mutex<State>,
    /// Connections accepted by earlier proxies (before backend restarts).
    earlier: AtomicU64,
}

struct State {
    proxy: Option<FaultProxy>,
    hold: Option<tokio::net::TcpSocket>,
}

/// Binds (without listening) a socket to `addr`: the port stays ours and connects to it are
/// refused. SO_REUSEADDR is on for the bind (the port may still have connections of the proxy
/// that held it) and off after it, so no one else can bind the port while it is held: a bound,
/// non-listening socket with SO_REUSEADDR on lets any other SO_REUSEADDR socket bind and listen
/// there (Docker's port publisher does, choosing ports from the same ephemeral range).
/// [`Hop::up`] turns it on again just before the hop's own listener binds.
fn hold_port(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.set_reuseaddr(false)?;
    Ok(socket)
}

impl Hop {
    /// Takes an OS-chosen port on `ip` and holds it (down until [`Hop::up`]); its rules and
    /// journal are shared with the stack's other hops (one per backend instance).
    pub fn reserve(
        ip: IpAddr,
        faults: Arc<FaultSet>,
        journal: Arc<Journal>,
    ) -> Result<Hop, HarnessError> {
        let hold = hold_port(SocketAddr::new(ip, 0))
            .map_err(HarnessError::io("reserve the hop fault point's address"))?;
        let addr = hold
            .local_addr()
            .map_err(HarnessError::io("hop fault point address"))?;
        Ok(Hop {
            addr,
            faults,
            journal,
            state: Mutex::new(State {
                proxy: None,
                hold: Some(hold),
            }),
            earlier: AtomicU64::new(0),
        })
    }

    /// Its address: nginx's upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its fault rules.
    pub fn faults(&self) -> &Arc<FaultSet> {
        &self.faults
    }

    /// The requests that crossed it.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Connections nginx has opened through it since it was reserved.
    pub fn connections(&self) -> u64 {
        let state = self.state.lock().unwrap();
        self.earlier.load(Ordering::SeqCst)
            + state
                .proxy
                .as_ref()
                .map(FaultProxy::connections)
                .unwrap_or(0)
    }

    /// Starts forwarding to `backend` on its address.
    pub async fn up(&self, backend: SocketAddr) -> Result<(), HarnessError> {
        // The held socket lets this listener (SO_REUSEADDR) bind beside it, and no one else.
        let share = |on: bool| {
            if let Some(hold) = self.state.lock().unwrap().hold.as_ref() {
                let _ = hold.set_reuseaddr(on);
            }
        };
        share(true);
        let proxy = FaultProxy::start_with(
            self.addr,
            ProxyConfig::new(backend),
            self.faults.clone(),
            self.journal.clone(),
        )
        .await
        .inspect_err(|_| share(false))
        .map_err(HarnessError::io(format!(
            "bind the hop fault point on {}",
            self.addr
        )))?;
        let mut state = self.state.lock().unwrap();
        state.proxy = Some(proxy);
        state.hold = None;
        Ok(())
    }

    /// Refuses new connections as a backend that stopped listening does (nginx logs
    /// `connect() failed (111: Connection refused)`), and holds the address; the connections
    /// it has carry on until [`Hop::down`].
    pub async fn refuse(&self) {
        let proxy = self.state.lock().unwrap().proxy.take();
        if let Some(proxy) = proxy {
            proxy.stop_accepting().await;
            let mut state = self.state.lock().unwrap();
            state.hold = hold_port(self.addr).ok();
            state.proxy = Some(proxy);
        }
    }

    /// Stops forwarding: passes on what the backend answered before it went, closes every
    /// connection, holds the address (connects are refused),
    /// and returns once nginx has let go of every connection it had to the hop, so its next
    /// request meets a refused connect, not a race with a closing one.
    pub async fn down(&self) {
        let proxy = self.state.lock().unwrap().proxy.take();
        if let Some(proxy) = proxy {
            self.earlier
                .fetch_add(proxy.connections(), Ordering::SeqCst);
            // The backend is gone: what it answered before it went is still passed on (a
            // real network would deliver it), then every connection closes.
            proxy.finish(FORWARD_DEADLINE).await;
            let mut state = self.state.lock().unwrap();
            if state.hold.is_none() {
                state.hold = hold_port(self.addr).ok();
            }
        }
        poll(READY_DEADLINE, || async {
            (self.open_connections() == 0).then_some(())
        })
        .await;
    }

    /// Connections to the hop that nginx has not let go of yet: its client side still open
    /// (visible when nginx runs here), or the hop's own side not yet closed by nginx (visible
    /// also when nginx runs in a container).
    fn open_connections(&self) -> usize {
        tcp::sockets()
            .iter()
            .filter(|s| {
                (s.remote == self.addr
                    && matches!(s.state, TcpState::Established | TcpState::CloseWait))
                    || (s.local == self.addr && s.state != TcpState::Other)
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_is_ours_alone_and_the_hop_binds_it() {
        let hop = Hop::reserve(
            IpAddr::from([127, 0, 0, 1]),
            Arc::new(FaultSet::default()),
            Arc::new(Journal::default()),
        )
        .unwrap();
        // std's listener sets SO_REUSEADDR, as Docker's port publisher does.
        let other = std::net::TcpListener::bind(hop.addr());
        assert!(other.is_err(), "another listener took the held port");
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        hop.up(backend.local_addr().unwrap()).await.unwrap();
        hop.down().await;
        assert!(std::net::TcpListener::bind(hop.addr()).is_err());
    }
}
