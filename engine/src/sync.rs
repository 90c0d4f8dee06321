//! The one policy for poisoned locks: a lock whose holder panicked is taken
//! anyway.
//!
//! Every mutex in the engine guards bookkeeping (statuses, counters, caches
//! of prepared statements, the embedded server's handle) that a panicking
//! holder leaves consistent or merely stale; none guards an invariant a
//! half-done update could break. Refusing every later use — wasmtime's and
//! the standard library's default — would turn one bug into an engine that
//! stops serving. So every lock goes through [`lock`].

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if a holder panicked.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_anyway() {
        let shared = std::sync::Arc::new(Mutex::new(1));
        let holder = std::sync::Arc::clone(&shared);
        let _ = std::thread::spawn(move || {
            let _guard = lock(&holder);
            panic!("a holder panics");
        })
        .join();
        assert!(shared.is_poisoned());
        *lock(&shared) += 1;
        assert_eq!(*lock(&shared), 2);
    }
}
