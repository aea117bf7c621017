//! `pass-until run`, `resume` and `merge`: massive sampling until problems pass.
//!
//! A run directory holds `run.json` (what defines the run: model and task hashes, sampling,
//! stopping rule, seed, shard), `samples.jsonl` (every judged sample, appended as it is
//! judged) and, when the task has multiple-choice problems, `choices.jsonl` (each scored by
//! the log-likelihood of its choices, see [`ChoiceRecord`]). Sample `i` of problem `p` draws its randomness from (seed, p, i) alone, so a run
//! gives the same samples whatever the batch size, thread count, shard split or
//! interruptions, up to the backend's batch invariance. Resuming reads `samples.jsonl`, drops
//! a torn last line, and samples only what is still missing.
//!
//! ```no_run
//! use evals::run::{start, RunOptions, StopRule};
//! let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}"))?;
//! let mut opts = RunOptions::new(model, "tasks/arithmetic.jsonl".into(), "runs/arith".into());
//! opts.rule = StopRule::PassUntil { r: 2, max_samples: 200 };
//! let outcome = start(&opts, &mut |_: &evals::run::Stats| {})?;
//! println!("{} samples", outcome.stats.samples);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod choices;
mod record;
pub mod report;
mod scheduler;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use choices::{load_choices, reference_of, ChoiceRecord};
pub use record::{
    load_samples, FileRef, Loaded, RunConfig, SampleRecord, SampleWriter, Shard, StopRule, Stopped,
    TaskRef, FORMAT_VERSION,
};
pub use scheduler::{Progress, Stats};
pub use state::{Decision, ProblemState};

use crate::generate::BackendKind;
use crate::tasks::{Check, Format, Problem, Prompt, TaskError};
use engine::backend::{BackendError, Context, Model, TokenizeOptions};

/// Why a run cannot go on. Samples already written stay written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A run file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The directory holds a different run.
    #[error("{} holds a different run ({}); use another --out or resume it as it is", dir.display(), differences.join("; "))]
    Mismatch {
        /// The run directory.
        dir: PathBuf,
        /// What differs.
        differences: Vec<String>,
    },
    /// The task file cannot be used.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// `max_tokens` is 0.
    #[error("--max-tokens must be at least 1")]
    MaxTokensZero,
    /// A stopping rule no problem can finish under.
    #[error("the stopping rule {0:?} cannot run: PassUntil needs 1 ≤ r ≤ max samples, pass@k needs n ≥ 1 and every k in 1..=n")]
    BadRule(StopRule),
    /// The batch holds no sample.
    #[error("--batch must be at least 1")]
    BatchZero,
    /// A file the run is pinned to has changed.
    #[error("the {what} {path} has changed since the run started (sha256 {now} now, {then} then); restore it or start a new run")]
    FileChanged {
        /// `model` or `task file`.
        what: &'static str,
        /// Where the run found it.
        path: String,
        /// Its sha256 when the run started.
        then: String,
        /// Its sha256 now.
        now: String,
    },
    /// Programs are to be judged and no sandbox can be made on this machine.
    #[error("cannot judge programs: {0}")]
    Sandbox(String),
    /// A problem's prompt cannot be sampled.
    #[error("problem '{problem}': {reason}")]
    Prompt {
        /// The problem's id.
        problem: String,
        /// Why.
        reason: PromptError,
    },
    /// A BIG-bench run started before BIG-bench's own scoring rules, which cannot be continued
    /// under them.
    #[error("{}: this BIG-bench run judged its samples by exact match after trimming, before passuntil scored BIG-bench as BIG-bench does; its report still reads, but continue it in a new run directory", .0.display())]
    OldRules(PathBuf),
    /// A problem was left undecided when the scheduler ran out of work (a bug).
    #[error("problem '{0}' was left undecided (a scheduler bug)")]
    Undecided(String),
    /// The scheduler's slots do not fit the context's sequences (a bug).
    #[error(
        "{slots} slots and {prompt_seqs} prompt sequences do not fit the backend's {max} sequences"
    )]
    Shape {
        /// Sample slots.
        slots: usize,
        /// Prompt sequences.
        prompt_seqs: usize,
        /// What the context holds.
        max: u32,
    },
    /// `merge` was given nothing.
    #[error("merge needs at least one directory")]
    NothingToMerge,
    /// A directory given to `merge` twice.
    #[error("{} is given twice; merge each shard once", .0.display())]
    MergedTwice(PathBuf),
    /// A shard directory holds a sample of a problem outside its shard.
    #[error("{}: problem '{problem}' is not in shard {shard}", dir.display())]
    ForeignSample {
        /// The shard's directory.
        dir: PathBuf,
        /// The problem's id.
        problem: String,
        /// The directory's shard.
        shard: Shard,
    },
    /// `merge`'s destination already holds a run.
    #[error("{} already holds a run; merge into an empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// The backend failed or is not available.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Another process is running in the directory.
    #[error("{} is in use by another pass-until ({holder}); wait for it to finish or stop it first", dir.display())]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// The process holding the lock, as it wrote it (`pid N on HOST`; `?` if unreadable).
        holder: String,
    },
    /// A shard directory does not fit with the others of a merge.
    #[error("{}: shard {shard} does not fit with the others ({}): shards of one run have one count and distinct indices", dir.display(), others.iter().map(Shard::to_string).collect::<Vec<_>>().join(", "))]
    ShardMisfit {
        /// The shard's directory.
        dir: PathBuf,
        /// Its shard.
        shard: Shard,
        /// The shards before it.
        others: Vec<Shard>,
    },
    /// Shards of the run are not among those merged.
    #[error("shards {} are missing; merge every shard of the run", missing.iter().map(Shard::to_string).collect::<Vec<_>>().join(", "))]
    ShardsMissing {
        /// The shards not given.
        missing: Vec<Shard>,
    },
    /// A shard has not finished.
    #[error("{}: shard {shard} is incomplete: {why}; resume it (or merge with --allow-incomplete)", dir.display())]
    ShardIncomplete {
        /// The shard's directory.
        dir: PathBuf,
        /// Its shard.
        shard: Shard,
        /// What is missing.
        why: String,
    },
    /// A judge failed (not a failing sample: the judge itself).
    #[error("judging sample {index} of '{problem}': {message}")]
    Judge {
        /// The problem.
        problem: String,
        /// The sample.
        index: u64,
        /// What failed.
        message: String,
    },
}

