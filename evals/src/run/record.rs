//! What a run writes: `run.json` (the settings that define it) and `samples.jsonl` (one line
//! per finished sample, appended and flushed as it finishes).
//!
//! `samples.jsonl` (with `choices.jsonl` and `references.jsonl`, written the same way by
//! [`super::ChoiceRecord`]'s scoring) is the only state. Reading it back drops a torn last
//! line (a kill in the middle of a write leaves a line without its newline) and rejects
//! anything else that is malformed, naming the line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunError;
use crate::judges::Verdict;
use crate::tasks::Format;
use engine::backend::BackendKind;
use engine::sampling::SamplingParams;
use engine::Activations;

/// The `run.json` format version: 2 carries a checksum of its settings. Version 1 files (from
/// before the checksum) are still read, and get one when next saved.
pub const FORMAT_VERSION: u32 = 2;

/// The rules BIG-bench generative samples are judged by: 1 is BIG-bench's own post-processing
/// and metrics ([`crate::tasks::Check::BigBench`]); runs from before them (0, absent) judged
/// by exact match after trimming, and cannot be continued under the new rules.
pub const BIGBENCH_SCORING: u32 = 1;

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// A file a run depends on, pinned by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Where it was when the run started.
    pub path: String,
    /// Its sha256, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl FileRef {
    /// `path` before it is hashed (no sha256, no size), for settings checked before hashing.
    pub(crate) fn unhashed(path: &Path) -> Self {
        FileRef {
            path: path.display().to_string(),
            sha256: String::new(),
            bytes: 0,
        }
    }

    /// Hashes `path`.
    pub fn of(path: &Path) -> Result<Self, RunError> {
        use sha2::{Digest, Sha256};
        let io = |source| RunError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let mut h = Sha256::new();
        let bytes = std::io::copy(&mut f, &mut h).map_err(io)?;
        // Absolute, so that `resume` works from any directory.
        let path = std::path::absolute(path).map_err(io)?;
        Ok(FileRef {
            path: path.display().to_string(),
            sha256: format!("{:x}", h.finalize()),
            bytes,
        })
    }
}

impl FileRef {
    /// A task file pinned by content: [`FileRef::of`], except that a BIG-bench task that only
    /// names subtask folders (no `examples` of its own; [`crate::tasks::load_bigbench`] reads
    /// every `*/task.json` beside it) is pinned with them: the sha256 runs over the file and
    /// then each subtask's folder name, size and bytes in name order, and the size is the
    /// total. A subtask edited, added or removed then changes the task as any edit does.
    pub fn of_task(path: &Path, format: Format) -> Result<Self, RunError> {
        let top = FileRef::of(path)?;
        if format != Format::Bigbench {
            return Ok(top);
        }
        let subtasks = crate::tasks::bigbench_subtasks(path)?;
        if subtasks.is_empty() {
            return Ok(top);
        }
        use sha2::{Digest, Sha256};
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| RunError::Io { path: p, source }
        };
        let mut h = Sha256::new();
        h.update(std::fs::read(path).map_err(io(path))?);
        let mut bytes = top.bytes;
        for sub in &subtasks {
            let data = std::fs::read(sub).map_err(io(sub))?;
            let name = sub
                .parent()
                .and_then(Path::file_name)
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            h.update(name.as_bytes());
            h.update([0]);
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
            bytes += data.len() as u64;
        }
        Ok(FileRef {
            sha256: format!("{:x}", h.finalize()),
            bytes,
            ..top
        })
    }
}

/// The task a run samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task file.
    pub file: FileRef,
    /// How it was read (`jsonl`, `bigbench` or `humaneval`; never `auto`).
    pub format: Format,
}

/// When a problem has had enough samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum StopRule {
    /// PassUntil: stop at the r-th success in sample-index order, or at `max_samples`.
    PassUntil {
        /// Successes wanted.
        r: u64,
        /// The cap; a problem reaching it is a censored record.
        max_samples: u64,
    },
    /// Exactly `n` samples per problem, for pass@k at each of `k`.
    Fixed {
        /// Samples per problem.
        n: u64,
        /// The k values reported.
        k: Vec<u64>,
    },
}

