//! Tasks: problems read from native JSONL, BIG-bench `task.json` and HumanEval JSONL (plain or
//! gzipped) into one [`Problem`] type.
//!
//! A malformed line or field is an error that names the file, the line (or example index) and
//! the field; a file is loaded whole or not at all.

mod bigbench;
pub mod fetch;
mod humaneval;
mod jsonl;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bigbench::{bigbench_subtasks, load_bigbench, parse_bigbench};
pub use humaneval::{load_humaneval, parse_humaneval};
pub use jsonl::{load_jsonl, parse_jsonl};

/// One chat message.
pub use engine::chat::Message;

/// What the model is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Raw text, continued as is.
    Text(String),
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<Message>),
}

/// Options of the normalized exact-match judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Normalize {
    /// Compare case-insensitively.
    pub ignore_case: bool,
    /// Collapse whitespace runs and trim.
    pub collapse_whitespace: bool,
    /// Drop ASCII and Unicode punctuation.
    pub strip_punctuation: bool,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            ignore_case: true,
            collapse_whitespace: true,
            strip_punctuation: true,
        }
    }
}

/// A regular expression (Rust `regex` syntax), compiled when it is made or read, written as its
/// source. Clones share the compiled program.
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(source).map(Pattern)
    }

    /// Whether it matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// Its source.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Capture groups, the whole match not counted.
    pub fn groups(&self) -> usize {
        self.0.captures_len() - 1
    }

    /// What Python's `re.findall(pattern, text)[0]` gives for a pattern with at most one
    /// group: the first match, or its group when it has one (empty when the group took no
    /// part); `None` without a match.
    pub fn first_found<'t>(&self, text: &'t str) -> Option<&'t str> {
        let c = self.0.captures(text)?;
        Some(match self.groups() {
            0 => c.get(0).map_or("", |m| m.as_str()),
            _ => c.get(1).map_or("", |m| m.as_str()),
        })
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

/// What counts as correct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Check {
    /// The completion, trimmed, equals one of the targets.
    Exact {
        /// Accepted answers.
        targets: Vec<String>,
    },
    /// Equality after normalization.
    Normalized {
        /// Accepted answers.
        targets: Vec<String>,
        /// How to normalize.
        options: Normalize,
    },
    /// The completion contains one of the targets.
    Contains {
        /// Accepted substrings.
        targets: Vec<String>,
    },
    /// The completion matches a regular expression (anywhere).
    Regex {
        /// The pattern (Rust `regex` syntax), compiled once when the task is read.
        pattern: Pattern,
    },
    /// The first number in the completion is within tolerance of the target.
    Numeric {
        /// The answer.
        target: f64,
        /// Accepted absolute difference.
        abs_tol: f64,
        /// Accepted difference relative to |target|.
        rel_tol: f64,
    },
    /// BIG-bench's generative scoring: the completion post-processed as BIG-bench's
    /// `postprocess_output` does (cut after the task's stop string, then the first match of
    /// its `output_regex`, or of the default `[^.?!;\n]+` when it names neither), then
    /// compared with the targets by the task's metric.
    BigBench {
        /// Accepted answers.
        targets: Vec<String>,
        /// How a response meets them.
        metric: BigBenchMetric,
        /// The task's `stop_string` (the completion is judged with it, as BIG-bench keeps it).
        stop_string: Option<String>,
        /// The pattern whose first match is the response.
        output_regex: Option<Pattern>,
    },
    /// Choices scored by log-likelihood; the best-scoring choice must be a correct one.
    MultipleChoice {
        /// The choices as continuations of the prompt.
        choices: Vec<String>,
        /// Each choice's score (1 correct, 0 wrong; BIG-bench allows fractions).
        scores: Vec<f64>,
    },
    /// The prompt plus completion is run with tests (HumanEval).
    Program {
        /// The test code (defines `check`).
        test: String,
        /// The function the test checks.
        entry_point: String,
    },
}

/// BIG-bench's generative metrics that give a pass or a fail per sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BigBenchMetric {
    /// The response is one of the targets, exactly (`exact_str_match`).
    ExactStrMatch,
    /// The response, trimmed and lower-cased, is one of the targets trimmed and lower-cased
    /// (`case_insensitive_str_match`).
    CaseInsensitiveStrMatch,
    /// The response read as a number is within a relative error of the target
    /// (`numeric_match_with_0_1_relative_error`: 0.1), `|v − t| / |t|`, or the absolute error
    /// for `t = 0`. BIG-bench divides by `t` itself, so for a negative target any number
    /// passes there; passuntil divides by `|t|`.
    NumericRelativeError {
        /// The largest relative error that passes.
        rel_error: f64,
    },
}

