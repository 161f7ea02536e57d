//! Bounded single-producer/single-consumer rings between cores.
//!
//! Every cross-core hop in Sluice (control core ↔ shard) is one of these
//! rings, carrying owned values, never references. glommio's own
//! `shared_channel` only works between two glommio executors (its `connect()`
//! panics on a tokio thread), so this ring is runtime-agnostic: it only needs a
//! [`Waker`], and glommio accepts wakes from foreign threads.
//!
//! # Structure
//!
//! An [`rtrb`] ring holds the items (lock-free, cache-padded head and tail).
//! Each end has a parking spot: an [`AtomicWaker`], a `waiting` flag and a
//! `closed` flag. The ring is bounded: a full ring makes [`RingSender::send`]
//! wait, which is the back-pressure the shards rely on.
//!
//! # The wake protocol (no lost wake-ups)
//!
//! A side that finds nothing to do (receiver: ring empty; sender: ring full)
//! *parks*: it registers its waker, sets its `waiting` flag, issues a
//! `SeqCst` fence, and **re-checks the ring** before returning `Pending`. The
//! other side, after making progress visible (pushing items, freeing slots),
//! issues a `SeqCst` fence and reads the flag; only if it is set does it clear
//! it and wake. This is the store-buffering (Dekker) pattern: with both fences,
//! either the parked side's re-check sees the progress, or the active side sees
//! the flag, so a wake is never lost. When nobody is parked, progress costs one
//! fence and one read of a shared cache line, with no wake at all.
//!
//! [`RingSender::send_many`] and [`RingReceiver::recv_many`] move a whole
//! chunk of items and run the notify step once per chunk: the *batched
//! wake-up* that lets one wake carry hundreds of items.
//!
//! # The drop-wakes rule
//!
//! Dropping either half sets its `closed` flag and then wakes the other half
//! unconditionally, or a peer parked on an empty (or full) ring would sleep
//! forever and shutdown would hang. The parked side checks `closed` after it
//! registered its waker, which is the ordering [`AtomicWaker`] guarantees to
//! be race-free. A receiver still drains every item pushed before the sender
//! was dropped; only then does it report the ring closed.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;

/// Creates a bounded SPSC ring holding at most `capacity` items.
///
/// Both halves are `Send` (move them to the thread that uses them) and
/// neither is `Clone`: exactly one producer and one consumer.
///
/// # Panics
///
/// If `capacity` is 0: such a ring could never carry an item, so asking for
/// one is a bug.
pub fn ring<T: Send>(capacity: usize) -> (RingSender<T>, RingReceiver<T>) {
    assert!(capacity > 0, "a ring needs room for at least one item");
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    let shared = Arc::new(Shared {
        tx: End::new(),
        rx: End::new(),
    });
    (
        RingSender {
            producer,
            shared: Arc::clone(&shared),
        },
        RingReceiver { consumer, shared },
    )
}

/// The sending half of a [`ring`].
pub struct RingSender<T> {
    producer: rtrb::Producer<T>,
    shared: Arc<Shared>,
}

/// The receiving half of a [`ring`].
pub struct RingReceiver<T> {
    consumer: rtrb::Consumer<T>,
    shared: Arc<Shared>,
}

/// State shared by both halves, one cache-line-aligned parking spot per end.
struct Shared {
    /// The sender's parking spot (it parks when the ring is full).
    tx: End,
    /// The receiver's parking spot (it parks when the ring is empty).
    rx: End,
}

/// One end's parking spot. Aligned to 128 bytes (two cache lines, as
/// adjacent-line prefetchers pull pairs) so the two ends do not share a line.
#[repr(align(128))]
struct End {
    /// The task to wake when the other side makes progress.
    waker: AtomicWaker,
    /// Set by this end just before its final re-check; cleared by the other
    /// side when it wakes us, or by us when the re-check succeeded.
    waiting: AtomicBool,
    /// Set once, when this end is dropped.
    closed: AtomicBool,
}

