//! Wakers that hold back the wakes a client connection's task will act on anyway.
//!
//! The task polls its streams and then its connection, and what it polls may wake it while it
//! runs: a stream woken while the set polls (the set passes it on), the connection's socket
//! ready again while the connection reads and writes. Each such wake would schedule the whole
//! task again for a poll with nothing to do (with h2's own connection and `FuturesUnordered`
//! that was one more poll per request). A [`Hold`] waker records the wakes that come while it
//! holds instead of passing them on; the task then acts on them itself (polls again right away,
//! or wakes itself for real). Outside a hold every wake passes at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

/// Wakes pass to the task.
const PASS: u8 = 0;
/// Wakes are held back.
const HOLD: u8 = 1;
/// Held back, and woken since.
const HELD: u8 = 2;

/// A waker in front of a task's own.
#[derive(Default)]
pub(super) struct Hold {
    state: AtomicU8,
    task: Arc<AtomicWaker>,
}

impl Hold {
    /// Two wakers in front of one task: wakes that pass go to the waker last registered with
    /// [`Hold::register`] on either.
    pub(super) fn pair() -> ((Arc<Self>, Waker), (Arc<Self>, Waker)) {
        let task = Arc::new(AtomicWaker::new());
        let make = || {
            let hold = Arc::new(Self {
                state: AtomicU8::new(PASS),
                task: task.clone(),
            });
            let waker = Waker::from(hold.clone());
            (hold, waker)
        };
        (make(), make())
    }

    /// The task's own waker, for the wakes that pass.
    pub(super) fn register(&self, task: &Waker) {
        self.task.register(task);
    }

    /// Holds back wakes from now on, forgetting any held back so far.
    ///
    /// A plain store (a sequentially consistent one is a locked `xchg` on x86, several per
    /// request here): a wake that does not see it yet passes to the task, and one that does
    /// is seen by [`Hold::release`]'s swap, both read-modify-writes of the same location,
    /// so no wake is lost whatever the ordering.
    pub(super) fn hold(&self) {
        self.state.store(HOLD, Ordering::Release);
    }

    /// Lets wakes pass again; returns whether one was held back since [`Hold::hold`].
    pub(super) fn release(&self) -> bool {
        self.state.swap(PASS, Ordering::SeqCst) == HELD
    }
}

impl Wake for Hold {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let held = self
            .state
            .compare_exchange(HOLD, HELD, Ordering::SeqCst, Ordering::SeqCst);
        match held {
            Ok(_) | Err(HELD) => {}
            Err(_) => self.task.wake(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wakes.
    pub(in crate::h2) struct Count(pub(in crate::h2) AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn held_wakes_are_reported_and_the_others_pass() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let ((a, a_waker), (b, b_waker)) = Hold::pair();
        let woken = || count.0.load(Ordering::SeqCst);
        // Not holding: a wake passes to the task (and, as with any `AtomicWaker`, the next one
        // needs the task to register again: it does so each time it runs).
        a.register(&task);
        a_waker.wake_by_ref();
        b_waker.wake_by_ref();
        assert_eq!(woken(), 1);
        b.register(&task);
        b_waker.wake_by_ref();
        assert_eq!(woken(), 2);
        // Holding: reported by `release`, not passed; the other waker still passes.
        a.register(&task);
        a.hold();
        a_waker.wake_by_ref();
        a_waker.wake_by_ref();
        assert_eq!(woken(), 2);
        b_waker.wake_by_ref();
        assert_eq!(woken(), 3);
        assert!(a.release());
        assert!(!a.release(), "reported once");
        // Held without a wake.
        b.hold();
        assert!(!b.release());
        // After release, wakes pass again.
        a.register(&task);
        a_waker.wake_by_ref();
        assert_eq!(woken(), 4);
    }
}
