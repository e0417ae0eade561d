//! Event-mode timers: one-shot timers of a connection (`Conn::set_timer`,
//! `reset_timer`, `cancel_timer`) and periodic loop timers
//! (`Config::add_loop_timer`), all of one loop in one structure of that
//! loop. No thread and no descriptor per timer: the loop's epoll_wait
//! sleeps until the nearest deadline (`next_deadline`) and then runs what
//! is due (`pop_due`).
//!
//! The structure is an indexed binary min-heap, as libevent's min_heap
//! (each entry knows its place in the heap, so a cancel or a re-arm is
//! O(log n) and leaves no stale entry behind, however often a timer is
//! re-armed), ordered by deadline and then by a sequence number taken at
//! each set or re-arm, as libuv's `start_id`: timers due in the same
//! millisecond run in the order they were set. Entries live in a slab;
//! a timer's id is its slab slot and the slot's generation, so a lookup is
//! O(1) and an id that fired or was cancelled never names a later timer
//! (a slot whose generation would wrap is retired, as `SlotIds` does for
//! connections). Each connection keeps the head of a doubly linked list of
//! its pending timers (threaded through the entries), so that all of them
//! are cancelled in O(their number) when it closes.
//!
//! Time: whole milliseconds since the loop started. A timer set at `t` ms
//! (truncated) with delay `d` is due at `t + 1 + d`, and runs once the
//! loop's clock (truncated) has reached that: never before `d` has passed,
//! typically within a millisecond or two after. A timer set while timers
//! run is therefore never due in the same pass (a delay-0 timer that
//! re-arms itself cannot starve the loop's I/O).
//!
//! Where the structure lives: in a thread-local of the loop thread,
//! installed while the loop runs (`install`). The handle C and Rust
//! handlers get is `&mut Conn`, which cannot reach its loop; the
//! thread-local is what lets `Conn::set_timer` reach the loop it runs on,
//! and it refuses, rather than misfiles, a call from any other thread.
//! The thread-local is never borrowed while user code runs: callbacks are
//! taken out first, and dropped outside the borrow too.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::{Conn, ID_LOOP_SHIFT};
use crate::error::{Error, ErrorKind, Result};
use crate::server::Server;

/// A timer's id: the generation of its slab slot (high 32 bits, never 0)
/// and the slot (low 32 bits). Never 0, so 0 can mean "no timer".
pub type TimerId = u64;

/// A connection timer's callback: runs once, on the connection's loop,
/// with the connection and the timer's id.
pub type ConnTimerFn = Box<dyn FnOnce(&mut Conn, TimerId)>;

/// A loop timer's callback: the server and the index of the loop it runs
/// on (0 to threads - 1).
pub type LoopTimerFn = Arc<dyn Fn(&Server, usize) + Send + Sync>;

/// A periodic timer every loop of an event-mode server runs
/// (`Config::add_loop_timer`).
#[derive(Clone)]
pub struct LoopTimer {
    pub(crate) interval_ms: u64,
    pub(crate) callback: LoopTimerFn,
}

impl fmt::Debug for LoopTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopTimer")
            .field("interval_ms", &self.interval_ms)
            .finish_non_exhaustive()
    }
}

impl LoopTimer {
    pub(crate) fn new(interval_ms: u64, callback: LoopTimerFn) -> Result<Self> {
        if interval_ms == 0 {
            return Err(Error::invalid(
                "a loop timer's interval must be at least 1 ms",
            ));
        }
        Ok(LoopTimer {
            interval_ms,
            callback,
        })
    }
}

/// The next deadline of a periodic timer that was due at `deadline`:
/// `deadline + interval`, or, if that has passed already (`now`), the
/// first later multiple of the interval. Computed from the deadline, not
/// from when the callback ran, so lateness does not accumulate; missed
/// periods are skipped rather than run in a burst.
pub(crate) fn next_periodic(deadline: u64, interval: u64, now: u64) -> u64 {
    let next = deadline.saturating_add(interval);
    if next > now {
        return next;
    }
    let missed = (now - next) / interval + 1;
    next.saturating_add(missed.saturating_mul(interval))
}

/// Milliseconds since `started`, truncated.
pub(crate) fn now_ms(started: Instant) -> u64 {
    started.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
}

// ------------------------------------------------------------------ heap

