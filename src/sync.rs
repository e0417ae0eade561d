//! The two ways the core keeps going after a panic in user code: locks
//! that ignore poison, and user code run with its panic caught and
//! reported through handle_error.
//!
//! Ignoring poison is sound here because no lock of the core is held while
//! user code runs, and every critical section is a push, a take, a swap or
//! one counter or flag step: a panic (an allocation failure, a bug) cannot
//! leave the data half-updated. Honouring poison instead would turn one
//! caught panic into a server whose every later call panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{panic_message, Error, ErrorKind};
use crate::handler::Handler;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// A panic on a worker thread, a loop or a forked child is reported
/// through handle_error, never passed on: the server and its other
/// requests go on.
pub(crate) fn report_panic(handler: &dyn Handler, panic: Box<dyn std::any::Any + Send>) {
    let what = panic_message(&*panic);
    let error = Error::new(
        ErrorKind::Panic,
        format!("internal error in a handler thread (panic caught): {what}"),
    );
    handler.handle_error(None, &error);
}

/// Runs `f`; a panic is caught and reported (see [`report_panic`]).
/// None if it panicked.
pub(crate) fn catch_reported<R>(handler: &dyn Handler, f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|panic| report_panic(handler, panic))
        .ok()
}
