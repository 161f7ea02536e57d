//! Ports for the servers the kit starts (and for in-process raft tests and
//! the bench's nodes).
//!
//! Binding port 0 and closing it again (the usual trick) hands out a port
//! from the kernel's ephemeral range, where any client socket opened
//! meanwhile (tests/limits.rs opens thousands) may take it before the
//! server binds it. These ports come from below that range instead, handed
//! out once each by a counter (so tests of one process never share one)
//! that starts at a random place (so test processes running side by side
//! rarely meet), skipping ports something already listens on.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, Result};

/// 127.0.0.1, where the servers of a test or a bench run listen.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A free loopback port for a server.
pub fn free_port() -> Result<u16> {
    free_ports_on(LOOPBACK, 1)
}

/// `count` consecutive free loopback ports (a node's shard ports).
pub fn free_port_range(count: u16) -> Result<u16> {
    free_ports_on(LOOPBACK, count)
}

/// First port handed out; the range runs from here to the ephemeral range.
const FIRST_PORT: u32 = 12_000;

/// Offset of the next port from [`FIRST_PORT`]; `u32::MAX` until seeded.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// The kernel's lowest ephemeral port (32768 unless configured otherwise).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port on `ip` that nothing listens on and no other caller in this
/// process got; `count` consecutive such ports when asked for more (shard
/// k of a node listens on its base port + k).
pub fn free_ports_on(ip: IpAddr, count: u16) -> Result<u16> {
    let count = u32::from(count);
    let span = ephemeral_low().saturating_sub(FIRST_PORT);
    if span < count.saturating_mul(100) {
        return ephemeral_fallback(ip, count);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let _ = NEXT.compare_exchange(u32::MAX, seed % span, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span / count {
        let offset = NEXT.fetch_add(count, Ordering::Relaxed) % span;
        if offset + count > span {
            continue;
        }
        let base = FIRST_PORT + offset;
        let all_free = (base..base + count).all(|port| {
            u16::try_from(port).is_ok_and(|port| TcpListener::bind((ip, port)).is_ok())
        });
        if all_free {
            return u16::try_from(base).map_err(|_| anyhow!("port {base} out of range"));
        }
    }
    ephemeral_fallback(ip, count)
}

/// Where the port space is configured unusually: the bind-port-0 trick.
fn ephemeral_fallback(ip: IpAddr, count: u32) -> Result<u16> {
    for _ in 0..200 {
        let base = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| anyhow!("bind {ip}:0: {e}"))?
            .port();
        let all_free = (0..count).all(|i| {
            u16::try_from(u32::from(base) + i)
                .is_ok_and(|port| TcpListener::bind((ip, port)).is_ok())
        });
        if all_free {
            return Ok(base);
        }
    }
    Err(anyhow!("found no {count} consecutive free ports on {ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports are handed out once each and from below the ephemeral range
    /// (whether they are still free when a server binds them depends on
    /// every other process of the machine, so that is not asserted).
    #[test]
    fn port_ranges_are_handed_out_once_below_the_ephemeral_range() {
        let first = u32::from(free_port_range(3).unwrap());
        let second = u32::from(free_port_range(3).unwrap());
        assert!(
            first + 3 <= second || second + 3 <= first,
            "{first} {second}"
        );
        if ephemeral_low().saturating_sub(FIRST_PORT) >= 300 {
            for base in [first, second] {
                assert!((FIRST_PORT..ephemeral_low() - 2).contains(&base), "{base}");
            }
        }
    }
}