/// Marks a slab entry that is not in the heap.
const NOT_QUEUED: u32 = u32::MAX;

struct Entry<T> {
    /// The slot's current generation: ids with another one are stale.
    generation: u32,
    /// Index in `heap`, or NOT_QUEUED while the slot is free.
    pos: u32,
    deadline: u64,
    seq: u64,
    value: Option<T>,
}

/// An indexed binary min-heap of values with deadlines (see the module
/// doc); generic so that it can be tested on its own.
pub(crate) struct TimerHeap<T> {
    entries: Vec<Entry<T>>,
    /// Slab indices, heap-ordered by (deadline, seq).
    heap: Vec<u32>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<T> TimerHeap<T> {
    pub(crate) fn new() -> Self {
        TimerHeap {
            entries: Vec::new(),
            heap: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }

    /// Pending timers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }

    fn id(index: usize, generation: u32) -> TimerId {
        (u64::from(generation) << 32) | index as u64
    }

    /// The slab index of pending timer `id`.
    fn index_of(&self, id: TimerId) -> Option<usize> {
        let index = (id & u64::from(u32::MAX)) as usize;
        let entry = self.entries.get(index)?;
        (entry.generation == (id >> 32) as u32 && entry.value.is_some()).then_some(index)
    }

    /// Adds a timer; None only when 2^32 - 1 slots are in use or retired.
    pub(crate) fn insert(&mut self, deadline: u64, value: T) -> Option<TimerId> {
        let index = match self.free.pop() {
            Some(index) => index as usize,
            None => {
                let index = self.entries.len();
                if index >= NOT_QUEUED as usize {
                    return None;
                }
                self.entries.push(Entry {
                    generation: 1,
                    pos: NOT_QUEUED,
                    deadline: 0,
                    seq: 0,
                    value: None,
                });
                index
            }
        };
        let seq = self.take_seq();
        let pos = self.heap.len();
        let entry = &mut self.entries[index];
        entry.deadline = deadline;
        entry.seq = seq;
        entry.value = Some(value);
        let id = Self::id(index, entry.generation);
        self.heap.push(index as u32);
        self.place(pos, index);
        self.sift_up(pos);
        Some(id)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(crate) fn get(&self, id: TimerId) -> Option<&T> {
        self.entries[self.index_of(id)?].value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: TimerId) -> Option<&mut T> {
        let index = self.index_of(id)?;
        self.entries[index].value.as_mut()
    }

    /// Cancels pending timer `id`, giving its value back.
    pub(crate) fn remove(&mut self, id: TimerId) -> Option<T> {
        let index = self.index_of(id)?;
        Some(self.take(index))
    }

    /// Moves pending timer `id` to `deadline`, behind timers already due
    /// then (as if set now).
    pub(crate) fn reschedule(&mut self, id: TimerId, deadline: u64) -> bool {
        let Some(index) = self.index_of(id) else {
            return false;
        };
        let seq = self.take_seq();
        let entry = &mut self.entries[index];
        entry.deadline = deadline;
        entry.seq = seq;
        let pos = entry.pos as usize;
        if !self.sift_up(pos) {
            self.sift_down(pos);
        }
        true
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap
            .first()
            .map(|&index| self.entries[index as usize].deadline)
    }

    /// The first timer due at `now` (deadline <= now), removed: its id,
    /// its deadline and its value.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(TimerId, u64, T)> {
        let index = *self.heap.first()? as usize;
        let entry = &self.entries[index];
        if entry.deadline > now {
            return None;
        }
        let (id, deadline) = (Self::id(index, entry.generation), entry.deadline);
        Some((id, deadline, self.take(index)))
    }

    /// Takes entry `index` out of the heap and frees its slot.
    fn take(&mut self, index: usize) -> T {
        let pos = self.entries[index].pos as usize;
        let last = self.heap.len() - 1;
        if pos != last {
            let moved = self.heap[last] as usize;
            self.place(pos, moved);
        }
        self.heap.pop();
        if pos < self.heap.len() && !self.sift_up(pos) {
            self.sift_down(pos);
        }
        let entry = &mut self.entries[index];
        entry.pos = NOT_QUEUED;
        let value = entry.value.take().expect("a queued entry holds a value");
        entry.generation = entry.generation.wrapping_add(1);
        // A slot whose generation wraps is retired: its old ids stay stale.
        if entry.generation != 0 {
            self.free.push(index as u32);
        }
        value
    }

    fn key(&self, pos: usize) -> (u64, u64) {
        let entry = &self.entries[self.heap[pos] as usize];
        (entry.deadline, entry.seq)
    }

    fn place(&mut self, pos: usize, index: usize) {
        self.heap[pos] = index as u32;
        self.entries[index].pos = pos as u32;
    }

    fn swap(&mut self, a: usize, b: usize) {
        let (ia, ib) = (self.heap[a] as usize, self.heap[b] as usize);
        self.place(a, ib);
        self.place(b, ia);
    }

    /// Whether the entry at `pos` moved up.
    fn sift_up(&mut self, mut pos: usize) -> bool {
        let start = pos;
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.key(pos) >= self.key(parent) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
        pos != start
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                return;
            }
            let right = left + 1;
            let child = if right < len && self.key(right) < self.key(left) {
                right
            } else {
                left
            };
            if self.key(child) >= self.key(pos) {
                return;
            }
            self.swap(pos, child);
            pos = child;
        }
    }
}