impl StopRule {
    /// The most samples any problem can need.
    pub fn cap(&self) -> u64 {
        match self {
            StopRule::PassUntil { max_samples, .. } => *max_samples,
            StopRule::Fixed { n, .. } => *n,
        }
    }
}

/// A deterministic subset of a task's problems: those whose index `p` has `p % count ==
/// index`. Always valid (`index < count`), however it was made or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard as written, checked before it becomes a [`Shard`].
#[derive(Deserialize)]
struct ShardFields {
    index: u32,
    count: u32,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;
    fn try_from(f: ShardFields) -> Result<Self, String> {
        Shard::new(f.index, f.count)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Shard `index` of `count`, if `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if index < count {
            Ok(Shard { index, count })
        } else {
            Err(format!(
                "shard {index}/{count} is not a shard (expected I/N with 0 ≤ I < N)"
            ))
        }
    }

    /// This shard, `0..count`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Number of shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether problem `p` belongs to this shard.
    pub fn holds(&self, p: usize) -> bool {
        p % self.count as usize == self.index as usize
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a shard: expected I/N with 0 ≤ I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        Shard::new(index, count).map_err(|_| bad())
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `run.json`: everything that decides a run's samples. Two runs with equal configs (shard
/// aside) produce the same sample for the same (problem, index).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The passuntil version that started the run (recorded, not enforced).
    pub passuntil: String,
    /// The model file.
    pub model: FileRef,
    /// The engine that ran it.
    pub backend: BackendKind,
    /// The native engine's activation mode (absent: 8-bit, as llama.cpp).
    #[serde(default, skip_serializing_if = "Activations::is_default")]
    pub activations: Activations,
    /// The task.
    pub task: TaskRef,
    /// For BIG-bench tasks, the judging rules' version ([`BIGBENCH_SCORING`]); absent for
    /// other tasks and for runs from before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bigbench_scoring: u32,
    /// Text prompts go through the model's chat template (`run --chat`; see
    /// [`crate::run::chat_form`]). Absent from run.json when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub chat: bool,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Most generated tokens per sample.
    pub max_tokens: usize,
    /// Stop strings added to every problem's own.
    pub stop: Vec<String>,
    /// When a problem is done.
    pub rule: StopRule,
    /// The seed: sample i of problem p is a function of (seed, p, i).
    pub seed: u64,
    /// Which problems this run holds.
    pub shard: Shard,
    /// For merged runs, the shards they came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<Shard>,
    /// How the latest session isolated programs it judged (not a setting: resuming elsewhere
    /// may change it), absent when nothing needed the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_isolation: Option<crate::sandbox::Isolation>,
    /// sha256 of the settings above as written, so an edited file is refused
    /// ([`RunConfig::load`]); set by [`RunConfig::save`].
    #[serde(default)]
    pub checksum: String,
}

impl RunConfig {
    /// The settings in which `other` differs from `self` that change samples, shard aside
    /// (paths and versions are not compared: files are pinned by hash), each as
    /// `name: ours vs theirs` down to the field (`sampling.top_k: 0 vs 40`).
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let mut d = Vec::new();
        let ours = self.identity();
        let theirs = other.identity();
        diff_json("", &ours, &theirs, &mut d);
        d
    }

    /// What decides the run's samples, as JSON.
    fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "model sha256": self.model.sha256,
            "backend": self.backend,
            "activations": self.activations,
            "task sha256": self.task.file.sha256,
            "task format": self.task.format,
            "BIG-bench scoring": self.bigbench_scoring,
            "chat template": self.chat,
            "sampling": self.sampling,
            "max tokens": self.max_tokens,
            "stop strings": self.stop,
            "stopping rule": self.rule,
            "seed": self.seed,
        })
    }

    /// Whether these settings can run: `max_tokens ≥ 1`, `1 ≤ r ≤ max_samples` (PassUntil) or
    /// `1 ≤ k ≤ n` (pass@k), a concrete task format, and sampling settings the sampler takes.
    pub fn validate(&self) -> Result<(), RunError> {
        if self.max_tokens == 0 {
            return Err(RunError::MaxTokensZero);
        }
        let rule_ok = match &self.rule {
            StopRule::PassUntil { r, max_samples } => *r > 0 && r <= max_samples,
            StopRule::Fixed { n, k } => *n > 0 && k.iter().all(|&k| k > 0 && k <= *n),
        };
        if !rule_ok {
            return Err(RunError::BadRule(self.rule.clone()));
        }
        if self.task.format == Format::Auto {
            return Err(RunError::Task(crate::tasks::TaskError::UnknownFormat {
                file: self.task.file.path.clone(),
            }));
        }
        self.sampling
            .validate()
            .map_err(engine::backend::BackendError::from)?;
        Ok(())
    }

    /// Reads `DIR/run.json`.
    pub fn load(dir: &Path) -> Result<Self, RunError> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
        let c: RunConfig = serde_json::from_str(&text).map_err(|e| RunError::Malformed {
            path: path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        let bad = |message: String| RunError::Malformed {
            path: path.clone(),
            line: 1,
            message,
        };
        if c.format != FORMAT_VERSION && c.format != 1 {
            return Err(bad(format!(
                "run.json format {} is not one this passuntil reads (1 or {FORMAT_VERSION})",
                c.format
            )));
        }
        if c.format == FORMAT_VERSION && c.checksum != c.settings_checksum() {
            return Err(bad(
                "run.json was changed since the run wrote it (its checksum does not match its \
                 settings); restore it, or start a new run in another directory"
                    .into(),
            ));
        }
        c.validate().map_err(|e| bad(e.to_string()))?;
        Ok(c)
    }

    /// The sha256 of every setting but the checksum itself, as JSON.
    fn settings_checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut c = self.clone();
        c.checksum = String::new();
        let json = serde_json::to_vec(&c).expect("a run config serializes");
        format!("{:x}", Sha256::digest(&json))
    }

    /// Writes `DIR/run.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), RunError> {
        let io = |source| RunError::Io {
            path: dir.join("run.json"),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let mut sealed = RunConfig {
            format: FORMAT_VERSION,
            ..self.clone()
        };
        sealed.checksum = sealed.settings_checksum();
        serde_json::to_writer_pretty(&mut tmp, &sealed).map_err(|e| io(e.into()))?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(dir.join("run.json")).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// Adds `path: a vs b` to `out` for every leaf where `a` and `b` differ.
fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let name = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = Value::Null;
                diff_json(
                    &name,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

/// Why a recorded sample stopped, written `eog`, `stop_string` or `max_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// An end-of-generation token.
    Eog,
    /// A stop string (the text is cut before it).
    StopString,
    /// The token limit.
    MaxTokens,
}

impl From<&engine::generate::StopReason> for Stopped {
    fn from(r: &engine::generate::StopReason) -> Self {
        match r {
            engine::generate::StopReason::Eog => Stopped::Eog,
            engine::generate::StopReason::Stop(_) => Stopped::StopString,
            engine::generate::StopReason::MaxTokens => Stopped::MaxTokens,
        }
    }
}

/// One finished, judged sample: a line of `samples.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The problem's id.
    pub problem: String,
    /// The problem's index in the task file (part of the sample's random key).
    pub p: u64,
    /// The sample's index within its problem.
    pub index: u64,
    /// Whether it passed.
    pub passed: bool,
    /// The judge's verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The completion as judged (cut before a stop string, except that a BIG-bench problem's
    /// own stop string is kept, as BIG-bench keeps it; lossy UTF-8).
    pub text: String,
    /// Generated tokens, including the one that ended it.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: Stopped,
    /// Sum of the tokens' log-probabilities under the model.
    pub logprob: f64,
    /// Sum of the tokens' log-probabilities under the sampling distribution.
    pub sampling_logprob: f64,
    /// Which session (0 for the first, +1 per resume) produced it. Measures time.
    pub session: u32,
    /// Seconds from the session's start to the sample's judgment. Measures time.
    pub elapsed_s: f64,
    /// Milliseconds spent judging it. Measures time.
    pub judge_ms: f64,
}

impl SampleRecord {
    /// The record without the fields that measure time, for comparing runs.
    pub fn timeless(&self) -> SampleRecord {
        SampleRecord {
            session: 0,
            elapsed_s: 0.0,
            judge_ms: 0.0,
            ..self.clone()
        }
    }
}

/// `DIR/samples.jsonl` read back.
#[derive(Debug)]
pub struct Loaded {
    /// The records, in file order.
    pub records: Vec<SampleRecord>,
    /// Bytes of a torn last line that were dropped (0 if none).
    pub torn_bytes: usize,
    /// Length of the file up to its last complete line.
    pub good_len: u64,
}

/// Reads a file of JSON lines; a missing file is an empty one. A torn last line (no newline:
/// a kill in the middle of a write) is dropped; anything else malformed, or refused by
/// `check`, is an error naming its line. Returns the records, the torn bytes and the length
/// up to the last complete line.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut check: impl FnMut(&T) -> Result<(), String>,
) -> Result<(Vec<T>, usize, u64), RunError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(RunError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (i, line) in bytes[..good].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| RunError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let r: T = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        check(&r).map_err(bad)?;
        records.push(r);
    }
    Ok((records, bytes.len() - good, good as u64))
}

