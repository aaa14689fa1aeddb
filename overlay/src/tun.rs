//! The Linux TUN backend: one device, read and written in batches, with TSO/GRO offloads
//! (`IFF_VNET_HDR` + `TUNSETOFFLOAD`) where the kernel offers them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{DeviceBuilder, GROTable, SyncDevice};

pub use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// How to create the device.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Interface MTU.
    pub mtu: u16,
    /// Try TSO/GRO offloads (falls back to plain packets when refused).
    pub offload: bool,
    /// Transmit queue length; a long queue avoids drops under bursts.
    pub tx_queue_len: u32,
}

impl TunConfig {
    /// Defaults: offloads on, MTU 1420, queue 10,000 packets.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mtu: crate::DEFAULT_MTU,
            offload: true,
            tx_queue_len: 10_000,
        }
    }
}

/// An open TUN device, created down: the caller adds addresses and brings it up.
pub struct Tun {
    dev: SyncDevice,
    name: String,
    mtu: u16,
    offload: bool,
}

impl Tun {
    /// Creates the device. Needs `CAP_NET_ADMIN` and `/dev/net/tun`.
    pub fn create(config: &TunConfig) -> io::Result<Self> {
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&config.name)
                .mtu(config.mtu)
                .tx_queue_len(config.tx_queue_len)
                .offload(offload)
                .enable(false)
                .build_sync()
        };
        let (dev, offload) = match build(config.offload) {
            Ok(dev) => (dev, config.offload),
            Err(error) if config.offload => {
                tracing::info!(%error, "TUN offloads refused; using plain packets");
                (build(false)?, false)
            }
            Err(error) => return Err(error),
        };
        dev.set_nonblocking(true)?;
        let name = dev.name()?;
        // No IPv6 link-local address or router solicitations into the tunnel.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1");
        Ok(Self {
            dev,
            name,
            mtu: config.mtu,
            offload,
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn if_index(&self) -> io::Result<u32> {
        self.dev.if_index()
    }

    /// The MTU the device was created with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Whether TSO/GRO offloads are active.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Bytes to leave in front of each packet written with [`Tun::send_batch`].
    pub fn write_offset(&self) -> usize {
        if self.offload { VIRTIO_NET_HDR_LEN } else { 0 }
    }

    /// Reads one batch: a single packet, or a TSO super-packet split into MTU-sized segments in
    /// `bufs` (sizes in `sizes`). Returns the number of packets; `WouldBlock` when none wait.
    pub fn recv_batch(
        &self,
        scratch: &mut [u8],
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
    ) -> io::Result<usize> {
        self.dev.recv_multiple(scratch, bufs, sizes, 0)
    }

    /// Writes packets (each after [`Tun::write_offset`] bytes of headroom), coalescing TCP and
    /// UDP flows into GRO super-packets when offloads are on.
    pub fn send_batch(&self, gro: &mut GROTable, bufs: &mut [Vec<u8>]) -> io::Result<usize> {
        self.dev.send_multiple(gro, bufs, self.write_offset())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