// ------------------------------------------------------- a loop's timers

/// What a heap entry is.
enum Pending {
    /// A connection's timer, in that connection's list.
    Conn {
        conn_id: u64,
        prev: TimerId,
        next: TimerId,
        callback: ConnTimerFn,
    },
    /// `loop_timers[index]` of the loop.
    Loop { index: usize },
}

/// All timers of one loop.
struct LoopTimers {
    loop_index: u8,
    started: Instant,
    heap: TimerHeap<Pending>,
    loop_timers: Vec<LoopTimer>,
}

thread_local! {
    static CURRENT: RefCell<Option<LoopTimers>> = const { RefCell::new(None) };
}

/// The loop thread's timers, installed for as long as this lives.
pub(crate) struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        // Taken out first: dropping callbacks may run user code (a Rust
        // closure's captures), which must not find the thread-local borrowed.
        let timers = CURRENT.with(|c| c.borrow_mut().take());
        drop(timers);
    }
}

/// Installs the timers of loop `loop_index` on this thread, with its
/// clock and its loop timers, each first due one interval from now.
pub(crate) fn install(loop_index: u8, started: Instant, loop_timers: &[LoopTimer]) -> Installed {
    let mut heap = TimerHeap::new();
    let now = now_ms(started);
    for (index, timer) in loop_timers.iter().enumerate() {
        heap.insert(
            now.saturating_add(timer.interval_ms),
            Pending::Loop { index },
        );
    }
    let timers = LoopTimers {
        loop_index,
        started,
        heap,
        loop_timers: loop_timers.to_vec(),
    };
    let old = CURRENT.with(|c| c.borrow_mut().replace(timers));
    drop(old);
    Installed(())
}

/// The nearest deadline of this thread's loop (ms since its start).
pub(crate) fn next_deadline() -> Option<u64> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|t| t.heap.next_deadline()))
}

/// A timer that is due, taken out of the heap.
pub(crate) enum Due {
    Conn(FiredConnTimer),
    Loop(LoopTimerFn),
}

/// A connection timer that is due: run it with `run` once the connection
/// is found (by `conn_id`).
pub(crate) struct FiredConnTimer {
    pub(crate) conn_id: u64,
    id: TimerId,
    /// Its successor in the connection's list, if it was the list's head.
    new_head: Option<TimerId>,
    callback: ConnTimerFn,
}

impl FiredConnTimer {
    /// Takes the timer off the connection's list and runs its callback.
    pub(crate) fn run(self, conn: &mut Conn) {
        if let Some(next) = self.new_head {
            conn.timers = next;
        }
        (self.callback)(conn, self.id);
    }
}

/// The next timer due at `now` on this thread's loop, taken out of the
/// heap. A loop timer is queued again for its next period while
/// `periodic` holds; once the loop stops (`periodic` false) it is dropped.
pub(crate) fn pop_due(now: u64, periodic: bool) -> Option<Due> {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let timers = current.as_mut()?;
        loop {
            let (id, deadline, pending) = timers.heap.pop_due(now)?;
            match pending {
                Pending::Loop { index } => {
                    if !periodic {
                        continue;
                    }
                    let timer = &timers.loop_timers[index];
                    let callback = timer.callback.clone();
                    let next = next_periodic(deadline, timer.interval_ms, now);
                    timers.heap.insert(next, Pending::Loop { index });
                    return Some(Due::Loop(callback));
                }
                Pending::Conn {
                    conn_id,
                    prev,
                    next,
                    callback,
                } => {
                    let new_head = unlink(&mut timers.heap, prev, next);
                    return Some(Due::Conn(FiredConnTimer {
                        conn_id,
                        id,
                        new_head,
                        callback,
                    }));
                }
            }
        }
    })
}