/// Reads a samples file; a missing file is an empty one.
pub fn load_samples(path: &Path) -> Result<Loaded, RunError> {
    let mut seen = std::collections::HashSet::new();
    let (records, torn_bytes, good_len) =
        read_jsonl(path, |r: &SampleRecord| match seen.insert((r.p, r.index)) {
            true => Ok(()),
            false => Err(format!(
                "sample {} of problem '{}' appears twice",
                r.index, r.problem
            )),
        })?;
    Ok(Loaded {
        records,
        torn_bytes,
        good_len,
    })
}

/// The append-only samples file of a run being written.
#[derive(Debug)]
pub struct SampleWriter {
    file: File,
    path: PathBuf,
    since_sync: std::time::Instant,
}

impl SampleWriter {
    /// Opens `path` for appending after cutting it to `good_len` (dropping a torn line).
    pub fn open(path: &Path, good_len: u64) -> Result<Self, RunError> {
        let io = |source| RunError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() != good_len {
            file.set_len(good_len).map_err(io)?;
        }
        Ok(SampleWriter {
            file,
            path: path.to_path_buf(),
            since_sync: std::time::Instant::now(),
        })
    }

    /// Appends one record (a [`SampleRecord`], or any line of the run's other record files)
    /// as a single write of one line, synced to disk at most once a second (the OS has it at
    /// once, so a killed process loses nothing).
    pub fn append<T: Serialize>(&mut self, r: &T) -> Result<(), RunError> {
        let io = |source| RunError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(r).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        if self.since_sync.elapsed().as_secs() >= 1 {
            self.file.sync_data().map_err(io)?;
            self.since_sync = std::time::Instant::now();
        }
        Ok(())
    }

