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
use crate::tasks::{BigBenchMetric, Check, Normalize, Problem, Prompt};

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

/// BIG-bench's default `output_regex`, for tasks that give neither it nor a stop string: the
/// first run of characters other than `.?!;` and newlines.
pub const BIGBENCH_DEFAULT_REGEX: &str = r"[^\.\?\!\;\n]+";

/// What BIG-bench's `postprocess_output` makes of `text` (max length aside): cut after the
/// first `stop_string` unless it opens the text, then the first match of `output_regex`
/// (its group, when it has one), or the empty string without a match.
pub fn bigbench_response(
    text: &str,
    stop_string: Option<&str>,
    output_regex: Option<&crate::tasks::Pattern>,
) -> String {
    let mut text = text;
    if let Some(stop) = stop_string.filter(|s| !s.is_empty()) {
        if let Some(at) = text.find(stop).filter(|&at| at > 0) {
            text = &text[..at + stop.len()];
        }
    }
    match output_regex {
        Some(re) => re.first_found(text).unwrap_or("").to_owned(),
        None => text.to_owned(),
    }
}

/// Python's `str.strip()`: Unicode whitespace and the separators U+001C..U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Python's `float(s)`: surrounding whitespace allowed, underscores only between digits,
/// `inf`, `infinity` and `nan` in any case with an optional sign.
pub fn py_float(s: &str) -> Option<f64> {
    let s = py_strip(s);
    let b = s.as_bytes();
    let mut clean = String::with_capacity(s.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let digit = |j: Option<&u8>| j.is_some_and(u8::is_ascii_digit);
            if !(i > 0 && digit(b.get(i - 1)) && digit(b.get(i + 1))) {
                return None;
            }
            continue;
        }
        if !c.is_ascii() {
            return None;
        }
        clean.push(c as char);
    }
    let lower = clean.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if lower.len() - unsigned.len() > 1 {
        return None;
    }
    match unsigned {
        "inf" | "infinity" | "nan" => clean.parse().ok(),
        // Rust reads "infinity"-like words and hex floats Python does not; digits only here.
        u if u
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-')) =>
        {
            clean.parse().ok()
        }
        _ => None,
    }
}

/// Whether a BIG-bench response meets the targets under `metric` (see [`BigBenchMetric`]).
pub fn bigbench_metric(metric: BigBenchMetric, targets: &[String], response: &str) -> bool {
    match metric {
        BigBenchMetric::ExactStrMatch => targets.iter().any(|t| t == response),
        BigBenchMetric::CaseInsensitiveStrMatch => {
            let r = py_strip(response).to_lowercase();
            targets.iter().any(|t| py_strip(t).to_lowercase() == r)
        }
        BigBenchMetric::NumericRelativeError { rel_error } => {
            let Some(v) = py_float(response) else {
                return false;
            };
            targets.iter().filter_map(|t| py_float(t)).any(|t| {
                let denom = if t != 0.0 { t.abs() } else { 1.0 };
                (v - t).abs() / denom <= rel_error
            })
        }
    }
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
        Check::BigBench {
            targets,
            metric,
            stop_string,
            output_regex,
        } => {
            let response =
                bigbench_response(completion, stop_string.as_deref(), output_regex.as_ref());
            ok(
                bigbench_metric(*metric, targets, &response),
                &format!("{} fails on {response:?}", metric.name()),
            )
        }
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
    fn bigbench_post_processing_and_numbers_as_python_reads_them() {
        let re = crate::tasks::Pattern::new(BIGBENCH_DEFAULT_REGEX).unwrap();
        // The default pattern skips leading separators and stops at the next one.
        assert_eq!(
            bigbench_response("\n\n 7 apples. 8", None, Some(&re)),
            " 7 apples"
        );
        assert_eq!(bigbench_response("...", None, Some(&re)), "");
        // A stop string is kept, and does not cut where it opens the text.
        assert_eq!(bigbench_response("7. 8.", Some("."), None), "7.");
        assert_eq!(bigbench_response(".7. 8", Some("."), None), ".7. 8");
        let group = crate::tasks::Pattern::new(r"(\d+)\.").unwrap();
        assert_eq!(bigbench_response("x 42. y", None, Some(&group)), "42");
        for (s, v) in [
            (" 12 ", Some(12.0)),
            ("1_000", Some(1000.0)),
            ("1__0", None),
            ("_1", None),
            ("-1e3", Some(-1000.0)),
            ("+.5", Some(0.5)),
            ("0x10", None),
            ("--1", None),
            ("\u{1f}3", Some(3.0)),
            ("", None),
        ] {
            assert_eq!(py_float(s), v, "{s:?}");
        }
        assert!(py_float("-inf").is_some_and(|v| v == f64::NEG_INFINITY));
        assert!(py_float("NaN").is_some_and(f64::is_nan));
        let num = BigBenchMetric::NumericRelativeError { rel_error: 0.1 };
        let t = |v: &str| vec![v.to_string()];
        assert!(bigbench_metric(num, &t("100"), "109"));
        assert!(!bigbench_metric(num, &t("100"), "111"));
        assert!(bigbench_metric(num, &t("0"), "0.05"));
        // |t| in the denominator: a negative target is not met by any number.
        assert!(!bigbench_metric(num, &t("-100"), "50"));
        assert!(bigbench_metric(num, &t("-100"), "-95"));
        let ci = BigBenchMetric::CaseInsensitiveStrMatch;
        assert!(bigbench_metric(ci, &t(" Paris "), "PARIS\n"));
        assert!(!bigbench_metric(
            BigBenchMetric::ExactStrMatch,
            &t("7"),
            " 7"
        ));
    }

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