/// Joins a removed timer's neighbours in its connection's list; gives the
/// list's new head if the timer was the head.
fn unlink(heap: &mut TimerHeap<Pending>, prev: TimerId, next: TimerId) -> Option<TimerId> {
    if let Some(Pending::Conn { prev: p, .. }) = heap.get_mut(next) {
        *p = prev;
    }
    if let Some(Pending::Conn { next: n, .. }) = heap.get_mut(prev) {
        *n = next;
        return None;
    }
    Some(next)
}

/// Runs `f` on this thread's timers if they are those of `conn`'s loop.
fn with_loop_of<R>(conn: &Conn, f: impl FnOnce(&mut LoopTimers) -> Result<R>) -> Result<R> {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        match current.as_mut() {
            Some(timers) if u64::from(timers.loop_index) == conn.id() >> ID_LOOP_SHIFT => f(timers),
            _ => Err(Error::wrong_state(
                "connection timers are set, reset and cancelled on the connection's own loop \
                 thread, in a callback or job given the connection",
            )),
        }
    })
}

fn not_pending(id: TimerId) -> Error {
    Error::invalid(format!(
        "timer {id} is not pending on this connection (it has run, was cancelled, or was \
         never set on it)"
    ))
}

/// Cancels every timer of a connection that is closing, before its
/// on_close: none runs after that, and none can be set any more.
pub(crate) fn close_conn_timers(conn: &mut Conn) {
    conn.timers_closed = true;
    if conn.timers == 0 {
        return;
    }
    let mut callbacks = Vec::new();
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let Some(timers) = current.as_mut() else {
            return;
        };
        let mut id = conn.timers;
        while let Some(Pending::Conn { next, callback, .. }) = timers.heap.remove(id) {
            callbacks.push(callback);
            id = next;
        }
    });
    conn.timers = 0;
    // Dropped outside the borrow (see Installed).
    drop(callbacks);
}

impl Conn {
    /// Arms a one-shot timer: `callback` runs once on this connection's
    /// loop, with the connection, after `delay_ms` milliseconds (never
    /// sooner; typically within a millisecond or two after; a delay of 0
    /// runs it on the loop's next turn, never from inside this call; a
    /// delay too large to reach never fires). Returns its id (never 0).
    /// Cancelled, without running, when the connection closes (before
    /// on_close). Fails (and `callback` never runs) when called off the
    /// connection's loop thread (WrongState) or once the connection is
    /// closing (Closed: after `close`, in on_close).
    pub fn set_timer(
        &mut self,
        delay_ms: u64,
        callback: impl FnOnce(&mut Conn, TimerId) + 'static,
    ) -> Result<TimerId> {
        self.check_timers_open()?;
        let conn_id = self.id();
        let head = self.timers;
        let id = with_loop_of(self, |timers| {
            let deadline = deadline_after(timers.started, delay_ms);
            let pending = Pending::Conn {
                conn_id,
                prev: 0,
                next: head,
                callback: Box::new(callback),
            };
            let id = timers.heap.insert(deadline, pending).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    "no room for another timer on this loop (2^32 - 1 timers)",
                )
            })?;
            if let Some(Pending::Conn { prev, .. }) = timers.heap.get_mut(head) {
                *prev = id;
            }
            Ok(id)
        })?;
        self.timers = id;
        Ok(id)
    }

    /// Re-arms pending timer `id` of this connection to run `delay_ms`
    /// from now (same callback, same id), as if set now. InvalidArgument
    /// if it is not pending on this connection (it has run, was cancelled,
    /// or is not its).
    pub fn reset_timer(&mut self, id: TimerId, delay_ms: u64) -> Result<()> {
        self.check_timers_open()?;
        let conn_id = self.id();
        with_loop_of(self, |timers| {
            match timers.heap.get(id) {
                Some(Pending::Conn { conn_id: owner, .. }) if *owner == conn_id => {}
                _ => return Err(not_pending(id)),
            }
            let deadline = deadline_after(timers.started, delay_ms);
            timers.heap.reschedule(id, deadline);
            Ok(())
        })
    }

    /// Cancels pending timer `id` of this connection: its callback will not
    /// run. InvalidArgument if it is not pending on this connection (it has
    /// run or is running, was cancelled, or is not its): nothing changed.
    pub fn cancel_timer(&mut self, id: TimerId) -> Result<()> {
        let conn_id = self.id();
        let (new_head, callback) = with_loop_of(self, |timers| {
            match timers.heap.get(id) {
                Some(Pending::Conn { conn_id: owner, .. }) if *owner == conn_id => {}
                _ => return Err(not_pending(id)),
            }
            let Some(Pending::Conn {
                prev,
                next,
                callback,
                ..
            }) = timers.heap.remove(id)
            else {
                return Err(not_pending(id));
            };
            Ok((unlink(&mut timers.heap, prev, next), callback))
        })?;
        if let Some(next) = new_head {
            self.timers = next;
        }
        // Dropped outside the borrow (see Installed).
        drop(callback);
        Ok(())
    }

    /// Whether the connection has a timer pending.
    pub fn has_timers(&self) -> bool {
        self.timers != 0
    }

    fn check_timers_open(&self) -> Result<()> {
        if self.timers_closed || self.st.close_requested || self.st.broken || self.st.lingering {
            return Err(Error::new(
                ErrorKind::Closed,
                "the connection is closing: no timer can be set on it",
            ));
        }
        Ok(())
    }
}