impl End {
    fn new() -> End {
        End {
            waker: AtomicWaker::new(),
            waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Called by this end when it found nothing to do, before re-checking.
    fn park(&self, waker: &Waker) {
        self.waker.register(waker);
        // Release: whoever reads `true` also sees the registered waker.
        self.waiting.store(true, Ordering::Release);
        // Pairs with the fence in `notify`: either our re-check sees the other
        // side's progress, or its read of `waiting` sees `true`.
        fence(Ordering::SeqCst);
    }

    /// Called by this end when its re-check after `park` found work after all.
    fn unpark(&self) {
        if self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(false, Ordering::Relaxed);
        }
    }

    /// Called by the *other* side after it made progress visible.
    fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The other half of the ring was dropped. Carries back what could not be
/// delivered.
pub struct RingClosed<T>(pub T);

/// Why [`RingSender::try_send`] did not take the item; the item is returned.
pub enum TrySendError<T> {
    /// The ring is full; the receiver has not caught up.
    Full(T),
    /// The receiver was dropped; nothing will ever be received.
    Closed(T),
}

/// Why [`RingReceiver::try_recv`] returned no item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing to receive now; the sender is still there.
    #[error("the ring is empty")]
    Empty,
    /// Nothing to receive, ever: the sender is gone.
    #[error("the ring is empty and its sender was dropped")]
    Closed,
}

impl<T: Send> RingSender<T> {
    /// Sends one item, waiting while the ring is full. Returns the item if
    /// the receiver was dropped. Cancel-safe: a dropped future sent nothing.
    pub async fn send(&mut self, item: T) -> Result<(), RingClosed<T>> {
        let item = match self.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(item)) => return Err(RingClosed(item)),
            Err(TrySendError::Full(item)) => item,
        };
        if poll_fn(|cx| self.poll_room(cx)).await.is_err() {
            return Err(RingClosed(item));
        }
        match self.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(item)) => Err(RingClosed(item)),
            // `poll_room` saw a free slot and only this half fills slots.
            Err(TrySendError::Full(_)) => unreachable!("a slot reported free was taken"),
        }
    }

    /// Sends one item if there is room, without waiting.
    pub fn try_send(&mut self, item: T) -> Result<(), TrySendError<T>> {
        if self.shared.rx.is_closed() {
            return Err(TrySendError::Closed(item));
        }
        match self.producer.push(item) {
            Ok(()) => {
                self.shared.rx.notify();
                Ok(())
            }
            Err(rtrb::PushError::Full(item)) => Err(TrySendError::Full(item)),
        }
    }

    /// Moves every item of `items` into the ring in order, waiting for room
    /// as needed, leaving `items` empty (its allocation is kept for reuse).
    ///
    /// Each chunk that fits is pushed at once and the receiver is notified
    /// once per chunk, not once per item. If the receiver is dropped, returns
    /// `Err` with the items not yet pushed still in `items`. Cancel-safe in
    /// the same sense: items not yet in the ring stay in `items`.
    ///
    /// Cost: each chunk shifts the unsent remainder of `items` to its front;
    /// with `items.len()` at most the ring capacity that is a single chunk.
    pub async fn send_many(&mut self, items: &mut Vec<T>) -> Result<(), RingClosed<()>> {
        while !items.is_empty() {
            let room = poll_fn(|cx| self.poll_room(cx)).await?;
            let count = room.min(items.len());
            let chunk = self
                .producer
                .write_chunk_uninit(count)
                .expect("the slots counted by poll_room stay free: only this half fills them");
            let pushed = chunk.fill_from_iter(items.drain(..count));
            debug_assert_eq!(pushed, count);
            self.shared.rx.notify();
        }
        Ok(())
    }

    /// Whether the receiver was dropped (every further send fails).
    pub fn is_closed(&self) -> bool {
        self.shared.rx.is_closed()
    }

    /// The most items the ring holds.
    pub fn capacity(&self) -> usize {
        self.producer.buffer().capacity()
    }

    /// Ready with the number of free slots (at least one), or with an error
    /// once the receiver is gone.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, RingClosed<()>>> {
        if let Some(room) = self.room() {
            return Poll::Ready(room);
        }
        self.shared.tx.park(cx.waker());
        if let Some(room) = self.room() {
            self.shared.tx.unpark();
            return Poll::Ready(room);
        }
        Poll::Pending
    }

    fn room(&self) -> Option<Result<usize, RingClosed<()>>> {
        if self.shared.rx.is_closed() {
            return Some(Err(RingClosed(())));
        }
        match self.producer.slots() {
            0 => None,
            free => Some(Ok(free)),
        }
    }
}

