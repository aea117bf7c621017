//! Parallel steps for the kernels: a [`Team`] of threads that wait for work by spinning, or
//! rayon's pool when no team is installed.
//!
//! Decoding one sequence runs about five parallel steps per layer (the projections, attention,
//! the output projection, the feed-forward pair, the down projection), each of tens of
//! microseconds. A rayon worker that finds no work yields to the OS and soon sleeps; handing it
//! the next step then costs a wake-up, several microseconds on a virtual machine, which is
//! paid on every step and is a large share of a step this short. A team's helpers instead spin
//! on a counter (with the CPU's pause hint) for a while after each step, so the next one
//! starts on every thread at once, and only park once they have been idle for
//! [`SPIN_FOR`]. Work items are claimed one at a time from a shared counter by every thread
//! of the team, the caller included.
//!
//! Which thread runs an item never changes what the item computes, so results are bitwise the
//! same on a team, on rayon's pool or on one thread. A step started inside an item (a nested
//! step) runs on the thread that started it.
//!
//! ```
//! use quant::par::{for_each, Team};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! let team = Team::new(2)?;
//! let sum = AtomicUsize::new(0);
//! team.install(|| for_each(100, |i| {
//!     sum.fetch_add(i, Ordering::Relaxed);
//! }));
//! assert_eq!(sum.into_inner(), 4950);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long an idle helper waits for the next step before it parks: well over the gaps
/// between the steps of a forward pass and a single sequence's draw between passes.
pub const SPIN_FOR: Duration = Duration::from_micros(200);

/// How long a wait spins on the CPU alone before it also yields to other threads at every
/// turn (so that a thread it waits for, preempted on a busy machine, gets to run).
const YIELD_AFTER: Duration = Duration::from_micros(50);

/// One turn of a wait that began at `since`: the CPU's pause hint, and after [`YIELD_AFTER`]
/// a yield to the OS. Returns the time waited, checked every 64 turns (else zero).
#[inline]
fn pause(turns: &mut u32, since: Instant) -> Duration {
    *turns = turns.wrapping_add(1);
    if !turns.is_multiple_of(64) {
        std::hint::spin_loop();
        return Duration::ZERO;
    }
    let waited = since.elapsed();
    match waited >= YIELD_AFTER {
        true => std::thread::yield_now(),
        false => std::hint::spin_loop(),
    }
    waited
}

/// A step's work: `n` items, claimed from `next`, `done` counting the finished ones.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync + 'a),
    n: usize,
    /// Threads that share the items.
    threads: usize,
    next: Line<AtomicUsize>,
    done: Line<AtomicUsize>,
    /// The first panic of an item, to be raised again by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Claims and runs runs of items until none is left. A claim takes half of a thread's
    /// fair share of what is left (at least one item), so that each thread works through long
    /// runs of neighbouring items (weights that lie one after another stream from memory
    /// best that way) and the last, short claims even out the threads' finishing times.
    fn work(&self) {
        let mut cur = self.next.load(Relaxed);
        loop {
            if cur >= self.n {
                return;
            }
            let take = ((self.n - cur) / (2 * self.threads)).max(1);
            match self
                .next
                .compare_exchange_weak(cur, cur + take, Relaxed, Relaxed)
            {
                Ok(_) => {}
                Err(now) => {
                    cur = now;
                    continue;
                }
            }
            for i in cur..cur + take {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| (self.f)(i))) {
                    let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                    match first.is_none() {
                        true => *first = Some(p),
                        // Not dropped: a payload's drop may itself panic, and nothing may
                        // unwind out of a step before it has ended.
                        false => std::mem::forget(p),
                    }
                }
            }
            self.done.fetch_add(take, Release);
            cur = self.next.load(Relaxed);
        }
    }
}

