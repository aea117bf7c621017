//! The sampling loop: continuous batching over an [`engine::Context`], judging on other threads.
//!
//! Each active problem's prompt is evaluated once into its own sequence and forked into a
//! sample slot whenever the slot frees, so one decode batch holds samples of many problems at
//! different positions. A finished sample leaves the cache at once, goes to a judge thread,
//! and its slot takes the next sample; the main thread writes judged samples as they come
//! back. Slots go to the active problem with the fewest samples in flight, new problems are
//! activated as decided ones leave, and a problem's prompt stays in the cache until its last
//! generating sample is done.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::backend::{Batch, Context, Logits, SeqId, Token};
use engine::generate::{Sample, Sequence, StopRules, StopWhere};
use engine::sampling::{SampleKey, SamplingParams};

use super::record::{RunConfig, SampleRecord, SampleWriter};
use super::state::ProblemState;
use super::RunError;
use crate::judges::{judge_program, judge_text, Sandbox, Verdict, VerdictCache};
use crate::tasks::{Check, Problem};

/// A problem ready to sample: its prompt tokenized, its stop strings gathered.
#[derive(Clone, Debug)]
pub struct Job {
    /// Index in the task file (the random key's problem id).
    pub p: u64,
    /// The problem.
    pub problem: Arc<Problem>,
    /// Prompt tokens.
    pub prompt: Vec<Token>,
    /// The problem's stop strings (counted where its check says, see [`Job::stop_where`]).
    pub stop: Vec<Vec<u8>>,
    /// The run's own stop strings, counted anywhere.
    pub run_stop: Vec<Vec<u8>>,
}

impl Job {
    /// Where its stop strings count: as BIG-bench post-processes outputs for its problems
    /// (a `stop_string` that opens the text does not cut it; the default pattern passes over
    /// leading separators), anywhere otherwise.
    fn stop_where(&self) -> StopWhere {
        match &self.problem.check {
            Check::BigBench {
                stop_string: Some(_),
                ..
            } => StopWhere::NotFirst,
            Check::BigBench {
                stop_string: None,
                output_regex: Some(p),
                ..
            } if p.as_str() == crate::judges::BIGBENCH_DEFAULT_REGEX => StopWhere::AfterText,
            _ => StopWhere::Anywhere,
        }
    }

    /// The text a finished sample is judged on: its text, and for a BIG-bench problem that
    /// ended at the task's stop string, the stop string too (BIG-bench keeps it).
    fn judged_text(&self, text: String, stop: &engine::generate::StopReason) -> String {
        match (&self.problem.check, stop) {
            (
                Check::BigBench {
                    stop_string: Some(s),
                    ..
                },
                engine::generate::StopReason::Stop(at),
            ) if s == at => text + s,
            _ => text,
        }
    }
}

/// Live numbers for a progress display.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Problems in this run.
    pub problems: usize,
    /// Problems decided (including before this session).
    pub decided: usize,
    /// Samples written this session.
    pub samples: u64,
    /// Generated tokens this session (samples written).
    pub tokens: u64,
    /// Seconds since the session started.
    pub elapsed: f64,
    /// Seconds the main thread spent writing results.
    pub write_s: f64,
    /// Seconds judge threads spent judging (summed over threads).
    pub judge_s: f64,
    /// Seconds in backend decode calls (prompts and steps).
    pub decode_s: f64,
    /// Seconds drawing tokens from the logits (sampling over the vocabulary, in parallel
    /// across the samples of a step).
    pub draw_s: f64,
}

/// Receives [`Stats`] while a run goes on.
pub trait Progress {
    /// Called after each decode step (callers throttle their own output).
    fn update(&mut self, stats: &Stats);
    /// Something the user should know as the session starts (a lock taken over from a dead
    /// attempt, say); the session goes on.
    fn note(&mut self, message: &str) {
        let _ = message;
    }
}

impl<F: FnMut(&Stats)> Progress for F {
    fn update(&mut self, stats: &Stats) {
        self(stats)
    }
}

/// Sizes of the loop.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Sample slots (sequences decoded together).
    pub batch: usize,
    /// Sequence ids for prompts, after the slots.
    pub prompt_seqs: usize,
    /// Judge threads.
    pub judge_threads: usize,
}

struct Slot {
    job: usize,
    seq: Sequence,
}

struct Active {
    job: usize,
    seq: SeqId,
    logits: Vec<f32>,
    generating: usize,
}

struct Finished {
    job: usize,
    sample: Sample,
    text: String,
}

type JudgeResult = Result<(usize, SampleRecord), RunError>;

