//! Judges: whether a completion solves a problem.
//!
//! Text judges ([`judge_text`]) compare the completion with the problem's targets (exact,
//! normalized, contains, regex, numeric). Multiple choice is judged from the choices'
//! log-likelihoods ([`judge_choices`]). Code is judged by running it: [`Sandbox`] runs the
//! program with python3 in a subprocess with a wall-clock timeout and CPU-time, address-space,
//! file-size and process-count limits, in a fresh private temporary directory with a cleared
//! environment, without network (a new network namespace), and, when passuntil runs as root,
//! under an unprivileged uid of its own. The five verdicts are distinct. [`VerdictCache`] keeps
//! one verdict per (problem, completion).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tasks::{Check, Normalize, Problem, Prompt};

/// The outcome of judging one completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Correct.
    Pass,
    /// Wrong (for code: the tests failed or raised).
    Fail {
        /// Why, briefly (for code: the end of stderr).
        detail: String,
    },
    /// The program ran past its wall-clock or CPU-time limit.
    Timeout,
    /// The program died from a signal (segfault, abort, a limit other than time).
    Crash {
        /// The signal or cause.
        detail: String,
    },
    /// The sandbox itself failed; the completion was not judged.
    SandboxError {
        /// What failed.
        detail: String,
    },
}

impl Verdict {
    /// Whether this verdict counts as a success.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    fn fail(detail: impl Into<String>) -> Self {
        Verdict::Fail {
            detail: detail.into(),
        }
    }
}

/// Normalizes text for the normalized exact-match judge.
pub fn normalize(s: &str, opts: &Normalize) -> String {
    let mut t: String = s
        .chars()
        .filter(|c| {
            !(opts.strip_punctuation && (c.is_ascii_punctuation() || is_unicode_punctuation(*c)))
        })
        .collect();
    if opts.ignore_case {
        t = t.to_lowercase();
    }
    if opts.collapse_whitespace {
        t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    t
}

fn is_unicode_punctuation(c: char) -> bool {
    matches!(c, '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}' | '\u{3001}'..='\u{3003}' | '\u{00A1}' | '\u{00BF}' | '\u{00AB}' | '\u{00BB}')
}

/// The first number in `s` (`-1,234.5e3` style; thousands commas allowed).
pub fn first_number(s: &str) -> Option<f64> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
            .expect("valid pattern")
    });
    re.find(s)
        .and_then(|m| m.as_str().replace(',', "").parse().ok())
}

/// Judges a completion against a text check. Multiple choice and programs are judged by
/// [`judge_choices`] and [`Sandbox`]; passing them here is a [`Verdict::SandboxError`].
pub fn judge_text(check: &Check, completion: &str) -> Verdict {
    let ok = |b: bool, what: &str| {
        if b {
            Verdict::Pass
        } else {
            Verdict::fail(what)
        }
    };
    match check {
        Check::Exact { targets } => {
            let c = completion.trim();
            ok(
                targets.iter().any(|t| t.trim() == c),
                "no target matches exactly",
            )
        }
        Check::Normalized { targets, options } => {
            let c = normalize(completion, options);
            ok(
                targets.iter().any(|t| normalize(t, options) == c),
                "no target matches after normalization",
            )
        }
        Check::Contains { targets } => ok(
            targets.iter().any(|t| completion.contains(t.as_str())),
            "no target found",
        ),
        Check::Regex { pattern } => match regex::Regex::new(pattern) {
            Ok(re) => ok(re.is_match(completion), "pattern does not match"),
            Err(e) => Verdict::SandboxError {
                detail: format!("bad pattern: {e}"),
            },
        },
        Check::Numeric {
            target,
            abs_tol,
            rel_tol,
        } => match first_number(completion) {
            Some(v) => ok(
                (v - target).abs() <= abs_tol.max(rel_tol * target.abs()),
                "number out of tolerance",
            ),
            None => Verdict::fail("no number in the completion"),
        },
        Check::MultipleChoice { .. } | Check::Program { .. } => Verdict::SandboxError {
            detail: "multiple-choice and program checks are not text checks".into(),
        },
    }
}

/// Judges multiple choice from each choice's log-likelihood: the best choice (first on ties)
/// must have the highest score among the choices.
pub fn judge_choices(check: &Check, loglikelihoods: &[f64]) -> Verdict {
    let Check::MultipleChoice { choices, scores } = check else {
        return Verdict::SandboxError {
            detail: "not a multiple-choice check".into(),
        };
    };
    if loglikelihoods.len() != choices.len() || loglikelihoods.iter().any(|v| v.is_nan()) {
        return Verdict::SandboxError {
            detail: format!(
                "{} log-likelihoods for {} choices",
                loglikelihoods.len(),
                choices.len()
            ),
        };
    }
    let best = (0..loglikelihoods.len())
        .reduce(|b, i| {
            if loglikelihoods[i] > loglikelihoods[b] {
                i
            } else {
                b
            }
        })
        .unwrap_or(0);
    let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if scores[best] == top && top > 0.0 {
        Verdict::Pass
    } else {
        Verdict::fail(format!("chose {:?}", choices[best]))
    }
}