    /// Syncs to disk.
    pub fn sync(&mut self) -> Result<(), RunError> {
        self.file.sync_data().map_err(|source| RunError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_bigbench_container_is_pinned_with_its_subtasks() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("task.json");
        std::fs::write(&top, r#"{"name": "t", "description": "d"}"#).unwrap();
        let sub = tmp.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        let example = |t: &str| {
            format!(
                r#"{{"name": "a", "metrics": ["exact_str_match"], "examples": [{{"input": "q", "target": "{t}"}}]}}"#
            )
        };
        std::fs::write(sub.join("task.json"), example("1")).unwrap();
        let plain = FileRef::of(&top).unwrap();
        let pinned = FileRef::of_task(&top, Format::Bigbench).unwrap();
        assert_ne!(plain.sha256, pinned.sha256);
        assert!(pinned.bytes > plain.bytes);
        // Editing a subtask changes the task; other formats pin the file alone.
        std::fs::write(sub.join("task.json"), example("2")).unwrap();
        assert_ne!(
            FileRef::of_task(&top, Format::Bigbench).unwrap().sha256,
            pinned.sha256
        );
        assert_eq!(FileRef::of_task(&top, Format::Jsonl).unwrap(), plain);
        // A task with examples of its own is its file.
        std::fs::write(&top, example("3")).unwrap();
        assert_eq!(
            FileRef::of_task(&top, Format::Bigbench).unwrap(),
            FileRef::of(&top).unwrap()
        );
    }

    fn record(p: u64, index: u64) -> SampleRecord {
        SampleRecord {
            problem: format!("q{p}"),
            p,
            index,
            passed: index.is_multiple_of(2),
            verdict: if index.is_multiple_of(2) {
                Verdict::Pass
            } else {
                Verdict::Fail {
                    detail: "no".into(),
                }
            },
            text: "x\u{1F600}\"".into(),
            tokens: vec![1, 2],
            stop: Stopped::Eog,
            logprob: -1.25,
            sampling_logprob: -0.5,
            session: 0,
            elapsed_s: 0.1,
            judge_ms: 0.01,
        }
    }

    #[test]
    fn torn_last_line_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let mut w = SampleWriter::open(&path, 0).unwrap();
        w.append(&record(0, 0)).unwrap();
        w.append(&record(0, 1)).unwrap();
        drop(w);
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the second line leaves exactly the first record.
        let first_len = full.iter().position(|&b| b == b'\n').unwrap() + 1;
        for cut in first_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let l = load_samples(&path).unwrap();
            assert_eq!(l.records, vec![record(0, 0)], "cut at {cut}");
            assert_eq!(l.good_len as usize, first_len);
            assert_eq!(l.torn_bytes, cut - first_len);
            let mut w = SampleWriter::open(&path, l.good_len).unwrap();
            w.append(&record(0, 1)).unwrap();
            drop(w);
            assert_eq!(std::fs::read(&path).unwrap(), full);
        }
    }