/// Runs until every job is decided. `states` holds what earlier sessions judged; records are
/// appended to `writer` as they are judged.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    backend: &mut dyn Context,
    config: &RunConfig,
    jobs: &[Job],
    states: &mut [ProblemState],
    writer: &mut SampleWriter,
    session: u32,
    shape: Shape,
    sandbox: Option<Arc<Sandbox>>,
    progress: &mut dyn Progress,
) -> Result<Stats, RunError> {
    let started = Instant::now();
    let params = &config.sampling;
    params
        .validate()
        .map_err(engine::backend::BackendError::from)?;
    let info = backend.info().clone();
    let max_sequences = backend.max_sequences();
    if shape.batch == 0 || shape.batch + shape.prompt_seqs > max_sequences as usize {
        return Err(RunError::Shape {
            slots: shape.batch,
            prompt_seqs: shape.prompt_seqs,
            max: max_sequences,
        });
    }
    let mut stats = Stats {
        problems: jobs.len(),
        decided: states.iter().filter(|s| s.decision().is_some()).count(),
        ..Stats::default()
    };

    // Judge threads.
    let (job_tx, job_rx) = mpsc::channel::<Finished>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (res_tx, res_rx) = mpsc::channel::<JudgeResult>();
    let cache = Arc::new(VerdictCache::new());
    let jobs_shared: Arc<Vec<Job>> = Arc::new(jobs.to_vec());
    let mut handles = Vec::new();
    for _ in 0..shape.judge_threads.max(1) {
        let rx = Arc::clone(&job_rx);
        let tx = res_tx.clone();
        let cache = Arc::clone(&cache);
        let jobs = Arc::clone(&jobs_shared);
        let sandbox = sandbox.clone();
        handles.push(std::thread::spawn(move || loop {
            let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(f) = next else { break };
            let t0 = Instant::now();
            let job = &jobs[f.job];
            let verdict = cache.get_or_judge(&job.problem.id, &f.text, || {
                judge(&job.problem, &f.text, sandbox.as_deref())
            });
            let judge_ms = t0.elapsed().as_secs_f64() * 1e3;
            let out = match verdict {
                Verdict::SandboxError { detail } => Err(RunError::Judge {
                    problem: job.problem.id.clone(),
                    index: f.sample.index,
                    message: detail,
                }),
                verdict => Ok((
                    f.job,
                    SampleRecord {
                        problem: job.problem.id.clone(),
                        p: job.p,
                        index: f.sample.index,
                        passed: verdict.passed(),
                        verdict,
                        text: f.text,
                        stop: (&f.sample.stop).into(),
                        logprob: f.sample.logprob,
                        sampling_logprob: f.sample.sampling_logprob,
                        tokens: f.sample.tokens,
                        session,
                        elapsed_s: started.elapsed().as_secs_f64(),
                        judge_ms,
                    },
                )),
            };
            if tx.send(out).is_err() {
                break;
            }
        }));
    }
    drop(res_tx);

    let result = (|| {
        let mut lp = Loop {
            backend,
            info: &info,
            config,
            params,
            jobs,
            states,
            slots: (0..shape.batch).map(|_| None).collect(),
            active: Vec::new(),
            pending: VecDeque::new(),
            free_prompt_seqs: (0..shape.prompt_seqs)
                .rev()
                .map(|i| (shape.batch + i) as SeqId)
                .collect(),
            judging: 0,
            job_tx: &job_tx,
            draw_s: 0.0,
        };
        lp.pending = (0..jobs.len())
            .filter(|&j| lp.states[j].decision().is_none())
            .collect();
        lp.backend.clear()?;
        let mut batch = Batch::new();
        let mut logits = Logits::new(info.n_vocab);
        let mut order: Vec<usize> = Vec::with_capacity(shape.batch);
        loop {
            // Judged samples: write them, update the problems.
            while let Ok(msg) = res_rx.try_recv() {
                absorb(msg, &mut lp, writer, &mut stats)?;
            }
            lp.release_decided()?;
            // Prompts evaluated and first tokens drawn: the draws count as drawing, the rest
            // (prompt decodes, sequence copies) as decoding.
            let (t0, drawn) = (Instant::now(), lp.draw_s);
            lp.activate()?;
            lp.fill()?;
            stats.decode_s += t0.elapsed().as_secs_f64() - (lp.draw_s - drawn);
            if lp.busy() == 0 {
                if lp.judging == 0 {
                    break;
                }
                // Nothing to decode until a verdict arrives.
                let msg = res_rx.recv().map_err(|_| judges_stopped())?;
                absorb(msg, &mut lp, writer, &mut stats)?;
                continue;
            }
            // One decode step for every generating slot.
            batch.clear();
            order.clear();
            for (s, slot) in lp.slots.iter().enumerate() {
                if let Some(slot) = slot {
                    let pos = (lp.jobs[slot.job].prompt.len() + slot.seq.tokens().len() - 1) as u32;
                    let last = *slot
                        .seq
                        .tokens()
                        .last()
                        .expect("a slot holds its first token");
                    batch.add(last, pos, &[s as SeqId], true);
                    order.push(s);
                }
            }
            let t0 = Instant::now();
            lp.backend.decode(&batch, &mut logits)?;
            stats.decode_s += t0.elapsed().as_secs_f64();
            lp.step_all(&order, &logits)?;
            stats.draw_s = lp.draw_s;
            stats.elapsed = started.elapsed().as_secs_f64();
            progress.update(&stats);
        }
        if let Some(j) = (0..jobs.len()).find(|&j| lp.states[j].decision().is_none()) {
            return Err(RunError::Undecided(jobs[j].problem.id.clone()));
        }
        Ok(())
    })();
    drop(job_tx);
    for h in handles {
        let _ = h.join();
    }
    // Verdicts that arrived after an error are still written: no finished sample is lost.
    for (job, record) in res_rx.try_iter().flatten() {
        record_judged(job, &record, states, &config.rule, writer, &mut stats)?;
    }
    writer.sync()?;
    stats.elapsed = started.elapsed().as_secs_f64();
    progress.update(&stats);
    result.map(|()| stats)
}