/// The program a HumanEval-style check runs: `prompt + completion + "\n" + test + "\n" +
/// "check(entry_point)"`.
pub fn program_source(problem: &Problem, completion: &str) -> Option<String> {
    let (Prompt::Text(prompt), Check::Program { test, entry_point }) =
        (&problem.prompt, &problem.check)
    else {
        return None;
    };
    Some(format!(
        "{prompt}{completion}\n{test}\ncheck({entry_point})\n"
    ))
}

/// Resource limits for one program run.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU seconds.
    pub cpu_seconds: u64,
    /// Address space, bytes.
    pub address_space: u64,
    /// Largest file it may write, bytes.
    pub file_size: u64,
    /// Processes (and threads) of the sandbox user.
    pub processes: u64,
    /// Output kept from stdout/stderr, bytes.
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(3),
            cpu_seconds: 3,
            address_space: 1 << 30,
            file_size: 16 << 20,
            processes: 64,
            output: 16 << 10,
        }
    }
}

/// How a [`Sandbox`] isolates programs on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Root: a new network namespace, and each run gets its own unprivileged uid (so the
    /// process limit applies per run, the user's files are out of reach, and everything the
    /// run started can be killed by uid afterwards).
    NetnsOwnUid,
    /// Not root: a new user and network namespace.
    UserNetns,
    /// The OS refuses new namespaces (some containers): limits, a private directory and a
    /// cleared environment still apply, but the program can reach the network. Reported by
    /// [`Sandbox::isolation`] so that runs record it.
    LimitsOnly,
}

/// Runs untrusted programs under limits; see the module docs.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The interpreter.
    pub python: PathBuf,
    /// Limits per run.
    pub limits: Limits,
    isolation: Isolation,
}