impl<T: Send> RingReceiver<T> {
    /// Receives one item, waiting while the ring is empty. `None` once the
    /// sender was dropped and every item it sent has been received.
    /// Cancel-safe: a dropped future received nothing.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Waits for at least one item, then appends up to `max` items (all
    /// that are ready, without waiting for more) to `out` and returns how
    /// many. Returns 0 only when the sender was dropped and the ring is
    /// drained; a `max` of 0 is treated as 1 so that 0 keeps that meaning.
    /// The sender is notified once per call, not once per item.
    pub async fn recv_many(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    /// Receives one item if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.consumer.pop() {
            Ok(item) => {
                self.shared.tx.notify();
                Ok(item)
            }
            Err(rtrb::PopError::Empty) if self.shared.tx.is_closed() => {
                // Items pushed just before the sender closed are visible now:
                // the Acquire load of `closed` follows their Release push.
                match self.consumer.pop() {
                    Ok(item) => Ok(item),
                    Err(rtrb::PopError::Empty) => Err(TryRecvError::Closed),
                }
            }
            Err(rtrb::PopError::Empty) => Err(TryRecvError::Empty),
        }
    }

    /// Polls for one item: the building block of [`RingReceiver::recv`], for
    /// callers that combine several rings in one hand-written future.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.try_recv() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(TryRecvError::Closed) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.shared.rx.park(cx.waker());
        match self.try_recv() {
            Ok(item) => {
                self.shared.rx.unpark();
                Poll::Ready(Some(item))
            }
            Err(TryRecvError::Closed) => {
                self.shared.rx.unpark();
                Poll::Ready(None)
            }
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// The most items the ring holds.
    pub fn capacity(&self) -> usize {
        self.consumer.buffer().capacity()
    }

    fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<usize> {
        let max = max.max(1);
        match self.try_recv_many(out, max) {
            Ok(count) => return Poll::Ready(count),
            Err(TryRecvError::Closed) => return Poll::Ready(0),
            Err(TryRecvError::Empty) => {}
        }
        self.shared.rx.park(cx.waker());
        match self.try_recv_many(out, max) {
            Ok(count) => {
                self.shared.rx.unpark();
                Poll::Ready(count)
            }
            Err(TryRecvError::Closed) => {
                self.shared.rx.unpark();
                Poll::Ready(0)
            }
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// Moves up to `max` (≥ 1) ready items into `out`; `Ok` carries at least 1.
    fn try_recv_many(&mut self, out: &mut Vec<T>, max: usize) -> Result<usize, TryRecvError> {
        let mut ready = self.consumer.slots();
        if ready == 0 {
            if !self.shared.tx.is_closed() {
                return Err(TryRecvError::Empty);
            }
            // As in `try_recv`: look again after seeing `closed`.
            ready = self.consumer.slots();
            if ready == 0 {
                return Err(TryRecvError::Closed);
            }
        }
        let count = ready.min(max);
        let chunk = self
            .consumer
            .read_chunk(count)
            .expect("the items counted by slots() stay in the ring: only this half removes them");
        out.extend(chunk);
        self.shared.tx.notify();
        Ok(count)
    }
}

impl<T> Drop for RingSender<T> {
    fn drop(&mut self) {
        self.shared.tx.closed.store(true, Ordering::Release);
        // Unconditional: the receiver registered its waker before checking
        // `closed`, and AtomicWaker orders the two (see the module docs).
        self.shared.rx.waker.wake();
    }
}

impl<T> Drop for RingReceiver<T> {
    fn drop(&mut self) {
        self.shared.rx.closed.store(true, Ordering::Release);
        self.shared.tx.waker.wake();
    }
}

impl<T> fmt::Debug for RingSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSender")
            .field("capacity", &self.producer.buffer().capacity())
            .field("closed", &self.shared.rx.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for RingReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingReceiver")
            .field("capacity", &self.consumer.buffer().capacity())
            .field("closed", &self.shared.tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for RingClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingClosed(..)")
    }
}

impl<T> fmt::Display for RingClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the other half of the ring was dropped")
    }
}