fn judges_stopped() -> RunError {
    RunError::Judge {
        problem: "-".into(),
        index: 0,
        message: "the judge threads stopped".into(),
    }
}

/// Writes a judged sample and counts it.
fn absorb(
    msg: JudgeResult,
    lp: &mut Loop<'_>,
    writer: &mut SampleWriter,
    stats: &mut Stats,
) -> Result<(), RunError> {
    let (job, record) = msg?;
    lp.judging -= 1;
    record_judged(job, &record, lp.states, &lp.config.rule, writer, stats)
}

/// Appends a judged sample, counts it, and updates its problem.
fn record_judged(
    job: usize,
    record: &SampleRecord,
    states: &mut [ProblemState],
    rule: &super::record::StopRule,
    writer: &mut SampleWriter,
    stats: &mut Stats,
) -> Result<(), RunError> {
    let t0 = Instant::now();
    writer.append(record)?;
    stats.write_s += t0.elapsed().as_secs_f64();
    stats.judge_s += record.judge_ms / 1e3;
    stats.samples += 1;
    stats.tokens += record.tokens.len() as u64;
    if states[job].judged(record.index, record.passed, rule) {
        stats.decided += 1;
    }
    Ok(())
}

fn judge(problem: &Problem, text: &str, sandbox: Option<&Sandbox>) -> Verdict {
    match &problem.check {
        Check::Program { .. } => match sandbox {
            Some(s) => judge_program(s, problem, text),
            None => Verdict::SandboxError {
                detail: "no sandbox for a program check".into(),
            },
        },
        check => judge_text(check, text),
    }
}

struct Loop<'a> {
    backend: &'a mut dyn Context,
    info: &'a engine::backend::ModelInfo,
    config: &'a RunConfig,
    params: &'a SamplingParams,
    jobs: &'a [Job],
    states: &'a mut [ProblemState],
    slots: Vec<Option<Slot>>,
    active: Vec<Active>,
    pending: VecDeque<usize>,
    free_prompt_seqs: Vec<SeqId>,
    judging: usize,
    job_tx: &'a mpsc::Sender<Finished>,
    /// Seconds spent drawing tokens so far.
    draw_s: f64,
}