impl Sandbox {
    /// A sandbox with default limits. Fails (naming what is missing) if the tools it needs
    /// (`unshare`, `prlimit`, `setpriv` from util-linux; python3) cannot isolate a program here.
    pub fn new(limits: Limits) -> Result<Self, String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let isolation = if root {
            Isolation::NetnsOwnUid
        } else {
            Isolation::UserNetns
        };
        let s = Sandbox {
            python: PathBuf::from("python3"),
            limits,
            isolation,
        };
        match s.run("print('ok')") {
            (Verdict::Pass, out) if out.contains("ok") => Ok(s),
            (v, out) => Err(format!("the sandbox cannot run python3 here: {v:?} {out}")),
        }
    }

    /// How programs are isolated.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Runs a Python program; returns the verdict (exit 0 passes) and the captured output.
    pub fn run(&self, source: &str) -> (Verdict, String) {
        match self.try_run(source) {
            Ok(r) => r,
            Err(e) => (Verdict::SandboxError { detail: e }, String::new()),
        }
    }

    fn try_run(&self, source: &str) -> Result<(Verdict, String), String> {
        let l = &self.limits;
        let dir = tempfile::Builder::new()
            .prefix("passuntil-judge-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let prog = dir.path().join("prog.py");
        let uid = next_uid();
        std::fs::write(&prog, source).map_err(|e| format!("writing the program: {e}"))?;
        let mut cmd = Command::new(if self.isolation == Isolation::LimitsOnly {
            "prlimit"
        } else {
            "unshare"
        });
        match self.isolation {
            Isolation::LimitsOnly => {}
            Isolation::NetnsOwnUid => {
                std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
                    .and_then(|_| std::os::unix::fs::chown(&prog, Some(65534), Some(65534)))
                    .map_err(|e| format!("chown to nobody: {e}"))?;
                cmd.args([
                    "--net",
                    "--",
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--no-new-privs",
                ]);
                cmd.arg("prlimit");
            }
            Isolation::UserNetns => {
                cmd.args(["--net", "--map-root-user", "--", "prlimit"]);
            }
        }
        cmd.arg(format!("--cpu={}", l.cpu_seconds))
            .arg(format!("--as={}", l.address_space))
            .arg(format!("--fsize={}", l.file_size))
            .arg(format!("--nproc={}", l.processes))
            .arg("--core=0")
            .arg("--")
            .arg(&self.python)
            .args(["-I", "-B"])
            .arg(&prog)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning the sandbox: {e}"))?;
        let pgid = child.id();
        let cap = l.output;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                if let Some(mut r) = r {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let room = cap.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
                String::from_utf8_lossy(&kept).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let mut timed_out = false;
        let status = loop {
            match child.try_wait().map_err(|e| format!("waiting: {e}"))? {
                Some(s) => break s,
                None if start.elapsed() >= l.wall => {
                    timed_out = true;
                    kill_group(pgid);
                    let _ = child.kill();
                    break child.wait().map_err(|e| format!("waiting: {e}"))?;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        // Anything the program left running goes too: its process group, and in the root setup
        // every process of its own uid (which catches children that left the group).
        kill_group(pgid);
        if self.isolation == Isolation::NetnsOwnUid {
            let _ = Command::new("pkill")
                .args(["-KILL", "-U", &uid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().rev().take(3).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        use std::os::unix::process::ExitStatusExt;
        let verdict = if timed_out {
            Verdict::Timeout
        } else if let Some(sig) = status.signal() {
            match sig {
                // SIGXCPU / SIGKILL after the CPU limit.
                24 | 9 => Verdict::Timeout,
                _ => Verdict::Crash {
                    detail: format!("killed by signal {sig}"),
                },
            }
        } else if status.success() {
            Verdict::Pass
        } else if stderr.contains("setpriv:")
            || stderr.contains("unshare:")
            || stderr.contains("prlimit:")
        {
            Verdict::SandboxError { detail: tail }
        } else {
            Verdict::fail(tail)
        };
        Ok((verdict, format!("{stdout}{stderr}")))
    }
}

/// A uid no one else uses, one per run: 200000 + a process-wide counter (cycling through
/// 100000 ids), so concurrent runs never share a process budget.
fn next_uid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    200_000 + (std::process::id().wrapping_mul(7919).wrapping_add(n) % 100_000)
}

fn kill_group(pgid: u32) {
    // `kill -KILL -PGID` through the kill(1) binary keeps this crate free of unsafe code.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One verdict per (problem id, completion), shared between threads.
#[derive(Debug, Default)]
pub struct VerdictCache {
    map: Mutex<HashMap<[u8; 32], Verdict>>,
}

impl VerdictCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(problem: &str, completion: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((problem.len() as u64).to_le_bytes());
        h.update(problem.as_bytes());
        h.update(completion.as_bytes());
        h.finalize().into()
    }

    /// The cached verdict, or `judge()`'s, stored unless it is a sandbox error.
    pub fn get_or_judge(
        &self,
        problem: &str,
        completion: &str,
        judge: impl FnOnce() -> Verdict,
    ) -> Verdict {
        let k = Self::key(problem, completion);
        if let Some(v) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return v.clone();
        }
        let v = judge();
        if !matches!(v, Verdict::SandboxError { .. }) {
            self.map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, v.clone());
        }
        v
    }

    /// Number of cached verdicts.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_judges() {
        let ex = Check::Exact {
            targets: vec!["42".into()],
        };
        assert!(judge_text(&ex, " 42\n").passed());
        assert!(!judge_text(&ex, "42.").passed());
        let n = Check::Normalized {
            targets: vec!["Hello, World!".into()],
            options: Normalize::default(),
        };
        assert!(judge_text(&n, "  hello   world ").passed());
        let c = Check::Contains {
            targets: vec!["Paris".into()],
        };
        assert!(judge_text(&c, "It is Paris.").passed());
        let r = Check::Regex {
            pattern: r"^\s*\d{4}\b".into(),
        };
        assert!(judge_text(&r, " 1999 was").passed());
        assert!(!judge_text(&r, "in 1999").passed());
        let num = Check::Numeric {
            target: 1234.5,
            abs_tol: 0.01,
            rel_tol: 0.0,
        };
        assert!(judge_text(&num, "The answer is 1,234.5 units").passed());
        assert!(!judge_text(&num, "about 1235").passed());
        assert!(!judge_text(&num, "no idea").passed());
        assert_eq!(first_number("x = -.5e1"), Some(-5.0));
    }

    #[test]
    fn choices_by_loglikelihood() {
        let mc = Check::MultipleChoice {
            choices: vec!["a".into(), "b".into(), "c".into()],
            scores: vec![0.0, 1.0, 0.0],
        };
        assert!(judge_choices(&mc, &[-3.0, -1.0, -2.0]).passed());
        assert!(
            !judge_choices(&mc, &[-1.0, -1.0, -2.0]).passed(),
            "ties go to the first choice"
        );
        assert!(matches!(
            judge_choices(&mc, &[0.0]),
            Verdict::SandboxError { .. }
        ));
    }

    #[test]
    fn cache_keeps_one_verdict_per_completion() {
        let cache = VerdictCache::new();
        let mut calls = 0;
        for _ in 0..3 {
            cache.get_or_judge("p", "x", || {
                calls += 1;
                Verdict::Pass
            });
        }
        assert_eq!(calls, 1);
        assert_eq!(cache.len(), 1);
        assert!(matches!(
            cache.get_or_judge("p", "y", || Verdict::Timeout),
            Verdict::Timeout
        ));
    }
}