    #[test]
    fn log_probabilities_read_back_bit_for_bit() {
        // serde_json's default float parsing can be one ulp off; merged or rewritten records
        // would then differ from the shards they came from.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let mut w = SampleWriter::open(&path, 0).unwrap();
        let mut r = record(0, 0);
        for (i, x) in [
            -1.4537567192828487,
            -3.7257893728750933,
            -0.1 - 0.2,
            -1e-300,
        ]
        .into_iter()
        .enumerate()
        {
            r.index = i as u64;
            r.logprob = x;
            r.sampling_logprob = x * 3.0;
            w.append(&r).unwrap();
        }
        drop(w);
        for (i, got) in load_samples(&path).unwrap().records.iter().enumerate() {
            let x = [
                -1.4537567192828487,
                -3.7257893728750933,
                -0.1 - 0.2,
                -1e-300,
            ][i];
            assert_eq!(got.logprob.to_bits(), f64::to_bits(x), "{x}");
            assert_eq!(got.sampling_logprob.to_bits(), (x * 3.0).to_bits(), "{x}");
        }
    }

    #[test]
    fn malformed_and_duplicate_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.jsonl");
        let line = serde_json::to_string(&record(1, 3)).unwrap();
        std::fs::write(&path, format!("{line}\n{{oops\n{line}\n")).unwrap();
        match load_samples(&path) {
            Err(RunError::Malformed { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, format!("{line}\n{line}\n")).unwrap();
        match load_samples(&path) {
            Err(RunError::Malformed {
                line: 2, message, ..
            }) => {
                assert!(message.contains("twice"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A valid run configuration (PassUntil r = 2, shard 1/4) for tests.
    pub(crate) fn config() -> RunConfig {
        let file = FileRef {
            path: "/m.gguf".into(),
            sha256: "ab".into(),
            bytes: 1,
        };
        RunConfig {
            format: FORMAT_VERSION,
            passuntil: "0".into(),
            model: file.clone(),
            backend: BackendKind::Native,
            activations: Activations::Q8,
            task: TaskRef {
                file,
                format: Format::Jsonl,
            },
            bigbench_scoring: 0,
            chat: false,
            sampling: SamplingParams::default(),
            max_tokens: 8,
            stop: Vec::new(),
            rule: StopRule::PassUntil {
                r: 2,
                max_samples: 10,
            },
            seed: 7,
            shard: Shard { index: 1, count: 4 },
            merged_from: Vec::new(),
            judge_isolation: None,
            checksum: String::new(),
        }
    }

    #[test]
    fn edited_or_impossible_run_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = config();
        c.save(dir.path()).unwrap();
        let loaded = RunConfig::load(dir.path()).unwrap();
        assert!(loaded.differences(&c).is_empty() && loaded.shard == c.shard);
        let text = std::fs::read_to_string(dir.path().join("run.json")).unwrap();
        let edit = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            std::fs::write(dir.path().join("run.json"), text.replace(from, to)).unwrap();
            RunConfig::load(dir.path()).unwrap_err().to_string()
        };
        assert!(edit("\"seed\": 7", "\"seed\": 8").contains("changed since the run wrote it"));
        // A file from before the checksum (format 1) still loads.
        let v1 = text.replace("\"format\": 2", "\"format\": 1").replace(
            &format!("\"checksum\": \"{}\"", c.settings_checksum()),
            "\"checksum\": \"\"",
        );
        std::fs::write(dir.path().join("run.json"), v1).unwrap();
        assert_eq!(RunConfig::load(dir.path()).unwrap().seed, 7);
        // A shard count of 0 (which would divide by zero) is named, even with a valid checksum.
        let mut zero = config();
        zero.shard = Shard { index: 0, count: 0 };
        zero.save(dir.path()).unwrap();
        let e = RunConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("shard 0/0 is not a shard"), "{e}");
        // Unknown backends and formats are named by serde, with what it expects.
        assert_eq!(
            serde_json::to_string(&Stopped::StopString).unwrap(),
            "\"stop_string\""
        );
        let e = edit("\"backend\": \"native\"", "\"backend\": \"vllm\"");
        assert!(e.contains("unknown variant `vllm`"), "{e}");
        let e = edit("\"format\": \"jsonl\"", "\"format\": \"csv\"");
        assert!(e.contains("unknown variant `csv`"), "{e}");
    }

    #[test]
    fn differences_name_the_field() {
        let a = config();
        let mut b = config();
        b.sampling.top_k = 40;
        b.seed = 8;
        b.rule = StopRule::PassUntil {
            r: 3,
            max_samples: 10,
        };
        b.stop = vec!["\n".into()];
        assert_eq!(
            a.differences(&b),
            [
                "sampling.top_k: 0 vs 40",
                "seed: 7 vs 8",
                "stop strings: [] vs [\"\\n\"]",
                "stopping rule.r: 2 vs 3"
            ]
        );
        b = config();
        b.shard = Shard { index: 0, count: 4 };
        assert!(
            a.differences(&b).is_empty(),
            "the shard is not a difference"
        );
    }

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert!(s.holds(4) && !s.holds(3));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        for bad in [r#"{"index": 0, "count": 0}"#, r#"{"index": 4, "count": 4}"#] {
            let e = serde_json::from_str::<Shard>(bad).unwrap_err().to_string();
            assert!(e.contains("is not a shard"), "{e}");
        }
        let total: usize = (0..3)
            .map(|i| {
                (0..100)
                    .filter(|&p| Shard { index: i, count: 3 }.holds(p))
                    .count()
            })
            .sum();
        assert_eq!(total, 100);
    }
}
