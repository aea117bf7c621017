//! Benchmarks of passuntil live in `benches/`; this library holds what they share.
//!
//! Run them with `cargo bench -p passuntil-benches -- <filter>`.
//!
//! Every bench measures with [`Clock`]: wall time, or with `PASSUNTIL_BENCH_CLOCK=cpu` the
//! process's CPU time.

use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;

/// Names the clock a bench measures with: `wall` (the default) or `cpu`.
pub const CLOCK_ENV: &str = "PASSUNTIL_BENCH_CLOCK";

/// Criterion's measurement, on the wall clock or on the process's CPU clock.
///
/// On a virtual machine whose host runs other guests, the hypervisor takes the CPU from the
/// guest for stretches of milliseconds (the `steal` column of `/proc/stat`); wall time then
/// varies by tens of percent from run to run, which hides the change an A/B comparison of a
/// kernel looks for. The kernel does not charge stolen time to a process
/// (`CONFIG_PARAVIRT_TIME_ACCOUNTING`), so the CPU clock leaves it out. It counts every
/// thread's time, helpers spinning between steps included: compare kernels on one thread
/// (`RAYON_NUM_THREADS=1`, `PASSUNTIL_BENCH_THREADS=1`), and quote throughput from the wall
/// clock.
pub struct Clock {
    cpu: bool,
    wall: WallTime,
}

impl Clock {
    /// The clock `PASSUNTIL_BENCH_CLOCK` names; wall time when unset. Panics on any other
    /// value, before a bench runs, rather than measure with a clock nobody asked for.
    pub fn from_env() -> Clock {
        let cpu = match std::env::var(CLOCK_ENV).as_deref() {
            Err(_) | Ok("wall") => false,
            Ok("cpu") => true,
            Ok(other) => panic!("{CLOCK_ENV}={other:?}: expected \"wall\" or \"cpu\""),
        };
        Clock {
            cpu,
            wall: WallTime,
        }
    }

    /// Whether this clock is the process's CPU time.
    pub fn is_cpu(&self) -> bool {
        self.cpu
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.cpu {
            "Clock(cpu)"
        } else {
            "Clock(wall)"
        })
    }
}

/// The process's CPU time so far (every thread, user and system).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant every Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where a measurement started, on the clock it is taken on.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The wall clock's instant.
    Wall(Instant),
    /// The process's CPU time.
    Cpu(Duration),
}

impl Measurement for Clock {
    type Intermediate = Start;
    type Value = Duration;

    fn start(&self) -> Start {
        match self.cpu {
            true => Start::Cpu(process_cpu_time()),
            false => Start::Wall(Instant::now()),
        }
    }

    fn end(&self, start: Start) -> Duration {
        match start {
            Start::Wall(t) => t.elapsed(),
            Start::Cpu(t) => process_cpu_time().saturating_sub(t),
        }
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds either way: wall time's formatter prints them.
        self.wall.formatter()
    }
}

/// Criterion configured with [`Clock::from_env`]; says on stderr when it is the CPU clock.
pub fn criterion() -> Criterion<Clock> {
    let clock = Clock::from_env();
    if clock.is_cpu() {
        eprintln!("{CLOCK_ENV}=cpu: times are the process's CPU time, every thread's");
    }
    Criterion::default().with_measurement(clock)
}

/// Deterministic, roughly Gaussian test data (`n` values), without a random-number crate.
pub fn gaussian_like(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (0..4).map(|_| next()).sum::<f32>() - 2.0)
        .collect()
}