/// The deadline of a timer set now with `delay_ms` (see the module doc).
fn deadline_after(started: Instant, delay_ms: u64) -> u64 {
    now_ms(started).saturating_add(1).saturating_add(delay_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops everything due at `now`.
    fn drain(heap: &mut TimerHeap<u32>, now: u64) -> Vec<u32> {
        std::iter::from_fn(|| heap.pop_due(now).map(|(_, _, v)| v)).collect()
    }

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let mut heap = TimerHeap::new();
        for (i, deadline) in [50u64, 10, 30, 10, 20, 50, 10].iter().enumerate() {
            heap.insert(*deadline, i as u32).unwrap();
        }
        assert_eq!(heap.next_deadline(), Some(10));
        assert_eq!(drain(&mut heap, 9), Vec::<u32>::new());
        assert_eq!(drain(&mut heap, 10), vec![1, 3, 6]);
        assert_eq!(drain(&mut heap, 100), vec![4, 2, 0, 5]);
        assert_eq!(heap.len(), 0);
        assert_eq!(heap.next_deadline(), None);
    }

    #[test]
    fn cancel_and_reschedule_keep_the_heap_ordered() {
        let mut heap = TimerHeap::new();
        let ids: Vec<_> = (0..100u32)
            .map(|i| heap.insert(u64::from((i * 37) % 101), i).unwrap())
            .collect();
        // Cancel every third, move every fifth far ahead.
        for (i, id) in ids.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(heap.remove(*id), Some(i as u32));
                assert_eq!(heap.remove(*id), None, "a second cancel finds nothing");
                assert!(!heap.reschedule(*id, 5));
            } else if i % 5 == 0 {
                assert!(heap.reschedule(*id, 1000 + i as u64));
            }
        }
        let mut last = (0, 0);
        let mut seen = 0;
        while let Some((id, deadline, value)) = heap.pop_due(u64::MAX) {
            let i = value as usize;
            assert_ne!(i % 3, 0, "cancelled timer {i} ran");
            let want = if i % 5 == 0 {
                1000 + i as u64
            } else {
                ((i * 37) % 101) as u64
            };
            assert_eq!(deadline, want);
            assert!(deadline >= last.0, "out of order");
            last = (deadline, value);
            assert_eq!(heap.get(id), None, "a popped timer is no longer pending");
            seen += 1;
        }
        assert_eq!(seen, 100 - 34);
    }

    /// A re-armed timer counts as set at that moment: behind timers set
    /// before with the same deadline.
    #[test]
    fn reschedule_goes_behind_equal_deadlines() {
        let mut heap = TimerHeap::new();
        let a = heap.insert(10, 0).unwrap();
        heap.insert(10, 1).unwrap();
        heap.insert(10, 2).unwrap();
        assert!(heap.reschedule(a, 10));
        assert_eq!(drain(&mut heap, 10), vec![1, 2, 0]);
    }

    #[test]
    fn ids_are_never_zero_and_never_repeat() {
        let mut heap = TimerHeap::new();
        let mut seen = std::collections::HashSet::new();
        for round in 0..50 {
            let id = heap.insert(round, 0).unwrap();
            assert_ne!(id, 0);
            assert!(seen.insert(id), "id {id:#x} given twice");
            if round % 2 == 0 {
                heap.remove(id);
            } else {
                heap.pop_due(u64::MAX);
            }
        }
        // One slot was reused throughout, with a new generation each time.
        assert_eq!(heap.entries.len(), 1);
        // A slot whose generation would wrap is retired, not reused.
        heap.entries[0].generation = u32::MAX;
        let last = heap.insert(1, 0).unwrap();
        heap.remove(last);
        let next = heap.insert(1, 0).unwrap();
        assert_ne!(next & u64::from(u32::MAX), 0, "the wrapped slot was reused");
        assert_eq!(heap.get(last), None);
        assert_eq!(heap.get(0), None);
    }

    /// Thousands of timers with interleaved cancels: the heap property
    /// holds (everything pops in order) and positions stay consistent.
    #[test]
    fn many_timers_stay_consistent() {
        let mut heap = TimerHeap::new();
        let mut live = Vec::new();
        let mut x: u64 = 12345;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u32 {
            live.push(heap.insert(rand() % 5000, i).unwrap());
            if rand() % 3 == 0 {
                let victim = live.swap_remove((rand() % live.len() as u64) as usize);
                assert!(heap.remove(victim).is_some());
            }
            if rand() % 7 == 0 {
                let id = live[(rand() % live.len() as u64) as usize];
                assert!(heap.reschedule(id, rand() % 5000));
            }
        }
        for (pos, &index) in heap.heap.iter().enumerate() {
            assert_eq!(heap.entries[index as usize].pos as usize, pos);
        }
        assert_eq!(heap.len(), live.len());
        let mut last = (0, 0);
        while let Some((id, deadline, _)) = heap.pop_due(u64::MAX) {
            let seq = heap.entries[(id & 0xffff_ffff) as usize].seq;
            assert!((deadline, seq) >= last);
            last = (deadline, seq);
        }
    }

    #[test]
    fn periodic_deadlines_do_not_drift_and_skip_missed_periods() {
        // On time or a little late: the next period, from the deadline.
        assert_eq!(next_periodic(100, 20, 100), 120);
        assert_eq!(next_periodic(100, 20, 119), 120);
        // Exactly at the next deadline: that one has passed too.
        assert_eq!(next_periodic(100, 20, 120), 140);
        // Far behind (the loop was busy): the missed periods are skipped,
        // the grid is kept.
        assert_eq!(next_periodic(100, 20, 175), 180);
        assert_eq!(next_periodic(100, 20, 180), 200);
        // A run of late callbacks never moves the grid.
        let mut deadline = 0;
        for k in 1..=1000u64 {
            let late_now = deadline + 7; // each callback runs 7 ms late
            deadline = next_periodic(deadline, 10, late_now);
            assert_eq!(deadline, 10 * k);
        }
        // Huge intervals saturate instead of overflowing.
        assert_eq!(next_periodic(u64::MAX - 5, 10, 0), u64::MAX);
        assert_eq!(next_periodic(5, u64::MAX, 10), u64::MAX);
    }

    #[test]
    fn a_zero_interval_is_refused() {
        assert!(LoopTimer::new(0, Arc::new(|_, _| {})).is_err());
        assert!(LoopTimer::new(1, Arc::new(|_, _| {})).is_ok());
    }

    fn conn(id: u64) -> Conn {
        let (socket, _peer) =
            socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        let addr = socket2::SockAddr::unix("").unwrap();
        Conn::new(socket, &addr, id, 1 << 20, 0)
    }

    /// Runs every connection timer due at `now` with its connection (the
    /// loop's part of run_timers), giving the order they ran in.
    fn run_due(conns: &mut [Conn], now: u64) -> Vec<(u64, TimerId)> {
        let mut ran = Vec::new();
        while let Some(due) = pop_due(now, true) {
            let Due::Conn(fired) = due else { continue };
            let conn = conns.iter_mut().find(|c| c.id() == fired.conn_id).unwrap();
            let id = fired.id;
            fired.run(conn);
            ran.push((conn.id(), id));
        }
        ran
    }

    /// Each connection's list of timers stays consistent through sets,
    /// cancels (head, middle, tail), firing and close; ids of another
    /// connection are refused; nothing can be set once closing.
    #[test]
    fn connection_timer_lists() {
        let _installed = install(0, Instant::now(), &[]);
        let mut conns = vec![conn(1), conn(2)];
        let set = |conn: &mut Conn, delay| conn.set_timer(delay, |_, _| {}).unwrap();
        let a: Vec<_> = (0..5).map(|d| set(&mut conns[0], 100 + d)).collect();
        let b = set(&mut conns[1], 100);
        // Another connection's id is not this one's.
        assert_eq!(
            conns[0].cancel_timer(b).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(conns[1].reset_timer(a[0], 1).is_err());
        // Cancel the newest (the list's head), one in the middle, the oldest.
        conns[0].cancel_timer(a[4]).unwrap();
        conns[0].cancel_timer(a[2]).unwrap();
        conns[0].cancel_timer(a[0]).unwrap();
        assert!(conns[0].cancel_timer(a[0]).is_err());
        // a[3] moves behind a[1] and b.
        conns[0].reset_timer(a[3], 150).unwrap();
        let ran = run_due(&mut conns, u64::MAX / 2);
        assert_eq!(ran, vec![(2, b), (1, a[1]), (1, a[3])]);
        assert!(!conns[0].has_timers() && !conns[1].has_timers());
        // Close cancels what is left, and nothing more can be set.
        let left: Vec<_> = (0..3).map(|d| set(&mut conns[0], d)).collect();
        close_conn_timers(&mut conns[0]);
        assert!(!conns[0].has_timers());
        assert!(left.iter().all(|id| conns[0].cancel_timer(*id).is_err()));
        assert_eq!(
            conns[0].set_timer(1, |_, _| {}).unwrap_err().kind(),
            ErrorKind::Closed
        );
        assert_eq!(run_due(&mut conns, u64::MAX / 2), vec![]);
        assert_eq!(next_deadline(), None);
    }

    /// Off a loop thread, or on another loop's, timers are refused.
    #[test]
    fn timers_belong_to_the_connection_s_loop() {
        let mut c = conn(1 << ID_LOOP_SHIFT);
        assert_eq!(
            c.set_timer(1, |_, _| {}).unwrap_err().kind(),
            ErrorKind::WrongState
        );
        let _installed = install(0, Instant::now(), &[]);
        assert_eq!(
            c.set_timer(1, |_, _| {}).unwrap_err().kind(),
            ErrorKind::WrongState
        );
        assert_eq!(c.cancel_timer(1).unwrap_err().kind(), ErrorKind::WrongState);
        let _other = install(1, Instant::now(), &[]);
        assert!(c.set_timer(1, |_, _| {}).is_ok());
    }

    /// A loop timer that runs late is queued again on its grid (from its
    /// deadline, skipping what was missed), and dropped once the loop
    /// stops.
    #[test]
    fn loop_timers_keep_their_grid() {
        let timer = LoopTimer::new(10, Arc::new(|_, _| {})).unwrap();
        let started = Instant::now() - std::time::Duration::from_secs(1);
        let _installed = install(0, started, &[timer]);
        let first = next_deadline().unwrap();
        assert!((1010..1100).contains(&first), "{first}");
        assert!(pop_due(first - 1, true).is_none());
        // 7 ms late: next at first + 10.
        assert!(matches!(pop_due(first + 7, true), Some(Due::Loop(_))));
        assert_eq!(next_deadline(), Some(first + 10));
        // 35 ms late: the missed periods are skipped, the grid kept.
        assert!(matches!(pop_due(first + 45, true), Some(Due::Loop(_))));
        assert_eq!(next_deadline(), Some(first + 50));
        assert!(pop_due(first + 45, true).is_none());
        // Stopping: due, but dropped instead of run.
        assert!(pop_due(first + 50, false).is_none());
        assert_eq!(next_deadline(), None);
    }
}