/// Why a problem's prompt cannot be sampled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// More bytes than the trained context could hold, whatever they tokenize to.
    #[error("{0} (--allow-long-context to go on anyway)")]
    TooManyBytes(String),
    /// The chat template failed.
    #[error(transparent)]
    Chat(#[from] crate::generate::ChatPromptError),
    /// The prompt tokenizes to nothing.
    #[error("the prompt is empty")]
    Empty,
    /// A choice cannot be scored (a log-likelihood of −∞).
    #[error("{0}")]
    Unscorable(String),
    /// A multiple-choice problem's choice tokenizes to nothing.
    #[error("choice {0} tokenizes to nothing")]
    EmptyChoice(usize),
    /// Prompt and choice exceed the trained context.
    #[error("{prompt} prompt tokens + a choice of {choice} tokens exceed the model's trained context of {n_ctx_train} (--allow-long-context to go on anyway)")]
    ChoiceTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// The longest choice's tokens.
        choice: usize,
        /// The trained context.
        n_ctx_train: usize,
    },
    /// Prompt and new tokens exceed the trained context.
    #[error("{prompt} prompt tokens + {max_tokens} new tokens exceed the model's trained context of {n_ctx_train} (--allow-long-context to go on anyway)")]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// New tokens per sample.
        max_tokens: usize,
        /// The trained context.
        n_ctx_train: usize,
    },
}

/// Everything `pass-until run` takes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The GGUF file.
    pub model: PathBuf,
    /// Which engine runs it.
    pub backend: BackendKind,
    /// The native engine's activation mode.
    pub activations: engine::Activations,
    /// The task file.
    pub task: PathBuf,
    /// Its format.
    pub format: Format,
    /// Send text prompts through the model's chat template ([`chat_form`]).
    pub chat: bool,
    /// How tokens are drawn.
    pub sampling: engine::sampling::SamplingParams,
    /// Most generated tokens per sample.
    pub max_tokens: usize,
    /// Stop strings added to every problem's own.
    pub stop: Vec<String>,
    /// When a problem has had enough samples.
    pub rule: StopRule,
    /// The run's seed.
    pub seed: u64,
    /// Which problems to run.
    pub shard: Shard,
    /// The run directory.
    pub out: PathBuf,
    /// How the work is executed (not part of the run's identity).
    pub exec: Exec,
}

/// How a run executes; changing these never changes its samples.
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    /// Samples decoded together.
    pub batch: usize,
    /// Backend threads (`None`: every core).
    pub threads: Option<u32>,
    /// Judge threads (`None`: one for text checks, up to 4 for programs).
    pub judge_threads: Option<usize>,
    /// Sample past the context the model was trained on (refused otherwise).
    pub allow_long_context: bool,
}

impl Default for Exec {
    fn default() -> Self {
        Exec {
            batch: 64,
            threads: None,
            judge_threads: None,
            allow_long_context: false,
        }
    }
}

impl RunOptions {
    /// PassUntil with r = 2 and a cap of 100,000 samples, plain sampling at temperature 1,
    /// 256 tokens, seed 0, batch 64, on the native engine.
    pub fn new(model: PathBuf, task: PathBuf, out: PathBuf) -> Self {
        RunOptions {
            model,
            backend: BackendKind::Native,
            activations: engine::Activations::Q8,
            task,
            format: Format::Auto,
            chat: false,
            sampling: engine::sampling::SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            rule: StopRule::PassUntil {
                r: 2,
                max_samples: 100_000,
            },
            seed: 0,
            shard: Shard::default(),
            out,
            exec: Exec::default(),
        }
    }
}

/// What a session did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The run directory.
    pub dir: PathBuf,
    /// Numbers for this session.
    pub stats: Stats,
    /// Samples already judged before this session.
    pub earlier: usize,
    /// Bytes of a torn last line dropped from `samples.jsonl`.
    pub torn_bytes: usize,
    /// Multiple-choice problems of the run (scored, not sampled).
    pub choices: usize,
    /// Of them, those scored in this session.
    pub choices_scored: usize,
    /// Reference answers that could not be scored this session, with why (their problems
    /// are sampled all the same; only the continuous metrics lack them).
    pub unscored_references: Vec<(String, String)>,
    /// Why programs were judged with less than the strongest isolation, if they were.
    pub sandbox_downgrades: Vec<String>,
    /// The holder of a lock this session took over from an attempt that ended without
    /// releasing it (a killed, preempted or requeued job), if it did.
    pub taken_over: Option<String>,
}

impl Outcome {
    /// What the user should be told about the session beyond its numbers: weaker isolation,
    /// a dropped torn line, problems left out.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.sandbox_downgrades.is_empty() {
            w.push(format!(
                "programs were judged with weaker isolation than this tool can give; {}",
                self.sandbox_downgrades.join("; ")
            ));
        }
        if let Some((problem, why)) = self.unscored_references.first() {
            w.push(format!(
                "{} reference answers could not be scored for the continuous metrics (problem \
                 '{problem}': {why})",
                self.unscored_references.len()
            ));
        }
        if self.torn_bytes > 0 {
            w.push(format!(
                "dropped a torn last line ({} bytes) from samples.jsonl",
                self.torn_bytes
            ));
        }
        w
    }

    /// One line of the session's numbers: samples, rates, and where the time went: the
    /// engine's decode calls, the draws, and the runner's own share (the rest of the main
    /// thread's wall time: scheduling, detokenizing, stop strings, handing samples to the
    /// judges, writing; of which writing alone is given too).
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let wall = s.elapsed.max(1e-9);
        let pct = |t: f64| 100.0 * t / wall;
        format!(
            "{} samples this session ({} before), {:.1} samples/s, {:.1} tokens/s; \
             decode {:.1}%, draws {:.1}%, runner {:.1}% (writing {:.2}%) of wall, \
             judging {:.2} s on other threads",
            s.samples,
            self.earlier,
            s.samples as f64 / wall,
            s.tokens as f64 / wall,
            pct(s.decode_s),
            pct(s.draw_s),
            pct((s.elapsed - s.decode_s - s.draw_s).max(0.0)),
            pct(s.write_s),
            s.judge_s
        )
    }
}

impl RunOptions {
    /// The run these options define, with the model and task files hashed (each read once).
    /// Checks every setting ([`RunConfig::validate`], [`Exec::validate`]) before hashing.
    pub fn config(&self) -> Result<RunConfig, RunError> {
        let format = self.format.resolve(&self.task)?;
        let mut config = RunConfig {
            format: FORMAT_VERSION,
            passuntil: env!("CARGO_PKG_VERSION").to_owned(),
            model: FileRef::unhashed(&self.model),
            backend: self.backend,
            activations: self.activations,
            task: TaskRef {
                file: FileRef::unhashed(&self.task),
                format,
            },
            bigbench_scoring: match format {
                Format::Bigbench => record::BIGBENCH_SCORING,
                _ => 0,
            },
            chat: self.chat,
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            rule: self.rule.clone(),
            seed: self.seed,
            shard: self.shard,
            merged_from: Vec::new(),
            judge_isolation: None,
            checksum: String::new(),
        };
        config.validate()?;
        self.exec.validate()?;
        config.model = FileRef::of(&self.model)?;
        config.task.file = FileRef::of_task(&self.task, config.task.format)?;
        Ok(config)
    }
}

