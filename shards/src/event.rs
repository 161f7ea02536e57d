//! A single-threaded wake-up signal for tasks on one shard: no atomics, no
//! locks, because everything that touches it lives on the same executor.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub(crate) struct LocalEvent {
    signalled: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    /// Wakes every current waiter; a later `wait` also returns at once.
    pub(crate) fn signal(&self) {
        self.signalled.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Waits for a signal and consumes it.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.signalled.replace(false) {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// A list of wakers for "something changed": each poller re-checks its own
/// condition after a wake. Used for long-polling fetches on the watermark.
#[derive(Default)]
pub(crate) struct WakerList {
    wakers: RefCell<Vec<Waker>>,
}

impl WakerList {
    pub(crate) fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }
}
