//! The smoltcp `Device` between the stack and the tunnel: inbound, a batch of decrypted inner
//! packets laid back to back in one buffer; outbound, the packets the stack emits, laid back to
//! back in another, to be encrypted and sent as one batch. Both buffers are reused: after the
//! first batches nothing is allocated.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// Packets laid back to back in one reusable buffer.
#[derive(Default)]
pub(super) struct Arena {
    buf: Vec<u8>,
    used: usize,
    packets: Vec<(usize, usize)>,
}

impl Arena {
    pub(super) fn with_capacity(bytes: usize, packets: usize) -> Self {
        Self {
            buf: vec![0; bytes],
            used: 0,
            packets: Vec::with_capacity(packets),
        }
    }

    pub(super) fn clear(&mut self) {
        self.used = 0;
        self.packets.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.packets.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub(super) fn get(&self, i: usize) -> &[u8] {
        let (start, len) = self.packets[i];
        &self.buf[start..start + len]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.packets
            .iter()
            .map(|&(start, len)| &self.buf[start..start + len])
    }

    /// Room for `len` bytes at the end (grows the buffer if a batch is unusually large).
    pub(super) fn tail(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < self.used + len {
            self.buf.resize(self.used + len, 0);
        }
        &mut self.buf[self.used..self.used + len]
    }

    /// Keeps the first `len` bytes of the last [`Arena::tail`] as a packet.
    pub(super) fn commit(&mut self, len: usize) {
        self.packets.push((self.used, len));
        self.used += len;
    }
}

/// The device smoltcp polls.
pub(super) struct Pipe {
    /// Decrypted inbound packets, consumed in order by `receive`.
    pub(super) rx: Arena,
    rx_next: usize,
    /// `receive` stops here: the batch is handed to smoltcp in chunks, so that the stack's
    /// lock is never held for long and replies leave while the rest is processed.
    rx_stop: usize,
    /// Packets the stack emitted since the last flush.
    pub(super) tx: Arena,
    /// Outbound packets per flush; past it `transmit` says the device is busy.
    tx_limit: usize,
    /// Set when `transmit` refused: the stack has more to send after a flush.
    pub(super) exhausted: bool,
    mtu: usize,
}

impl Pipe {
    pub(super) fn new(mtu: usize, rx_bytes: usize, rx_packets: usize, tx_limit: usize) -> Self {
        Self {
            rx: Arena::with_capacity(rx_bytes, rx_packets),
            rx_next: 0,
            rx_stop: 0,
            tx: Arena::with_capacity(tx_limit * mtu, tx_limit),
            tx_limit,
            exhausted: false,
            mtu,
        }
    }

    /// Lets the next poll consume up to `chunk` more inbound packets; false when none are left.
    pub(super) fn next_rx_chunk(&mut self, chunk: usize) -> bool {
        if self.rx_next >= self.rx.len() {
            self.rx.clear();
            self.rx_next = 0;
            self.rx_stop = 0;
            return false;
        }
        self.rx_stop = (self.rx_next + chunk).min(self.rx.len());
        true
    }

    /// Inbound packets not yet handed to smoltcp.
    pub(super) fn rx_pending(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (self.rx_next..self.rx_stop).map(|i| self.rx.get(i))
    }
}

impl Device for Pipe {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        if self.rx_next >= self.rx_stop {
            return None;
        }
        let i = self.rx_next;
        self.rx_next += 1;
        // A reply to an inbound packet (an ACK) is always taken: the arena grows if needed.
        Some((Rx(self.rx.get(i)), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Tx<'_>> {
        if self.tx.len() >= self.tx_limit {
            self.exhausted = true;
            return None;
        }
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        caps
    }
}

/// One inbound packet.
pub(super) struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// Room for one outbound packet.
pub(super) struct Tx<'a>(&'a mut Arena);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let r = f(self.0.tail(len));
        self.0.commit(len);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_keep_packets_back_to_back_and_grow_when_needed() {
        let mut a = Arena::with_capacity(8, 2);
        a.tail(5).copy_from_slice(b"hello");
        a.commit(5);
        a.tail(10)[..6].copy_from_slice(b"world!");
        a.commit(6);
        assert_eq!(a.iter().collect::<Vec<_>>(), [&b"hello"[..], b"world!"]);
        a.clear();
        assert!(a.is_empty());
        a.tail(3).copy_from_slice(b"abc");
        a.commit(3);
        assert_eq!(a.get(0), b"abc");
    }
}
