//! The streams of a client connection, polled by the connection's task: a set of futures that
//! polls only those woken, like `futures_util`'s `FuturesUnordered`, but keeps what a finished
//! stream leaves behind for the next one.
//!
//! A stream's future is large (its request, the attempt on the endpoint, the relays: about
//! 2.5 KB), too large for the allocator's per-thread cache: allocated and freed for each
//! stream, and moved into place twice, it cost about 5 % of an HTTP/2 request's instructions.
//! Here a finished stream's box takes the next stream's future (up to [`SPARE`] are kept), and
//! each slot keeps its waker.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::sync::lock;

/// Boxes of finished streams kept for new ones: a client that multiplexes finishes and opens
/// streams many at a time (h2load `-m16`: all 16 of a connection often end in one round). Kept
/// while the connection is in use (see [`StreamSet::shed`]): at most `SPARE` × 2.5 KB per
/// connection.
const SPARE: usize = 16;

pub(super) struct StreamSet<F> {
    slots: Vec<Slot<F>>,
    /// Slots without a stream.
    free: Vec<usize>,
    spare: Vec<Pin<Box<F>>>,
    ready: Arc<Ready>,
    /// The woken slots this round polls, taken from `ready` at once (one lock, not one per
    /// slot).
    batch: VecDeque<usize>,
    len: usize,
}

struct Slot<F> {
    future: Option<Pin<Box<F>>>,
    wake: Arc<SlotWake>,
    waker: Waker,
}

/// Slots woken since they were last polled, and who to tell.
struct Ready {
    queue: Mutex<VecDeque<usize>>,
    owner: Waker,
}

struct SlotWake {
    index: usize,
    /// In the ready queue already.
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.ready.queue).push_back(self.index);
            self.ready.owner.wake_by_ref();
        }
    }
}

impl<F: Future<Output = ()>> StreamSet<F> {
    /// An empty set; a woken stream wakes `owner`.
    pub(super) fn new(owner: Waker) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            ready: Arc::new(Ready {
                queue: Mutex::new(VecDeque::new()),
                owner,
            }),
            batch: VecDeque::new(),
            len: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a stream, to be polled by the next [`StreamSet::poll_next`] (without a wake: the
    /// caller polls the set next).
    pub(super) fn push(&mut self, future: F) {
        let index = self.free.pop().unwrap_or_else(|| {
            let index = self.slots.len();
            let wake = Arc::new(SlotWake {
                index,
                queued: AtomicBool::new(false),
                ready: self.ready.clone(),
            });
            let waker = Waker::from(wake.clone());
            self.slots.push(Slot {
                future: None,
                wake,
                waker,
            });
            index
        });
        let slot = &mut self.slots[index];
        slot.future = Some(match self.spare.pop() {
            Some(mut reused) => {
                reused.set(future);
                reused
            }
            None => Box::pin(future),
        });
        self.len += 1;
        if !slot.wake.queued.swap(true, Ordering::AcqRel) {
            lock(&self.ready.queue).push_back(index);
        }
    }

    /// Frees the boxes kept for new streams (a connection without streams for a while).
    pub(super) fn shed(&mut self) {
        self.spare = Vec::new();
    }

    /// Polls the streams woken so far (each once at most): ready with `Some` when one has
    /// finished, `None` when none is left. Pending otherwise; streams woken while it polled
    /// have woken the owner.
    pub(super) fn poll_next(&mut self) -> Poll<Option<()>> {
        if self.len == 0 {
            return Poll::Ready(None);
        }
        if self.batch.is_empty() {
            std::mem::swap(&mut self.batch, &mut *lock(&self.ready.queue));
        }
        while let Some(index) = self.batch.pop_front() {
            let slot = &mut self.slots[index];
            slot.wake.queued.store(false, Ordering::Release);
            let Some(future) = &mut slot.future else {
                continue;
            };
            let mut cx = Context::from_waker(&slot.waker);
            if future.as_mut().poll(&mut cx).is_ready() {
                // A finished async fn holds nothing: its box can take the next stream.
                let done = slot.future.take().expect("polled");
                if self.spare.len() < SPARE {
                    self.spare.push(done);
                }
                self.free.push(index);
                self.len -= 1;
                return Poll::Ready(Some(()));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::h2::hold::tests::Count;

    #[test]
    fn polls_woken_streams_reuses_boxes_and_finishes_all() {
        let owner = Arc::new(Count(AtomicUsize::new(0)));
        let mut set = StreamSet::new(Waker::from(owner.clone()));
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        // Futures that park once (handing out their waker) and finish when woken.
        let make = |tx: std::sync::mpsc::Sender<Waker>| {
            let mut parked = false;
            std::future::poll_fn(move |cx| {
                if parked {
                    return Poll::Ready(());
                }
                parked = true;
                tx.send(cx.waker().clone()).unwrap();
                Poll::Pending
            })
        };
        for _ in 0..3 {
            set.push(make(tx.clone()));
        }
        assert_eq!(set.poll_next(), Poll::Pending);
        let wakers: Vec<Waker> = rx.try_iter().collect();
        assert_eq!(wakers.len(), 3, "each polled once");
        assert_eq!(set.poll_next(), Poll::Pending, "none woken: none polled");
        assert!(rx.try_recv().is_err());
        wakers[1].wake_by_ref();
        wakers[1].wake_by_ref();
        assert_eq!(owner.0.load(Ordering::SeqCst), 1, "one wake for the owner");
        assert_eq!(set.poll_next(), Poll::Ready(Some(())));
        // The finished box takes a new stream, polled once as well.
        set.push(make(tx.clone()));
        assert_eq!(set.poll_next(), Poll::Pending);
        let again: Vec<Waker> = rx.try_iter().collect();
        assert_eq!(again.len(), 1);
        for waker in [&wakers[0], &wakers[2], &again[0]] {
            waker.wake_by_ref();
        }
        let mut finished = 0;
        while let Poll::Ready(Some(())) = set.poll_next() {
            finished += 1;
        }
        assert_eq!(finished, 3);
        assert!(set.is_empty());
        assert_eq!(set.poll_next(), Poll::Ready(None));
    }

    #[test]
    fn a_stream_woken_while_polled_waits_for_the_next_round_and_wakes_the_owner() {
        let owner = Arc::new(Count(AtomicUsize::new(0)));
        let mut set = StreamSet::new(Waker::from(owner.clone()));
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        set.push(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert_eq!(set.poll_next(), Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once per round");
        assert_eq!(
            owner.0.load(Ordering::SeqCst),
            1,
            "the owner is woken for the next"
        );
        assert_eq!(set.poll_next(), Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
