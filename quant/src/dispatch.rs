//! Which instruction set the kernels use: detected once at run time, cached, overridable.
//!
//! [`Isa::current`] is what [`crate::dot`] and [`crate::gemm`] use when no instruction set is
//! named. It is decided once per process: the `PASSUNTIL_ISA` environment variable
//! (`scalar`, `avx2`, `avx512` or `neon`) if set, otherwise the best the CPU has. Tests and
//! benches pin a path by passing an [`Isa`] to the `*_with` functions, or for the whole process
//! with [`Isa::set_current`].
//!
//! Every path gives bitwise the same results (see [`crate::dot`]); the choice only changes speed.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust: the reference every other path is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Haswell and later).
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL and VNNI (Ice Lake, Zen 4 and later): integer dot
    /// products with `vpdpbusd`/`vpdpwssd`, float kernels on 512-bit vectors.
    Avx512,
    /// AArch64 NEON (Advanced SIMD, present on every AArch64 CPU).
    Neon,
}

/// A name that is not an instruction set, or one this CPU lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IsaError {
    /// Not one of `scalar`, `avx2`, `avx512`, `neon`.
    #[error("unknown instruction set {0:?} (expected scalar, avx2, avx512 or neon)")]
    Unknown(String),
    /// Known, but this CPU (or this build's target) does not have it.
    #[error("this CPU does not support {0} (it has: {1})")]
    Unavailable(&'static str, String),
}

/// The environment variable that overrides detection.
pub const ISA_ENV: &str = "PASSUNTIL_ISA";

const UNSET: u8 = u8::MAX;
static CURRENT: AtomicU8 = AtomicU8::new(UNSET);

impl Isa {
    /// Every instruction set, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Its lower-case name, as `PASSUNTIL_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a name (case-insensitive) and checks that this CPU has it.
    pub fn parse(name: &str) -> Result<Isa, IsaError> {
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| IsaError::Unknown(name.to_string()))?;
        isa.ensure_available()?;
        Ok(isa)
    }

    /// An error naming what this CPU has, unless it can run this path.
    pub fn ensure_available(self) -> Result<(), IsaError> {
        if self.is_available() {
            return Ok(());
        }
        let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        Err(IsaError::Unavailable(self.name(), have.join(", ")))
    }

    /// Whether this CPU (and this build's target) can run this path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::arch::x86_64::Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::arch::x86_64::Avx512::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::arch::aarch64::Neon::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU can run, slowest first (always starts with [`Isa::Scalar`]).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest path this CPU can run.
    pub fn best() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    /// The `PASSUNTIL_ISA` override, if set: an error if it names an unknown set or one this
    /// CPU lacks. Binaries call this at start-up to report a bad value.
    pub fn from_env() -> Result<Option<Isa>, IsaError> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.trim().is_empty() => Isa::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The path the kernels use when none is named: decided on first use from
    /// `PASSUNTIL_ISA` or detection, then cached. A bad `PASSUNTIL_ISA` is reported on stderr
    /// once and detection is used instead.
    pub fn current() -> Isa {
        let v = CURRENT.load(Ordering::Relaxed);
        if v != UNSET {
            return Isa::ALL[v as usize];
        }
        let isa = match Isa::from_env() {
            Ok(Some(isa)) => isa,
            Ok(None) => Isa::best(),
            Err(e) => {
                eprintln!("passuntil: ignoring {ISA_ENV}: {e}");
                Isa::best()
            }
        };
        // Racing first calls decide the same value; whichever store wins is correct.
        let _ = CURRENT.compare_exchange(UNSET, isa as u8, Ordering::Relaxed, Ordering::Relaxed);
        Isa::ALL[CURRENT.load(Ordering::Relaxed) as usize]
    }

    /// Pins the path used when none is named, for the whole process.
    pub fn set_current(isa: Isa) -> Result<(), IsaError> {
        isa.ensure_available()?;
        CURRENT.store(isa as u8, Ordering::Relaxed);
        Ok(())
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_is_an_error() {
        assert_eq!(Isa::parse("Scalar"), Ok(Isa::Scalar));
        assert!(matches!(Isa::parse("sse9"), Err(IsaError::Unknown(_))));
        for isa in Isa::ALL {
            match Isa::parse(isa.name()) {
                Ok(i) => assert_eq!(i, isa),
                Err(IsaError::Unavailable(n, _)) => {
                    assert_eq!(n, isa.name());
                    assert!(!isa.is_available());
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(Isa::available()[0], Isa::Scalar);
        assert!(Isa::best().is_available());
    }
}