impl Exec {
    /// Whether a session can execute this way (a batch of at least one sample).
    pub fn validate(&self) -> Result<(), RunError> {
        if self.batch == 0 {
            return Err(RunError::BatchZero);
        }
        Ok(())
    }
}

/// Starts a run in `opts.out`, or continues the one there if its settings are the same.
pub fn start(opts: &RunOptions, progress: &mut dyn Progress) -> Result<Outcome, RunError> {
    let config = opts.config()?;
    // The task is read whole before anything is written, so a malformed file leaves no
    // run.json behind to disagree with the fixed one.
    let problems = crate::tasks::load(&opts.task, config.task.format)?;
    let dir = &opts.out;
    std::fs::create_dir_all(dir).map_err(|source| RunError::Io {
        path: dir.clone(),
        source,
    })?;
    let lock = lock_dir(dir)?;
    if dir.join("run.json").exists() {
        let old = RunConfig::load(dir)?;
        let mut differences = old.differences(&config);
        if old.shard != config.shard {
            differences.push(format!("shard: {} vs {}", old.shard, config.shard));
        }
        if !differences.is_empty() {
            return Err(RunError::Mismatch {
                dir: dir.clone(),
                differences,
            });
        }
    } else {
        config.save(dir)?;
    }
    execute(dir, &lock, &config, problems, &opts.exec, progress, false)
}

/// Continues the run in `dir` with its own settings, once its model and task files are found
/// unchanged.
pub fn resume(dir: &Path, exec: &Exec, progress: &mut dyn Progress) -> Result<Outcome, RunError> {
    exec.validate()?;
    let lock = lock_dir(dir)?;
    let config = RunConfig::load(dir)?;
    let task = check_task(&config)?;
    let problems = crate::tasks::load(&task, config.task.format)?;
    execute(dir, &lock, &config, problems, exec, progress, true)
}

/// The lock on a run directory (`DIR/.lock`): an exclusive `flock`, held until this is
/// dropped, with its holder's name (`pid N on HOST`) written in the file while it is held.
///
/// A process that ends normally clears the name before the kernel releases the lock; one that
/// is killed (a preempted or requeued job, an OOM kill, a lost node's process on a shared file
/// system that releases its locks) leaves its name behind, so the next attempt knows it took
/// over from an attempt that did not finish ([`RunLock::taken_over`]).
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    taken_over: Option<String>,
    /// Put the dead holder's name back on release (a reader such as `merge` must not erase
    /// what the next attempt should be told).
    restore: bool,
}

impl RunLock {
    /// The holder named in a lock whose holder ended without releasing it, if this lock was
    /// taken over from one.
    pub fn taken_over(&self) -> Option<&str> {
        self.taken_over.as_deref()
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        use std::io::{Seek, Write};
        // Cleared first: the lock itself goes with the file descriptor, right after.
        let _ = self.file.set_len(0);
        if let (true, Some(previous)) = (self.restore, &self.taken_over) {
            let _ = self.file.rewind();
            let _ = write!(self.file, "{previous}");
        }
    }
}

/// Whether `text` is a holder's name as [`holder_name`] writes it (`pid N on HOST`); older
/// versions wrote a bare pid and never cleared it, which says nothing about how they ended.
fn is_holder_name(text: &str) -> bool {
    text.strip_prefix("pid ")
        .and_then(|t| t.split_once(" on "))
        .is_some_and(|(pid, host)| pid.parse::<u32>().is_ok() && !host.is_empty())
}

/// This process as a lock holder: `pid N on HOST` (the host matters on shared file systems).
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into());
    format!("pid {} on {host}", std::process::id())
}

/// Takes the run directory's lock, or says who holds it. A lock left by a process that died is
/// released by the kernel, so a restarted job takes it over (and learns it did).
pub fn lock_dir(dir: &Path) -> Result<RunLock, RunError> {
    lock_dir_as(dir, false)
}

/// [`lock_dir`] for a reader that must leave a dead holder's name for the next writer.
fn lock_dir_reading(dir: &Path) -> Result<RunLock, RunError> {
    lock_dir_as(dir, true)
}

