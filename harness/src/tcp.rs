//! The kernel's table of IPv4 TCP sockets (`/proc/net/tcp`), read to know which connections
//! are still open: nginx's to the hop, a browser's to nginx.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// A socket's TCP state, as the kernel numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// `01`.
    Established,
    /// `04`.
    FinWait1,
    /// `05`.
    FinWait2,
    /// `08`.
    CloseWait,
    /// Any other state (listening, TIME_WAIT, ...).
    Other,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// This end.
    pub local: SocketAddr,
    /// The other end.
    pub remote: SocketAddr,
    /// Its state.
    pub state: TcpState,
}

fn addr(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(ip.to_le_bytes()),
        port,
    )))
}

/// Every IPv4 TCP socket of this network namespace (empty where the table cannot be read).
pub fn sockets() -> Vec<TcpSocket> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let state = match *f.get(3)? {
                "01" => TcpState::Established,
                "04" => TcpState::FinWait1,
                "05" => TcpState::FinWait2,
                "08" => TcpState::CloseWait,
                _ => TcpState::Other,
            };
            Some(TcpSocket {
                local: addr(f.get(1)?)?,
                remote: addr(f.get(2)?)?,
                state,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_little_endian_addresses() {
        assert_eq!(
            addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
    }
}