impl BigBenchMetric {
    /// BIG-bench's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            BigBenchMetric::ExactStrMatch => "exact_str_match",
            BigBenchMetric::CaseInsensitiveStrMatch => "case_insensitive_str_match",
            BigBenchMetric::NumericRelativeError { .. } => "numeric_match_with_0_1_relative_error",
        }
    }
}

/// One problem of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Unique within its task.
    pub id: String,
    /// What the model is given.
    pub prompt: Prompt,
    /// How a completion is judged.
    pub check: Check,
    /// Generation stops where the text first contains one of these; the completion ends
    /// before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// Where the completions of HumanEval-style programs end: a new top-level statement.
pub const PROGRAM_STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"];

/// A task file that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line or example is malformed.
    #[error("{file}:{line}: {field}: {message}")]
    Malformed {
        /// The file.
        file: String,
        /// 1-based line (JSONL) or example number (BIG-bench: index + 1).
        line: usize,
        /// The field at fault (`-` for the whole record).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two problems share an id.
    #[error("{file}:{line}: duplicate problem id '{id}'")]
    DuplicateId {
        /// The file.
        file: String,
        /// Where the second one is.
        line: usize,
        /// The id.
        id: String,
    },
    /// The file holds no problems.
    #[error("{file}: no problems")]
    Empty {
        /// The file.
        file: String,
    },
    /// The format could not be told from the file.
    #[error("{file}: cannot tell the task format; pass --format jsonl|bigbench|humaneval")]
    UnknownFormat {
        /// The file.
        file: String,
    },
}

/// Task file formats, written in lower case (`auto`, `jsonl`, `bigbench`, `humaneval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Guess from the name and contents.
    Auto,
    /// passuntil's native JSONL.
    Jsonl,
    /// BIG-bench `task.json`.
    Bigbench,
    /// HumanEval JSONL, plain or `.gz`.
    Humaneval,
}

impl Format {
    /// Every format, `auto` first.
    pub const ALL: [Format; 4] = [
        Format::Auto,
        Format::Jsonl,
        Format::Bigbench,
        Format::Humaneval,
    ];

    /// Its name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Jsonl => "jsonl",
            Format::Bigbench => "bigbench",
            Format::Humaneval => "humaneval",
        }
    }

    /// The concrete format of `path`: this one, or the one detected when this is `auto`.
    pub fn resolve(self, path: &Path) -> Result<Format, TaskError> {
        match self {
            Format::Auto => detect(path),
            f => Ok(f),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown task format '{s}' (auto, jsonl, bigbench, humaneval)"))
    }
}

/// Loads a task file.
pub fn load(path: &Path, format: Format) -> Result<Vec<Problem>, TaskError> {
    match format.resolve(path)? {
        Format::Jsonl => load_jsonl(path),
        Format::Bigbench => load_bigbench(path),
        Format::Humaneval => load_humaneval(path),
        Format::Auto => unreachable!("resolved above"),
    }
}

pub(crate) fn detect(path: &Path) -> Result<Format, TaskError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".gz") || name.to_ascii_lowercase().contains("humaneval") {
        return Ok(Format::Humaneval);
    }
    if name.ends_with(".json") {
        return Ok(Format::Bigbench);
    }
    if name.ends_with(".jsonl") {
        let head = read_text(path)?;
        let first = head.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Ok(
            if first.contains("\"task_id\"") && first.contains("\"entry_point\"") {
                Format::Humaneval
            } else {
                Format::Jsonl
            },
        );
    }
    Err(TaskError::UnknownFormat {
        file: path.display().to_string(),
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String, TaskError> {
    let raw = std::fs::read(path).map_err(|source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    utf8(path, raw)
}

/// The text of a task file's bytes; invalid UTF-8 is an error naming its line and byte.
pub(crate) fn utf8(path: &Path, raw: Vec<u8>) -> Result<String, TaskError> {
    String::from_utf8(raw).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        let col = at
            - bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        malformed(
            &path.display().to_string(),
            line,
            "-",
            format!("invalid UTF-8 at byte {} of the line", col + 1),
        )
    })
}

pub(crate) fn malformed(
    file: &str,
    line: usize,
    field: &str,
    message: impl Into<String>,
) -> TaskError {
    TaskError::Malformed {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks ids are unique and the list is not empty.
pub(crate) fn finish(
    file: &str,
    problems: Vec<(usize, Problem)>,
) -> Result<Vec<Problem>, TaskError> {
    if problems.is_empty() {
        return Err(TaskError::Empty {
            file: file.to_owned(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for (line, p) in &problems {
        if !seen.insert(p.id.as_str()) {
            return Err(TaskError::DuplicateId {
                file: file.to_owned(),
                line: *line,
                id: p.id.clone(),
            });
        }
    }
    Ok(problems.into_iter().map(|(_, p)| p).collect())
}