impl Loop<'_> {
    fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Drops the prompts of decided problems whose samples are all generated.
    fn release_decided(&mut self) -> Result<(), RunError> {
        let mut i = 0;
        while i < self.active.len() {
            let a = &self.active[i];
            if a.generating == 0 && self.states[a.job].decision().is_some() {
                let a = self.active.swap_remove(i);
                self.backend.remove_sequence(a.seq, 0, None)?;
                self.free_prompt_seqs.push(a.seq);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Evaluates the prompts of pending problems while prompt sequences are free (each has
    /// room for the longest prompt, so sequences are the only limit).
    fn activate(&mut self) -> Result<(), RunError> {
        while let Some(&job) = self.pending.front() {
            if self.free_prompt_seqs.is_empty() {
                break;
            }
            self.pending.pop_front();
            if self.states[job].decision().is_some() {
                continue;
            }
            let seq = self.free_prompt_seqs.pop().expect("checked");
            let mut batch = Batch::new();
            batch.add_sequence(&self.jobs[job].prompt, 0, seq, false);
            let mut logits = Logits::new(self.info.n_vocab);
            self.backend.decode(&batch, &mut logits)?;
            self.active.push(Active {
                job,
                seq,
                logits: logits.row(0).to_vec(),
                generating: 0,
            });
        }
        Ok(())
    }

    /// Gives free slots to the active problems with the fewest samples in flight.
    fn fill(&mut self) -> Result<(), RunError> {
        for s in 0..self.slots.len() {
            if self.slots[s].is_some() {
                continue;
            }
            let mut order: Vec<usize> = (0..self.active.len())
                .filter(|&a| self.states[self.active[a].job].decision().is_none())
                .collect();
            order.sort_by_key(|&a| {
                let job = self.active[a].job;
                (self.states[job].in_flight(), job)
            });
            let mut started = false;
            for a in order {
                if let Some(index) = self.states[self.active[a].job].issue(&self.config.rule) {
                    self.start(s, a, index)?;
                    started = true;
                    break;
                }
            }
            if !started {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Forks active problem `a`'s prompt into slot `s` and draws the sample's first token.
    fn start(&mut self, s: usize, a: usize, index: u64) -> Result<(), RunError> {
        let seq = self.active[a].seq;
        self.backend.copy_sequence(seq, s as SeqId)?;
        self.active[a].generating += 1;
        let job = self.active[a].job;
        self.slots[s] = Some(Slot {
            job,
            seq: Sequence::new(SampleKey {
                seed: self.config.seed,
                problem: self.jobs[job].p,
                sample: index,
            }),
        });
        let logits = std::mem::take(&mut self.active[a].logits);
        let r = self.step(s, &logits);
        self.active[a].logits = logits;
        r
    }

    /// Draws slot `s`'s next token from `logits` and finishes the sample if it ends here.
    fn step(&mut self, s: usize, logits: &[f32]) -> Result<(), RunError> {
        let slot = self.slots[s].as_ref().expect("step on a busy slot");
        let t0 = Instant::now();
        let d = slot
            .seq
            .draw(logits, self.params, &self.jobs[slot.job].prompt, 0);
        self.draw_s += t0.elapsed().as_secs_f64();
        self.accept(s, d?)
    }

    /// Draws the next token of each slot in `order` from its row of `logits` (row `i` for
    /// `order[i]`), the draws in parallel over the vocabulary-sized rows: a draw is a pure
    /// function of the logits, the history and the sample's key, so it is the same however
    /// the work is spread. Then applies them in order.
    fn step_all(&mut self, order: &[usize], logits: &Logits) -> Result<(), RunError> {
        use rayon::prelude::*;
        let (slots, params, jobs) = (&self.slots, self.params, self.jobs);
        let t0 = Instant::now();
        let draws: Vec<_> = order
            .par_iter()
            .enumerate()
            .map(|(row, &s)| {
                let slot = slots[s].as_ref().expect("a generating slot");
                slot.seq
                    .draw(logits.row(row), params, &jobs[slot.job].prompt, 0)
            })
            .collect();
        self.draw_s += t0.elapsed().as_secs_f64();
        for (&s, d) in order.iter().zip(draws) {
            self.accept(s, d?)?;
        }
        Ok(())
    }

    /// Applies slot `s`'s drawn token and finishes the sample if it ends here.
    fn accept(
        &mut self,
        s: usize,
        d: (engine::sampling::Sampled, Vec<(Token, f64)>),
    ) -> Result<(), RunError> {
        let slot = self.slots[s].as_mut().expect("step on a busy slot");
        let job = &self.jobs[slot.job];
        let rules = StopRules {
            max_tokens: self.config.max_tokens,
            stop_at_eog: true,
            stop: &job.stop,
            keep_text: true,
            stop_where: job.stop_where(),
            anywhere: &job.run_stop,
        };
        let backend = &*self.backend;
        let stopped = slot
            .seq
            .accept(d, backend.info(), &rules, &mut |t| backend.token_piece(t))?
            .is_some();
        if !stopped {
            return Ok(());
        }
        let slot = self.slots[s].take().expect("busy");
        self.backend.remove_sequence(s as SeqId, 0, None)?;
        if let Some(a) = self.active.iter_mut().find(|a| a.job == slot.job) {
            a.generating -= 1;
        }
        let sample = slot.seq.finish();
        let text = String::from_utf8_lossy(sample.text.as_deref().unwrap_or_default()).into_owned();
        let f = Finished {
            job: slot.job,
            text: self.jobs[slot.job].judged_text(text, &sample.stop),
            sample,
        };
        self.judging += 1;
        let (problem, index) = (self.jobs[f.job].problem.id.clone(), f.sample.index);
        self.job_tx.send(f).map_err(|_| RunError::Judge {
            problem,
            index,
            message: "the judge threads stopped".into(),
        })
    }
}
