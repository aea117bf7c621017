//! Judges: whether a completion solves a problem.
//!
//! Text judges ([`judge_text`]) compare the completion with the problem's targets (exact,
//! normalized, contains, regex, numeric). Multiple choice is judged from the choices'
//! log-likelihoods ([`judge_choices`]). Code is judged by running it ([`judge_program`]) in the
//! [`Sandbox`] of [`crate::sandbox`]: namespaces of its own per judgement, limits, and a pass
//! only when the tests provably ran. The five verdicts are distinct. [`VerdictCache`] keeps
//! one verdict per (problem, completion).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::sandbox::{Isolation, Limits, Sandbox};
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
        Check::Regex { pattern } => ok(pattern.is_match(completion), "pattern does not match"),
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
    let (body, entry_point) = program_parts(problem, completion)?;
    Some(format!("{body}check({entry_point})\n"))
}

/// [`program_source`] in the two parts [`Sandbox::check`] takes: the program up to the tests
/// (`prompt + completion + "\n" + test + "\n"`) and the entry point `check` is called with.
pub fn program_parts<'p>(problem: &'p Problem, completion: &str) -> Option<(String, &'p str)> {
    let (Prompt::Text(prompt), Check::Program { test, entry_point }) =
        (&problem.prompt, &problem.check)
    else {
        return None;
    };
    Some((format!("{prompt}{completion}\n{test}\n"), entry_point))
}

/// Judges a program check in `sandbox` (see [`Sandbox::check`]).
pub fn judge_program(sandbox: &Sandbox, problem: &Problem, completion: &str) -> Verdict {
    match program_parts(problem, completion) {
        Some((body, entry_point)) => sandbox.check(&body, entry_point).0,
        None => Verdict::SandboxError {
            detail: "a program check needs a text prompt".into(),
        },
    }
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
            pattern: crate::tasks::Pattern::new(r"^\s*\d{4}\b").unwrap(),
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
