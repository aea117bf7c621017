//! A clear error, not a bare `Bus error`, when a mapped model file shrinks under us.
//!
//! GGUF files are memory-mapped and read in place. If another process truncates or rewrites
//! the file while it is mapped, touching a page past the new end raises SIGBUS, which kills the
//! process without a word. Copying the file at open would cost its size in memory (and network
//! filesystems are where it matters most); advisory locks do not stop a truncation. So each
//! mapping registers its address range here, and a SIGBUS handler installed once per process
//! checks the faulting address: inside a registered mapping it writes which file changed and
//! exits with status 74 (`EX_IOERR`), as nothing can be read from those pages any more;
//! anywhere else it restores the default action, so the fault kills the process as before.
//! Results already written (a run's `samples.jsonl` is appended line by line) stay intact.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings watched at once; past this, a mapping is simply not watched.
const SLOTS: usize = 64;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    /// The file's path, leaked for the process's lifetime (a handler may read it at any time).
    path: AtomicPtr<u8>,
    path_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    path: AtomicPtr::new(std::ptr::null_mut()),
    path_len: AtomicUsize::new(0),
};

static SLOTS_IN_USE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();

/// A watched mapping; dropping it stops the watch (before the mapping goes).
#[derive(Debug)]
pub(crate) struct Watch {
    slot: Option<usize>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            SLOTS_IN_USE[i].len.store(0, Ordering::SeqCst);
            SLOTS_IN_USE[i].start.store(0, Ordering::SeqCst);
        }
    }
}

/// Watches `bytes` (a mapping of `path`) until the returned guard is dropped.
pub(crate) fn watch(bytes: &[u8], path: &std::path::Path) -> Watch {
    if bytes.is_empty() {
        return Watch { slot: None };
    }
    INSTALL.call_once(install);
    let text: &'static [u8] = Box::leak(path.display().to_string().into_bytes().into_boxed_slice());
    for (i, s) in SLOTS_IN_USE.iter().enumerate() {
        // A slot is free while its start is 0; claim it by swapping in the start.
        if s.start
            .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            s.path.store(text.as_ptr().cast_mut(), Ordering::SeqCst);
            s.path_len.store(text.len(), Ordering::SeqCst);
            s.len.store(bytes.len(), Ordering::SeqCst);
            s.start.store(bytes.as_ptr() as usize, Ordering::SeqCst);
            return Watch { slot: Some(i) };
        }
    }
    Watch { slot: None }
}

fn install() {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler has the SA_SIGINFO
    // signature and only calls async-signal-safe functions (write, _exit, sigaction).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

extern "C" fn handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &SLOTS_IN_USE {
        let start = s.start.load(Ordering::SeqCst);
        let len = s.len.load(Ordering::SeqCst);
        if start == 0 || start == usize::MAX || addr < start || addr - start >= len {
            continue;
        }
        let path = s.path.load(Ordering::SeqCst);
        let path_len = s.path_len.load(Ordering::SeqCst);
        let say = |b: &[u8]| {
            // SAFETY: writes `b` to stderr; async-signal-safe.
            unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        };
        say(b"\nerror: the model file ");
        // SAFETY: `path` points at `path_len` leaked bytes that are never freed.
        say(unsafe { std::slice::from_raw_parts(path, path_len) });
        say(
            b" shrank while it was in use (truncated or rewritten by another process); \
              its data can no longer be read. Keep model files unchanged while passuntil \
              runs. Results written so far are intact.\n",
        );
        // SAFETY: ends the process without running anything else; async-signal-safe.
        unsafe { libc::_exit(74) };
    }
    // Not ours: the default action, taken when the faulting instruction runs again.
    // SAFETY: a zeroed sigaction with SIG_DFL restores the default; async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}