impl<T> std::error::Error for RingClosed<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the ring is full"),
            TrySendError::Closed(_) => f.write_str("the receiving half of the ring was dropped"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures::executor::block_on;
    use futures::task::ArcWake;
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;
    use crate::constants::IO_MEMORY_BYTES_DEFAULT;

    /// Runs `f` on its own thread and fails the test if it takes longer than
    /// `limit`, so a lost wake-up shows up as a failure instead of a hang.
    fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            // The receiver is gone only if the watchdog already failed.
            let _ = done_tx.send(f());
        });
        match done_rx.recv_timeout(limit) {
            Ok(result) => {
                worker.join().expect("the worker finished");
                result
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("timed out after {limit:?}: a wake-up was lost")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the worker sends before it returns"),
            },
        }
    }

    /// A waker that counts its wakes.
    struct CountingWaker(AtomicUsize);

    impl ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = futures::task::waker(Arc::clone(&counter));
        (counter, waker)
    }

    fn wakes(counter: &CountingWaker) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    /// Sends `0..count`, alternating single sends with `send_many` batches
    /// of 1..300 items, then drops the sender.
    async fn produce(mut tx: RingSender<u64>, count: u64) {
        let mut next = 0u64;
        let mut batch = Vec::with_capacity(300);
        let mut round = 0u64;
        // Bounded: `next` grows by at least 1 per round.
        while next < count {
            if round.is_multiple_of(2) {
                tx.send(next)
                    .await
                    .expect("the receiver outlives the producer");
                next += 1;
            } else {
                let len = (round % 300).min(count - next);
                batch.extend(next..next + len);
                next += len;
                tx.send_many(&mut batch)
                    .await
                    .expect("the receiver outlives the producer");
                assert!(batch.is_empty());
            }
            round += 1;
        }
    }

    /// Receives `count` items, alternating `recv` and `recv_many`, checks
    /// they arrive in order, then checks the ring reports closed.
    async fn consume(mut rx: RingReceiver<u64>, count: u64) -> u64 {
        let mut expected = 0u64;
        let mut batch = Vec::with_capacity(512);
        let mut round = 0u64;
        // Bounded: `expected` grows by at least 1 per round.
        while expected < count {
            if round.is_multiple_of(2) {
                let item = rx
                    .recv()
                    .await
                    .expect("the sender sends everything before it drops");
                assert_eq!(item, expected);
                expected += 1;
            } else {
                let received = rx.recv_many(&mut batch, (round % 500) as usize + 1).await;
                assert!(received >= 1);
                assert_eq!(received, batch.len());
                for item in batch.drain(..) {
                    assert_eq!(item, expected);
                    expected += 1;
                }
            }
            round += 1;
        }
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv_many(&mut batch, 16).await, 0);
        expected
    }

    fn tokio_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread tokio runtime")
    }

    fn glommio_thread<R: Send + 'static, Fut: Future<Output = R> + 'static>(
        body: impl FnOnce() -> Fut + Send + 'static,
    ) -> glommio::ExecutorJoinHandle<R> {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(IO_MEMORY_BYTES_DEFAULT)
            .name("ring-test")
            .spawn(body)
            .expect("a glommio executor thread")
    }

    const CROSS_RUNTIME_ITEMS: u64 = 1_000_000;

    #[test]
    fn tokio_to_glommio_delivers_1m_items_in_order() {
        let received = within(Duration::from_secs(60), || {
            let (tx, rx) = ring::<u64>(1024);
            let consumer = glommio_thread(move || consume(rx, CROSS_RUNTIME_ITEMS));
            tokio_runtime().block_on(produce(tx, CROSS_RUNTIME_ITEMS));
            consumer.join().expect("the glommio consumer")
        });
        assert_eq!(received, CROSS_RUNTIME_ITEMS);
    }

    #[test]
    fn glommio_to_tokio_delivers_1m_items_in_order() {
        let received = within(Duration::from_secs(60), || {
            let (tx, rx) = ring::<u64>(1024);
            let producer = glommio_thread(move || produce(tx, CROSS_RUNTIME_ITEMS));
            let received = tokio_runtime().block_on(consume(rx, CROSS_RUNTIME_ITEMS));
            producer.join().expect("the glommio producer");
            received
        });
        assert_eq!(received, CROSS_RUNTIME_ITEMS);
    }

    #[test]
    fn stress_capacity_4_between_two_threads() {
        const ITEMS: u64 = 200_000;
        let received = within(Duration::from_secs(60), || {
            let (tx, rx) = ring::<u64>(4);
            let producer = std::thread::spawn(move || block_on(produce(tx, ITEMS)));
            let received = block_on(consume(rx, ITEMS));
            producer.join().expect("the producer thread");
            received
        });
        assert_eq!(received, ITEMS);
    }

    #[test]
    fn a_push_wakes_a_parked_receiver_once_and_dropping_the_sender_wakes_it_too() {
        let (mut tx, mut rx) = ring::<u32>(8);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(pin!(rx.recv()).poll(&mut cx).is_pending());
        assert!(tx.try_send(1).is_ok());
        assert!(tx.try_send(2).is_ok());
        assert_eq!(
            wakes(&counter),
            1,
            "one wake for the first push, none for the second"
        );
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        let mut recv = pin!(rx.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        drop(tx);
        assert_eq!(
            wakes(&counter),
            2,
            "dropping the sender wakes the parked receiver"
        );
        assert_eq!(recv.poll(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn the_receiver_drains_items_sent_before_the_sender_dropped() {
        let (mut tx, mut rx) = ring::<u32>(8);
        assert!(tx.try_send(1).is_ok() && tx.try_send(2).is_ok() && tx.try_send(3).is_ok());
        drop(tx);
        assert_eq!(block_on(rx.recv()), Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        let mut out = Vec::new();
        assert_eq!(block_on(rx.recv_many(&mut out, 8)), 1);
        assert_eq!(out, [3]);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(block_on(rx.recv()), None);
        assert_eq!(block_on(rx.recv_many(&mut out, 8)), 0);
    }

    #[test]
    fn dropping_the_sender_wakes_a_receiver_parked_on_another_thread() {
        let received = within(Duration::from_secs(10), || {
            let (tx, mut rx) = ring::<u32>(8);
            let receiver = std::thread::spawn(move || block_on(rx.recv()));
            std::thread::sleep(Duration::from_millis(50));
            drop(tx);
            receiver.join().expect("the receiver thread")
        });
        assert_eq!(received, None);
    }

    #[test]
    fn dropping_the_receiver_wakes_a_sender_parked_on_a_full_ring() {
        let (result, closed_after) = within(Duration::from_secs(10), || {
            let (mut tx, rx) = ring::<u32>(2);
            assert!(tx.try_send(1).is_ok() && tx.try_send(2).is_ok());
            let sender = std::thread::spawn(move || {
                let result = block_on(tx.send(3));
                (result, tx.is_closed(), tx.try_send(4))
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !sender.is_finished(),
                "the send waits while the ring is full"
            );
            drop(rx);
            let (result, is_closed, try_result) = sender.join().expect("the sender thread");
            assert!(matches!(try_result, Err(TrySendError::Closed(4))));
            (result.map_err(|RingClosed(item)| item), is_closed)
        });
        assert_eq!(result, Err(3), "the undelivered item comes back");
        assert!(closed_after);
    }

    #[test]
    fn a_full_ring_makes_the_sender_wait_until_the_receiver_frees_a_slot() {
        let (mut tx, mut rx) = ring::<u32>(4);
        for item in 0..4 {
            assert!(tx.try_send(item).is_ok());
        }
        assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut send = pin!(tx.send(4));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes(&counter), 0);
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(wakes(&counter), 1, "freeing a slot wakes the parked sender");
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        let mut rest = Vec::new();
        assert_eq!(block_on(rx.recv_many(&mut rest, 16)), 4);
        assert_eq!(rest, [1, 2, 3, 4]);
        assert_eq!(wakes(&counter), 1, "no wake when the sender is not waiting");
    }

    #[test]
    fn send_many_wakes_a_parked_receiver_once_per_chunk() {
        let (mut tx, mut rx) = ring::<u64>(1024);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(pin!(rx.recv_many(&mut out, 1024))
            .poll(&mut cx)
            .is_pending());
        let mut batch: Vec<u64> = (0..256).collect();
        assert!(block_on(tx.send_many(&mut batch)).is_ok());
        assert!(batch.is_empty());
        assert_eq!(wakes(&counter), 1, "256 items, one wake");
        batch.extend(256..512);
        assert!(block_on(tx.send_many(&mut batch)).is_ok());
        assert_eq!(wakes(&counter), 1, "the receiver was already woken");
        assert_eq!(block_on(rx.recv_many(&mut out, 1024)), 512);
        assert!(out.iter().copied().eq(0..512));
    }

    #[test]
    fn send_many_keeps_unsent_items_when_the_receiver_drops() {
        let (mut tx, mut rx) = ring::<u32>(4);
        let mut items: Vec<u32> = (0..10).collect();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        {
            let mut send = pin!(tx.send_many(&mut items));
            assert!(
                send.as_mut().poll(&mut cx).is_pending(),
                "4 pushed, 6 wait for room"
            );
            assert_eq!(rx.try_recv(), Ok(0));
            assert_eq!(wakes(&counter), 1);
            assert!(send.as_mut().poll(&mut cx).is_pending(), "1 more pushed");
            drop(rx);
            assert_eq!(wakes(&counter), 2, "dropping the receiver wakes the sender");
            assert!(matches!(
                send.as_mut().poll(&mut cx),
                Poll::Ready(Err(RingClosed(())))
            ));
        }
        assert_eq!(items, [5, 6, 7, 8, 9]);
        assert!(tx.is_closed());
    }

    #[test]
    fn recv_many_treats_max_zero_as_one() {
        let (mut tx, mut rx) = ring::<u8>(4);
        assert!(tx.try_send(7).is_ok() && tx.try_send(8).is_ok());
        let mut out = Vec::new();
        assert_eq!(block_on(rx.recv_many(&mut out, 0)), 1);
        assert_eq!(out, [7]);
    }
}