/// A value on a cache line of its own.
#[repr(align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the caller and the helpers share.
struct Shared {
    /// Held by the caller of a step: one step at a time, whichever thread starts it.
    caller: Mutex<()>,
    /// Bumped for every step.
    generation: AtomicU64,
    /// The current step's job (null between steps). It points into the caller's stack frame,
    /// which does not return before `inside` is back to zero with the pointer cleared.
    job: AtomicPtr<Job<'static>>,
    /// Helpers between reading `job` and being done with it.
    inside: AtomicUsize,
    /// Helpers parked, or about to park, on `wake`.
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

/// Threads for parallel steps: the caller of [`Team::install`] and `threads − 1` helpers.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

thread_local! {
    /// The team installed on this thread, if any.
    static TEAM: Cell<Option<*const Team>> = const { Cell::new(None) };
    /// Whether this thread is running an item of a step (nested steps then run here).
    static IN_STEP: Cell<bool> = const { Cell::new(false) };
}

impl Team {
    /// A team of `threads` threads (at least one): this many minus one helpers are started.
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            caller: Mutex::new(()),
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            inside: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut team = Team {
            shared,
            helpers: Vec::new(),
        };
        for h in 1..threads.max(1) {
            let shared = Arc::clone(&team.shared);
            let handle = std::thread::Builder::new()
                .name(format!("passuntil-team-{h}"))
                .spawn(move || helper(&shared))?;
            team.helpers.push(handle);
        }
        Ok(team)
    }

    /// Threads of the team, the caller's included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f` on this thread with the team installed: the steps it starts ([`for_each`],
    /// [`for_each_chunk`]) run on the team.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<*const Team>);
        impl Drop for Restore {
            fn drop(&mut self) {
                TEAM.with(|t| t.set(self.0));
            }
        }
        let _restore = Restore(TEAM.with(|t| t.replace(Some(self as *const Team))));
        f()
    }

    /// Runs items `0..n` of `f` on every thread of the team; returns when all have ended.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            f,
            n,
            threads: self.threads(),
            next: Line(AtomicUsize::new(0)),
            done: Line(AtomicUsize::new(0)),
            panic: Mutex::new(None),
        };
        let s = &*self.shared;
        let _one_step = s.caller.lock().unwrap_or_else(PoisonError::into_inner);
        // The helpers see the job through a pointer without its lifetime: this function does
        // not return (nor unwind: items' panics are caught) before the pointer is cleared and
        // no helper is left inside, below.
        s.job
            .store((&job as *const Job<'_>).cast_mut().cast(), SeqCst);
        s.generation.fetch_add(1, SeqCst);
        if s.parked.load(SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        IN_STEP.with(|f| f.set(true));
        job.work();
        IN_STEP.with(|f| f.set(false));
        let (since, mut turns) = (Instant::now(), 0);
        while job.done.load(Acquire) < n {
            pause(&mut turns, since);
        }
        s.job.store(std::ptr::null_mut(), SeqCst);
        while s.inside.load(SeqCst) != 0 {
            pause(&mut turns, since);
        }
        let panic = job
            .panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _guard = self
                .shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            // A helper's own code does not panic (items' panics are caught).
            let _ = h.join();
        }
    }
}

/// A helper's loop: wait for a new generation (spinning, then parked), work on its job.
fn helper(s: &Shared) {
    IN_STEP.with(|f| f.set(true));
    let mut seen = 0;
    loop {
        let (idle, mut turns) = (Instant::now(), 0);
        loop {
            if s.stop.load(Relaxed) {
                return;
            }
            if s.generation.load(Acquire) != seen {
                break;
            }
            if pause(&mut turns, idle) >= SPIN_FOR {
                let guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
                s.parked.fetch_add(1, SeqCst);
                // Checked after announcing the park: a step started since then either is seen
                // here or finds `parked` set and notifies under the lock, which it can only
                // take once this thread waits.
                let mut guard = guard;
                while s.generation.load(SeqCst) == seen && !s.stop.load(SeqCst) {
                    guard = s.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
                }
                s.parked.fetch_sub(1, SeqCst);
                drop(guard);
            }
        }
        seen = s.generation.load(Acquire);
        s.inside.fetch_add(1, SeqCst);
        let job = s.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: a non-null pointer read while this helper is counted in `inside` is the
            // job of a step whose caller is still in `Team::run`: it clears the pointer, then
            // waits for `inside` to be zero before the job goes out of scope (all four
            // accesses sequentially consistent, so a helper that entered after that wait
            // began reads null).
            unsafe { (*job).work() };
        }
        s.inside.fetch_sub(1, SeqCst);
    }
}

/// Threads a step started here would use: the installed team's, one inside a step, else
/// rayon's.
pub fn current_threads() -> usize {
    if IN_STEP.with(Cell::get) {
        return 1;
    }
    match TEAM.with(Cell::get) {
        // SAFETY: the pointer was set by `Team::install`, whose borrow of the team lasts
        // until it restores the previous value, and this thread is inside that call.
        Some(t) => unsafe { (*t).threads() },
        None => rayon::current_num_threads(),
    }
}