fn lock_dir_as(dir: &Path, restore: bool) -> Result<RunLock, RunError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(".lock");
    let io = |source| RunError::Io {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let read_holder = |f: &mut std::fs::File| {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        holder.trim().to_owned()
    };
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = read_holder(&mut f);
            return Err(RunError::Locked {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "?".into()
                } else {
                    holder
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let previous = read_holder(&mut f);
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    write!(f, "{}", holder_name()).map_err(io)?;
    f.flush().map_err(io)?;
    Ok(RunLock {
        file: f,
        taken_over: is_holder_name(&previous).then_some(previous),
        restore,
    })
}

fn check_file(what: &'static str, recorded: &FileRef) -> Result<PathBuf, RunError> {
    let path = PathBuf::from(&recorded.path);
    let now = FileRef::of(&path)?;
    check_same(what, recorded, now)?;
    Ok(path)
}

/// The run's task file, checked against `run.json` with its BIG-bench subtasks
/// ([`FileRef::of_task`]).
fn check_task(config: &RunConfig) -> Result<PathBuf, RunError> {
    let recorded = &config.task.file;
    let path = PathBuf::from(&recorded.path);
    check_same(
        "task file",
        recorded,
        FileRef::of_task(&path, config.task.format)?,
    )?;
    Ok(path)
}

/// A changed file is an error naming it.
fn check_same(what: &'static str, recorded: &FileRef, now: FileRef) -> Result<(), RunError> {
    if now.sha256 != recorded.sha256 {
        return Err(RunError::FileChanged {
            what,
            path: recorded.path.clone(),
            then: recorded.sha256.clone(),
            now: now.sha256,
        });
    }
    Ok(())
}

/// A shard's problems, as a run sees them.
#[derive(Clone, Debug)]
pub struct ShardProblems {
    /// The problems sampled, with their index in the task file.
    pub sampled: Vec<(u64, Problem)>,
    /// The multiple-choice problems (scored, not sampled), with their index in the task
    /// file.
    pub choice: Vec<(u64, Problem)>,
}

/// The problems of a run's shard, read from the task file at `path`.
pub fn shard_problems(config: &RunConfig, path: &Path) -> Result<ShardProblems, RunError> {
    Ok(shard_of(
        config,
        crate::tasks::load(path, config.task.format)?,
    ))
}

/// The prompt length in tokens of each problem of a run's shard, keyed by its index in the
/// task file, tokenized as the run tokenized it (the model at `model`, the task file at
/// `task`; both must be the files the run is pinned to, which the caller checks).
pub fn prompt_lengths(
    config: &RunConfig,
    model: &Path,
    task: &Path,
) -> Result<std::collections::BTreeMap<u64, usize>, RunError> {
    let problems = shard_problems(config, task)?.sampled;
    // Tokenization is the same on both engines (tested); the native one needs no library.
    let backend = engine::open(BackendKind::Native, model, &engine::OpenOptions::default())?;
    let exec = Exec {
        allow_long_context: true,
        ..Exec::default()
    };
    Ok(jobs_for(&*backend, config, &exec, &problems)?
        .into_iter()
        .map(|j| (j.p, j.prompt.len()))
        .collect())
}

/// The files of what a run scores rather than samples: multiple-choice problems' choices,
/// then generative problems' reference answers.
pub const SCORED_FILES: [&str; 2] = ["choices.jsonl", "references.jsonl"];

/// The problems of a run's shard among all of its task's.
fn shard_of(config: &RunConfig, all: Vec<Problem>) -> ShardProblems {
    let mut choice = Vec::new();
    let mut out = Vec::new();
    for (p, problem) in all.into_iter().enumerate() {
        if !config.shard.holds(p) {
            continue;
        }
        if matches!(problem.check, Check::MultipleChoice { .. }) {
            choice.push((p as u64, problem));
        } else {
            out.push((p as u64, problem));
        }
    }
    ShardProblems {
        sampled: out,
        choice,
    }
}

/// Rebuilds each problem's state from the records; records must belong to the problems.
fn states_from(
    problems: &[(u64, Problem)],
    records: &[SampleRecord],
    rule: &StopRule,
    samples: &Path,
) -> Result<Vec<ProblemState>, RunError> {
    let by_p: std::collections::HashMap<u64, usize> = problems
        .iter()
        .enumerate()
        .map(|(j, (p, _))| (*p, j))
        .collect();
    let mut states = vec![ProblemState::default(); problems.len()];
    for (line, r) in records.iter().enumerate() {
        let j = by_p
            .get(&r.p)
            .copied()
            .filter(|&j| problems[j].1.id == r.problem && r.index < rule.cap())
            .ok_or_else(|| RunError::Malformed {
                path: samples.to_path_buf(),
                line: line + 1,
                message: format!(
                    "sample {} of problem '{}' (index {}) is not part of this run",
                    r.index, r.problem, r.p
                ),
            })?;
        states[j].judged(r.index, r.passed, rule);
    }
    Ok(states)
}

/// Samples what the run in `dir` still needs; `all` are its task's problems (its task file
/// was checked by the caller). The model file is checked against `run.json` when
/// `check_model` and there is work left.
fn execute(
    dir: &Path,
    lock: &RunLock,
    config: &RunConfig,
    all: Vec<Problem>,
    exec: &Exec,
    progress: &mut dyn Progress,
    check_model: bool,
) -> Result<Outcome, RunError> {
    if let Some(previous) = lock.taken_over() {
        progress.note(&format!(
            "took over {} from an attempt that ended without releasing it ({previous}); \
             resuming from its samples",
            dir.display()
        ));
    }
    if config.task.format == Format::Bigbench && config.bigbench_scoring != record::BIGBENCH_SCORING
    {
        return Err(RunError::OldRules(dir.to_path_buf()));
    }
    let ShardProblems {
        sampled: problems,
        choice,
    } = shard_of(config, all);
    let samples_path = dir.join("samples.jsonl");
    let loaded = load_samples(&samples_path)?;
    let mut states = states_from(&problems, &loaded.records, &config.rule, &samples_path)?;
    // What is scored rather than sampled: multiple-choice problems' choices, and generative
    // problems' reference answers (for the continuous metrics).
    let wanted: [Vec<choices::Scoring>; 2] = [
        choice
            .iter()
            .filter_map(|(p, pr)| choices::Scoring::choices(*p, pr))
            .collect(),
        problems
            .iter()
            .filter_map(|(p, pr)| choices::Scoring::reference(*p, pr, config.chat))
            .collect(),
    ];
    let mut scored_before = Vec::new();
    let mut writers = Vec::new();
    let mut todo = Vec::new();
    for (file, want) in wanted.into_iter().enumerate() {
        let path = dir.join(SCORED_FILES[file]);
        let (scored, good_len) = load_choices(&path)?;
        if let Some((line, r)) = scored.iter().enumerate().find(|(_, r)| {
            !want
                .iter()
                .any(|w| w.p == r.p && w.problem.id == r.problem && w.choices == r.choices)
        }) {
            return Err(RunError::Malformed {
                path,
                line: line + 1,
                message: format!(
                    "problem '{}' (index {}) with these choices is not one this run scores",
                    r.problem, r.p
                ),
            });
        }
        todo.extend(
            want.into_iter()
                .filter(|w| !scored.iter().any(|r| r.p == w.p)),
        );
        scored_before.extend(scored.iter().map(|r| r.session + 1));
        writers.push(choices::ChoiceWriter::open(&path, good_len)?);
    }
    let mut writers: [choices::ChoiceWriter; 2] = writers
        .try_into()
        .unwrap_or_else(|_| unreachable!("one writer per scored file"));
    let session = loaded
        .records
        .iter()
        .map(|r| r.session + 1)
        .chain(scored_before)
        .max()
        .unwrap_or(0);
    let mut outcome = Outcome {
        dir: dir.to_path_buf(),
        stats: Stats {
            problems: problems.len(),
            decided: states.iter().filter(|s| s.decision().is_some()).count(),
            ..Stats::default()
        },
        earlier: loaded.records.len(),
        torn_bytes: loaded.torn_bytes,
        choices: choice.len(),
        choices_scored: 0,
        unscored_references: Vec::new(),
        sandbox_downgrades: Vec::new(),
        taken_over: lock.taken_over().map(str::to_owned),
    };
    let mut writer = SampleWriter::open(&samples_path, loaded.good_len)?;
    let sampling_left = outcome.stats.decided < problems.len();
    if !sampling_left && todo.is_empty() {
        return Ok(outcome);
    }
    let needs_sandbox = sampling_left
        && problems
            .iter()
            .any(|(_, p)| matches!(p.check, Check::Program { .. }));
    let sandbox = if needs_sandbox {
        let sandbox = crate::judges::Sandbox::new(crate::judges::Limits::default())
            .map_err(RunError::Sandbox)?;
        // run.json says how this session's programs are isolated (a resumed run may be on
        // another machine); it is not a setting, so it changes no sample.
        outcome.sandbox_downgrades = sandbox.downgrades().to_vec();
        let isolation = Some(*sandbox.isolation());
        if config.judge_isolation != isolation {
            RunConfig {
                judge_isolation: isolation,
                ..config.clone()
            }
            .save(dir)?;
        }
        Some(Arc::new(sandbox))
    } else {
        None
    };
    let judge_threads = exec.judge_threads.unwrap_or(if needs_sandbox {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    } else {
        1
    });
    let model_path = if check_model {
        check_file("model", &config.model)?
    } else {
        PathBuf::from(&config.model.path)
    };
    let model = engine::open(config.backend, &model_path, &engine::OpenOptions::default())?;
    // The sampled problems' prompts are checked (and refused) before anything is scored.
    let jobs = if sampling_left {
        let jobs = jobs_for(&*model, config, exec, &problems)?;
        check_context(&jobs, config, exec, model.info().n_ctx_train as usize)?;
        jobs
    } else {
        Vec::new()
    };
    if !todo.is_empty() {
        outcome.unscored_references = choices::score_all(
            model.clone(),
            config,
            exec,
            &todo,
            &mut writers,
            session,
            progress,
        )?;
        outcome.choices_scored = todo.iter().filter(|w| w.file == 0).count();
    }
    if !sampling_left {
        return Ok(outcome);
    }
    let (mut ctx, jobs, shape) = open_context(config.backend, model, config, jobs, exec)?;
    outcome.stats = scheduler::drive(
        &mut *ctx,
        config,
        &jobs,
        &mut states,
        &mut writer,
        session,
        scheduler::Shape {
            judge_threads,
            ..shape
        },
        sandbox,
        progress,
    )?;
    Ok(outcome)
}

/// A context sized for a session's jobs, the jobs, and the sampling loop's shape.
type Opened = (Box<dyn Context>, Vec<scheduler::Job>, scheduler::Shape);

/// A context on `model` sized for the tokenized problems `jobs`.
fn open_context(
    kind: BackendKind,
    model: Arc<dyn Model>,
    config: &RunConfig,
    jobs: Vec<scheduler::Job>,
    exec: &Exec,
) -> Result<Opened, RunError> {
    let max_prompt = check_context(&jobs, config, exec, model.info().n_ctx_train as usize)?;
    let shape = shape_for(exec.batch, kind.max_sequences().unwrap_or(1024) as usize);
    let n_seq = shape.batch + shape.prompt_seqs;
    let options = match kind {
        // Cells: every prompt sequence's prompt, plus each slot's own tokens (a slot forks
        // its prompt's cells and adds at most max_tokens; finished slots give theirs back).
        BackendKind::Native => engine::ContextOptions::new(
            (shape.prompt_seqs * max_prompt + shape.batch * (config.max_tokens + 1) + 16) as u32,
            n_seq as u32,
        ),
        // A stream of cells per sequence: each sample's rows then never depend on which other
        // samples share the batch, which llama.cpp's unified cache cannot promise.
        BackendKind::LlamaCpp => {
            let per_seq = (max_prompt + config.max_tokens + 1).next_multiple_of(256);
            engine::ContextOptions {
                unified_kv: std::env::var_os("PASSUNTIL_UNIFIED_KV").is_some(),
                ..engine::ContextOptions::new((per_seq * n_seq) as u32, n_seq as u32)
            }
        }
    };
    let ctx = model.context(&engine::ContextOptions {
        threads: exec.threads,
        activations: config.activations,
        ..options
    })?;
    Ok((ctx, jobs, shape))
}

/// Where the code block a chat run opens for a program problem ends.
pub const CHAT_CODE_END: &str = "\n```";

/// How a text prompt is put to an instruction-tuned model (`run --chat`): the user's message
/// and the start of the assistant's reply, which the model continues. Most prompts are the
/// message as they are, the reply opened empty. A program problem (HumanEval) asks for the
/// function in a Python code block and opens the reply with the block (as EvalPlus prompts
/// instruction-tuned models); the sample is the code up to where the model closes the block
/// ([`CHAT_CODE_END`], the run's only stop for it besides `--stop`) and is judged as
/// [`chat_judged`] says. Chat prompts are left as they are. Text inside a message that spells
/// a special token (`<|im_end|>`) is read as that token, as chat prompts' text always is.
pub fn chat_form(problem: &Problem) -> Option<(Vec<crate::tasks::Message>, String)> {
    let Prompt::Text(text) = &problem.prompt else {
        return None;
    };
    let user = |content: String| crate::tasks::Message::new("user", &content);
    Some(match &problem.check {
        Check::Program { .. } => {
            let stub = if text.ends_with('\n') {
                text.clone()
            } else {
                format!("{text}\n")
            };
            (
                vec![user(format!(
                    "Complete the following Python function. Reply with the whole function \
                     in one Python code block.\n\n```python\n{stub}```"
                ))],
                "```python\n".to_owned(),
            )
        }
        _ => (vec![user(text.clone())], String::new()),
    })
}

/// The problem a chat run judges a program sample against: the stub closed with `pass` (at
/// the indentation of the body after the entry point's `def`: its docstring's), then the
/// sample (the whole function, which replaces the stub's), then the tests, so the stub's
/// imports and helpers stay in scope and a sample that never defines the function fails. A
/// prompt with no `def` of its entry point is judged as it is. Other problems are judged as
/// they are.
pub fn chat_judged(problem: &Problem) -> Problem {
    let mut judged = problem.clone();
    if let (Prompt::Text(text), Check::Program { entry_point, .. }) =
        (&problem.prompt, &problem.check)
    {
        judged.stop = vec![CHAT_CODE_END.to_owned()];
        let Some(def) = text.rfind(&format!("def {entry_point}(")) else {
            return judged;
        };
        let indent = text[def..]
            .lines()
            .skip(1)
            .find(|l| !l.trim().is_empty())
            .map(|l| &l[..l.len() - l.trim_start().len()])
            .filter(|i| !i.is_empty())
            .unwrap_or("    ");
        let nl = if text.ends_with('\n') { "" } else { "\n" };
        judged.prompt = Prompt::Text(format!("{text}{nl}{indent}pass\n\n\n"));
    }
    judged
}

/// A problem's prompt as the run gives it to the model: a text prompt tokenized as it is
/// (BOS added, special tokens as text) or, in a chat run, in its [`chat_form`]; chat prompts
/// through the template.
pub(crate) fn prompt_tokens(
    backend: &dyn Model,
    problem: &Problem,
    chat: bool,
) -> Result<Vec<u32>, RunError> {
    let refuse = |e| RunError::Prompt {
        problem: problem.id.clone(),
        reason: PromptError::Chat(e),
    };
    match (&problem.prompt, chat) {
        (Prompt::Text(text), false) => Ok(backend.tokenize(
            text.as_bytes(),
            TokenizeOptions {
                add_special: true,
                parse_special: false,
            },
        )?),
        (Prompt::Chat(messages), _) => {
            crate::generate::chat_tokens(backend, messages).map_err(refuse)
        }
        (Prompt::Text(_), true) => {
            let (messages, prefill) = chat_form(problem).expect("a text prompt");
            crate::generate::chat_tokens_with(backend, &messages, &prefill).map_err(refuse)
        }
    }
}

/// Tokenizes every problem's prompt and gathers its stop strings.
fn jobs_for(
    backend: &dyn Model,
    config: &RunConfig,
    exec: &Exec,
    problems: &[(u64, Problem)],
) -> Result<Vec<scheduler::Job>, RunError> {
    problems
        .iter()
        .map(|(p, problem)| {
            let bytes = match &problem.prompt {
                Prompt::Text(text) => text.len(),
                Prompt::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
            };
            let refuse = |reason| RunError::Prompt {
                problem: problem.id.clone(),
                reason,
            };
            if !exec.allow_long_context {
                crate::generate::check_prompt_bytes(bytes, backend.info().n_ctx_train)
                    .map_err(|e| refuse(PromptError::TooManyBytes(e)))?;
            }
            let prompt = prompt_tokens(backend, problem, config.chat)?;
            if prompt.is_empty() {
                return Err(refuse(PromptError::Empty));
            }
            let bytes = |list: &[String]| -> Vec<Vec<u8>> {
                list.iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec())
                    .collect()
            };
            let judged = if config.chat {
                chat_judged(problem)
            } else {
                problem.clone()
            };
            Ok(scheduler::Job {
                p: *p,
                prompt,
                stop: bytes(&judged.stop),
                problem: Arc::new(judged),
                run_stop: bytes(&config.stop),
            })
        })
        .collect()
}

/// The longest prompt, after checking that every prompt and its new tokens fit the model's
/// training context.
fn check_context(
    jobs: &[scheduler::Job],
    config: &RunConfig,
    exec: &Exec,
    n_ctx_train: usize,
) -> Result<usize, RunError> {
    if let Some(j) = jobs
        .iter()
        .find(|j| !exec.allow_long_context && j.prompt.len() + config.max_tokens > n_ctx_train)
    {
        return Err(RunError::Prompt {
            problem: j.problem.id.clone(),
            reason: PromptError::TooLong {
                prompt: j.prompt.len(),
                max_tokens: config.max_tokens,
                n_ctx_train,
            },
        });
    }
    Ok(jobs.iter().map(|j| j.prompt.len()).max().unwrap_or(1))
}

/// Sample slots and prompt sequences for a batch size.
fn shape_for(batch: usize, max_sequences: usize) -> scheduler::Shape {
    let batch = batch.min(max_sequences - 1).max(1);
    let prompt_seqs = (batch / 4).clamp(1, max_sequences - batch);
    scheduler::Shape {
        batch,
        prompt_seqs,
        judge_threads: 1,
    }
}

/// What `merge` produced.
#[derive(Clone, Debug)]
pub struct MergeSummary {
    /// Shards merged.
    pub shards: Vec<Shard>,
    /// Samples written.
    pub samples: usize,
    /// Problems still undecided in the merged run (0 unless incomplete shards were allowed).
    pub undecided: usize,
    /// Shards whose completeness could not be told (their task file was not there), merged
    /// because incomplete shards were allowed.
    pub unchecked: Vec<Shard>,
}

impl MergeSummary {
    /// What was merged into `out`, and what is left to do.
    pub fn render(&self, out: &Path) -> String {
        let mut text = format!(
            "merged {} shards, {} samples into {}\n",
            self.shards.len(),
            self.samples,
            out.display()
        );
        if !self.unchecked.is_empty() {
            text += &format!(
                "shards {} could not be checked for completeness (their task file is not \
                 here); `pass-until resume {}` where it is finishes whatever is left\n",
                self.unchecked
                    .iter()
                    .map(Shard::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                out.display()
            );
        }
        if self.undecided > 0 {
            text += &format!(
                "{} problems are not decided yet; `pass-until resume {}` finishes them\n",
                self.undecided,
                out.display()
            );
        }
        text
    }
}

/// Problems of a shard directory's run that are not decided yet, or why that cannot be told.
fn undecided_in(
    config: &RunConfig,
    records: &[SampleRecord],
    scored: &[ChoiceRecord],
    dir: &Path,
) -> Result<usize, String> {
    let path = Path::new(&config.task.file.path);
    match FileRef::of_task(path, config.task.format) {
        Ok(now) if now.sha256 == config.task.file.sha256 => {}
        Ok(_) => return Err(format!("the task file {} has changed", path.display())),
        Err(e) => return Err(format!("the task file cannot be read ({e})")),
    }
    let ShardProblems {
        sampled: problems,
        choice,
    } = shard_problems(config, path).map_err(|e| e.to_string())?;
    let states = states_from(&problems, records, &config.rule, &dir.join("samples.jsonl"))
        .map_err(|e| e.to_string())?;
    let unscored = choice
        .iter()
        .filter(|(p, _)| !scored.iter().any(|r| r.p == *p))
        .count();
    Ok(states.iter().filter(|s| s.decision().is_none()).count() + unscored)
}

/// Combines shard directories of one run into `out` (a run of the whole task that `report`
/// and `resume` accept). The shards must share every setting but the shard, be distinct, not
/// be in use, together cover all `N`, and (unless `allow_incomplete`) have decided every
/// problem; each refusal names the shard.
pub fn merge(
    dirs: &[PathBuf],
    out: &Path,
    allow_incomplete: bool,
) -> Result<MergeSummary, RunError> {
    let Some(first) = dirs.first() else {
        return Err(RunError::NothingToMerge);
    };
    let base = RunConfig::load(first)?;
    let mut shards = Vec::new();
    let mut records = Vec::new();
    let mut scored_records: [Vec<ChoiceRecord>; 2] = [Vec::new(), Vec::new()];
    let mut session_offset = 0;
    let mut undecided = 0;
    let mut unchecked = Vec::new();
    let mut locks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        if !seen.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone())) {
            return Err(RunError::MergedTwice(dir.clone()));
        }
        // A shard still being written is refused; one that cannot be locked (a read-only
        // copy) is read as it is.
        match lock_dir_reading(dir) {
            Ok(lock) => locks.push(lock),
            Err(e @ RunError::Locked { .. }) => return Err(e),
            Err(_) => {}
        }
        let c = RunConfig::load(dir)?;
        let differences = base.differences(&c);
        if !differences.is_empty() {
            return Err(RunError::Mismatch {
                dir: dir.clone(),
                differences,
            });
        }
        if c.shard.count() != base.shard.count() || shards.contains(&c.shard) {
            return Err(RunError::ShardMisfit {
                dir: dir.clone(),
                shard: c.shard,
                others: shards.clone(),
            });
        }
        shards.push(c.shard);
        let loaded = load_samples(&dir.join("samples.jsonl"))?;
        if let Some(r) = loaded.records.iter().find(|r| !c.shard.holds(r.p as usize)) {
            return Err(RunError::ForeignSample {
                dir: dir.clone(),
                problem: r.problem.clone(),
                shard: c.shard,
            });
        }
        let mut scored = [Vec::new(), Vec::new()];
        for (file, name) in SCORED_FILES.iter().enumerate() {
            scored[file] = load_choices(&dir.join(name))?.0;
            if let Some(r) = scored[file].iter().find(|r| !c.shard.holds(r.p as usize)) {
                return Err(RunError::ForeignSample {
                    dir: dir.clone(),
                    problem: r.problem.clone(),
                    shard: c.shard,
                });
            }
        }
        match undecided_in(&c, &loaded.records, &scored[0], dir) {
            Ok(0) => {}
            Ok(n) if allow_incomplete => undecided += n,
            Ok(n) => {
                return Err(RunError::ShardIncomplete {
                    dir: dir.clone(),
                    shard: c.shard,
                    why: format!("{n} of its problems are not decided yet"),
                })
            }
            Err(_) if allow_incomplete => unchecked.push(c.shard),
            Err(why) => {
                return Err(RunError::ShardIncomplete {
                    dir: dir.clone(),
                    shard: c.shard,
                    why: format!("whether its problems are decided cannot be told: {why}"),
                })
            }
        }
        let sessions = loaded
            .records
            .iter()
            .map(|r| r.session + 1)
            .chain(scored.iter().flatten().map(|r| r.session + 1))
            .max()
            .unwrap_or(0);
        for mut r in loaded.records {
            r.session += session_offset;
            records.push(r);
        }
        for (file, list) in scored.into_iter().enumerate() {
            for mut r in list {
                r.session += session_offset;
                scored_records[file].push(r);
            }
        }
        session_offset += sessions;
    }
    let missing: Vec<Shard> = (0..base.shard.count())
        .filter(|&i| !shards.iter().any(|s| s.index() == i))
        .filter_map(|index| Shard::new(index, base.shard.count()).ok())
        .collect();
    if !missing.is_empty() {
        return Err(RunError::ShardsMissing { missing });
    }
    records.sort_by_key(|r| (r.p, r.index));
    for list in &mut scored_records {
        list.sort_by_key(|r| r.p);
    }
    std::fs::create_dir_all(out).map_err(|source| RunError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let _lock = lock_dir(out)?;
    let samples = out.join("samples.jsonl");
    if samples.exists() || out.join("run.json").exists() {
        return Err(RunError::NotEmpty(out.to_path_buf()));
    }
    shards.sort_by_key(|s| s.index());
    let merged = RunConfig {
        shard: Shard::default(),
        merged_from: shards.clone(),
        ..base
    };
    let mut w = SampleWriter::open(&samples, 0)?;
    for r in &records {
        w.append(r)?;
    }
    w.sync()?;
    for (list, name) in scored_records.iter().zip(SCORED_FILES) {
        if !list.is_empty() {
            let mut w = choices::ChoiceWriter::open(&out.join(name), 0)?;
            for r in list {
                w.append(r)?;
            }
        }
    }
    merged.save(out)?;
    drop(locks);
    Ok(MergeSummary {
        shards,
        samples: records.len(),
        undecided,
        unchecked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-problem task, and a shard directory of a run on it with the given samples.
    fn shard_dir(root: &Path, shard: Shard, samples: &[(u64, u64, bool)]) -> PathBuf {
        let task = root.join("task.jsonl");
        if !task.exists() {
            std::fs::write(
                &task,
                "{\"id\": \"a\", \"prompt\": \"1+1=\", \"target\": \"2\"}\n\
                 {\"id\": \"b\", \"prompt\": \"2+2=\", \"target\": \"4\"}\n",
            )
            .unwrap();
        }
        let dir = root.join(format!("shard-{}", shard.index()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = FileRef::of(&task).unwrap();
        RunConfig {
            format: FORMAT_VERSION,
            passuntil: "test".into(),
            model: file.clone(),
            backend: BackendKind::Native,
            activations: engine::Activations::Q8,
            task: TaskRef {
                file,
                format: Format::Jsonl,
            },
            bigbench_scoring: 0,
            chat: false,
            sampling: engine::sampling::SamplingParams::default(),
            max_tokens: 4,
            stop: Vec::new(),
            rule: StopRule::PassUntil {
                r: 1,
                max_samples: 3,
            },
            seed: 0,
            shard,
            merged_from: Vec::new(),
            judge_isolation: None,
            checksum: String::new(),
        }
        .save(&dir)
        .unwrap();
        let mut w = SampleWriter::open(&dir.join("samples.jsonl"), 0).unwrap();
        for &(p, index, passed) in samples {
            w.append(&SampleRecord {
                problem: ["a", "b"][p as usize].into(),
                p,
                index,
                passed,
                verdict: if passed {
                    crate::judges::Verdict::Pass
                } else {
                    crate::judges::Verdict::Fail {
                        detail: "no".into(),
                    }
                },
                text: String::new(),
                tokens: vec![1],
                stop: Stopped::Eog,
                logprob: -1.0,
                sampling_logprob: -1.0,
                session: 0,
                elapsed_s: 0.0,
                judge_ms: 0.0,
            })
            .unwrap();
        }
        dir
    }

    #[test]
    fn merge_combines_scored_multiple_choice_problems() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Problems 2 and 3 are multiple choice: shard 0 holds a and c, shard 1 b and d.
        std::fs::write(
            root.join("task.jsonl"),
            "{\"id\": \"a\", \"prompt\": \"1+1=\", \"target\": \"2\"}\n\
             {\"id\": \"b\", \"prompt\": \"2+2=\", \"target\": \"4\"}\n\
             {\"id\": \"c\", \"prompt\": \"Sky?\", \"choices\": [\" blue\", \" red\"], \"answer\": 0}\n\
             {\"id\": \"d\", \"prompt\": \"Grass?\", \"choices\": [\" blue\", \" green\"], \"answer\": 1}\n",
        )
        .unwrap();
        let s0 = shard_dir(root, Shard::new(0, 2).unwrap(), &[(0, 0, true)]);
        let s1 = shard_dir(root, Shard::new(1, 2).unwrap(), &[(1, 0, true)]);
        let record = |id: &str, p: u64| ChoiceRecord {
            problem: id.into(),
            p,
            choices: vec![" blue".into(), " x".into()],
            scores: vec![1.0, 0.0],
            loglikelihoods: vec![-1.0, -2.0],
            tokens: vec![1, 1],
            greedy: vec![true, false],
            session: 0,
        };
        let write = |dir: &Path, records: &[ChoiceRecord]| {
            let path = dir.join("choices.jsonl");
            let _ = std::fs::remove_file(&path);
            let mut w = choices::ChoiceWriter::open(&path, 0).unwrap();
            for r in records {
                w.append(r).unwrap();
            }
        };
        write(&s0, &[record("c", 2)]);
        // d is not scored yet: shard 1 is incomplete.
        match merge(&[s0.clone(), s1.clone()], &root.join("m1"), false) {
            Err(e @ RunError::ShardIncomplete { .. }) => {
                assert!(e.to_string().contains("shard 1/2 is incomplete"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A record of a problem another shard holds is refused, naming the shard.
        write(&s1, &[record("c", 2)]);
        match merge(&[s0.clone(), s1.clone()], &root.join("m2"), false) {
            Err(e @ RunError::ForeignSample { .. }) => {
                assert!(e.to_string().contains("shard-1"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        write(&s1, &[record("d", 3)]);
        merge(&[s1.clone(), s0.clone()], &root.join("m3"), false).unwrap();
        let (merged, _) = load_choices(&root.join("m3").join("choices.jsonl")).unwrap();
        let got: Vec<(&str, u64)> = merged.iter().map(|r| (r.problem.as_str(), r.p)).collect();
        assert_eq!(got, [("c", 2), ("d", 3)]);
        let r = report::report(&root.join("m3")).unwrap();
        assert_eq!(r.choices.unwrap().scored, 2);
    }

    #[test]
    fn merge_names_missing_incomplete_running_and_foreign_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let s0 = shard_dir(
            root,
            Shard::new(0, 2).unwrap(),
            &[(0, 0, false), (0, 1, true)],
        );
        let s1 = shard_dir(root, Shard::new(1, 2).unwrap(), &[(1, 0, false)]);
        let out = |name: &str| root.join(name);
        match merge(std::slice::from_ref(&s0), &out("m1"), false) {
            Err(e @ RunError::ShardsMissing { .. }) => {
                assert!(e.to_string().contains("shards 1/2 are missing"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // Shard 1 has one of its problem's three samples and no pass: undecided.
        match merge(&[s0.clone(), s1.clone()], &out("m2"), false) {
            Err(e @ RunError::ShardIncomplete { .. }) => {
                let e = e.to_string();
                assert!(e.contains("shard-1: shard 1/2 is incomplete"), "{e}");
                assert!(e.contains("1 of its problems are not decided"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!out("m2").join("run.json").exists());
        let m = merge(&[s0.clone(), s1.clone()], &out("m3"), true).unwrap();
        assert_eq!((m.samples, m.undecided), (3, 1));
        // The merged run is a run of the whole task that knows what is left to do.
        let merged = RunConfig::load(&out("m3")).unwrap();
        let problems = shard_problems(&merged, Path::new(&merged.task.file.path)).unwrap();
        let states = states_from(
            &problems.sampled,
            &load_samples(&out("m3").join("samples.jsonl"))
                .unwrap()
                .records,
            &merged.rule,
            &out("m3"),
        )
        .unwrap();
        assert_eq!(
            states
                .iter()
                .map(|s| s.decision().is_some())
                .collect::<Vec<_>>(),
            [true, false]
        );
        // A shard still being written is refused, naming its holder.
        let held = lock_dir(&s1).unwrap();
        match merge(&[s0.clone(), s1.clone()], &out("m4"), true) {
            Err(RunError::Locked { dir, .. }) => assert_eq!(dir, s1),
            other => panic!("{other:?}"),
        }
        drop(held);
        // A shard of another run (another seed) is named with what differs.
        let foreign = root.join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        let mut c = RunConfig::load(&s1).unwrap();
        c.seed = 9;
        c.save(&foreign).unwrap();
        match merge(&[s0.clone(), foreign.clone()], &out("m5"), true) {
            Err(RunError::Mismatch { dir, differences }) => {
                assert_eq!(dir, foreign);
                assert_eq!(differences, ["seed: 0 vs 9"]);
            }
            other => panic!("{other:?}"),
        }
        // The same shard twice, or a copy of it, does not fit.
        let e = merge(&[s0.clone(), s0.clone()], &out("m6"), true).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let copy = root.join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["run.json", "samples.jsonl"] {
            std::fs::copy(s0.join(f), copy.join(f)).unwrap();
        }
        match merge(&[s0.clone(), copy], &out("m7"), true) {
            Err(e @ RunError::ShardMisfit { .. }) => {
                assert!(e.to_string().contains("shard 0/2 does not fit"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_directory_has_one_user_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        match lock_dir(dir.path()) {
            Err(RunError::Locked { holder, .. }) => {
                assert!(holder.starts_with(&format!("pid {} on ", std::process::id())))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(held.taken_over(), None);
        // Released cleanly: the next holder took over nothing.
        drop(held);
        let again = lock_dir(dir.path()).unwrap();
        assert_eq!(again.taken_over(), None);
        // A holder that died holding it (its name left in the file; the kernel released the
        // flock with its process): the next one says whose lock it took over.
        std::mem::forget(again);
        let lock_file = dir.path().join(".lock");
        let name = std::fs::read_to_string(&lock_file).unwrap();
        // Forgetting leaked the descriptor, and with it the flock; a fresh file stands in for
        // the dead process's released one.
        std::fs::remove_file(&lock_file).unwrap();
        std::fs::write(&lock_file, &name).unwrap();
        // A reader (merge) that takes it leaves the dead holder's name for the next writer.
        drop(lock_dir_reading(dir.path()).unwrap());
        let after = lock_dir(dir.path()).unwrap();
        assert_eq!(after.taken_over(), Some(name.as_str()));
        drop(after);
        // A bare pid, as versions before the holder names wrote and never cleared, is no
        // sign of a killed attempt.
        std::fs::write(&lock_file, "12345").unwrap();
        assert_eq!(lock_dir(dir.path()).unwrap().taken_over(), None);
    }
}