/// Runs `f(i)` for `i` in `0..n` in parallel: on the installed team, here when called inside
/// an item of a step, else on rayon's pool. A single item runs here, as a plain call.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    if n == 1 || IN_STEP.with(Cell::get) {
        (0..n).for_each(f);
        return;
    }
    match TEAM.with(Cell::get) {
        // SAFETY: as in `current_threads`.
        Some(t) => unsafe { (*t).run(n, &f) },
        None => (0..n).into_par_iter().for_each(&f),
    }
}

/// Runs `f(i, chunk)` for each `size`-element chunk of `data` (the last may be shorter) in
/// parallel, as [`for_each`] does.
pub fn for_each_chunk<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let size = size.max(1);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(size), |i| {
        let start = i * size;
        let end = (start + size).min(len);
        // SAFETY: `base` points to `data`, borrowed mutably for this call, which returns only
        // once every item has ended; item `i` is run once and takes the elements
        // `start..end`, which no other item takes.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        f(i, chunk)
    });
}

/// [`for_each_chunk`] with a fallible `f`: the error of the first failing chunk (by index), if
/// any; every chunk is run either way.
pub fn try_for_each_chunk<T: Send, E: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let first: Mutex<Option<(usize, E)>> = Mutex::new(None);
    for_each_chunk(data, size, |i, chunk| {
        if let Err(e) = f(i, chunk) {
            let mut first = first.lock().unwrap_or_else(PoisonError::into_inner);
            if first.as_ref().is_none_or(|(j, _)| i < *j) {
                *first = Some((i, e));
            }
        }
    });
    match first.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// A pointer handed to other threads.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: used only by `for_each_chunk` to reach disjoint parts of a slice of `T: Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above: shared among the items, each of which takes its own elements.
unsafe impl<T: Send> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_on_a_team_nested_and_without_one() {
        for threads in [1, 2, 3] {
            let team = Team::new(threads).unwrap();
            assert_eq!(team.threads(), threads);
            for n in [0, 1, 2, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                team.install(|| {
                    assert_eq!(current_threads(), threads);
                    for_each(n, |i| {
                        hits[i].fetch_add(1, Relaxed);
                        // A step nested in a step of several items runs on this thread (one
                        // item alone runs on the caller, with the team still installed).
                        if n > 1 {
                            assert_eq!(current_threads(), 1);
                        }
                        let inner = AtomicUsize::new(0);
                        for_each(3, |_| {
                            inner.fetch_add(1, Relaxed);
                        });
                        assert_eq!(inner.into_inner(), 3);
                    })
                });
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1));
            }
            // Steps after the helpers have parked still run on them.
            std::thread::sleep(SPIN_FOR * 3);
            let mut data = vec![0usize; 101];
            team.install(|| for_each_chunk(&mut data, 10, |i, c| c.fill(i + 1)));
            assert!(data.iter().enumerate().all(|(j, &v)| v == j / 10 + 1));
        }
        // Without a team, on rayon's pool.
        let mut data = vec![0usize; 33];
        for_each_chunk(&mut data, 4, |i, c| c.fill(i));
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 4));
        // The first failing chunk's error, every chunk run.
        let team = Team::new(2).unwrap();
        let r = team.install(|| {
            try_for_each_chunk(&mut data, 4, |i, c| {
                c.fill(100);
                match i % 3 {
                    2 => Err(i),
                    _ => Ok(()),
                }
            })
        });
        assert_eq!(r, Err(2));
        assert!(data.iter().all(|&v| v == 100));
    }

    #[test]
    fn a_panicking_item_is_raised_by_the_caller_after_the_step() {
        let team = Team::new(2).unwrap();
        let done = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.install(|| {
                for_each(64, |i| {
                    if i == 40 {
                        panic!("item 40");
                    }
                    done.fetch_add(1, Relaxed);
                })
            })
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"item 40"));
        // Payloads that panic when dropped, from many items: the first is raised, the step
        // has ended (nothing left running on the helpers).
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                if !std::thread::panicking() {
                    panic!("dropped");
                }
            }
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.install(|| for_each(64, |_| std::panic::panic_any(Bomb)))
        }));
        let payload = r.unwrap_err();
        assert!(payload.is::<Bomb>());
        std::mem::forget(payload);
        assert_eq!(done.load(Relaxed), 63);
        // The team still works.
        let n = AtomicUsize::new(0);
        team.install(|| {
            for_each(10, |_| {
                n.fetch_add(1, Relaxed);
            })
        });
        assert_eq!(n.into_inner(), 10);
    }
}
