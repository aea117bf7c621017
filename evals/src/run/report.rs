//! `pass-until report`: per-problem and task tables of a run directory, as text, JSON, or a
//! plot of per-problem pass rates on a log axis.
//!
//! Only samples up to each problem's stopping point count; samples that were in flight when
//! a problem was decided are listed as `beyond` and change nothing.
//!
//! Per problem, a PassUntil problem that reached its r-th success gets the exact 95% interval
//! for inverse-binomial sampling ([`Instance::inverse_binomial_interval`]); a censored one the
//! one-sided 95% upper bound of EVALS-SPEC.md; fixed-n and open problems Clopper–Pearson.
//! The task's headline PassUntil is the unbiased estimate under the run's own stopping rule
//! (r ≥ 2: [`Instance::pu_unbiased_capped`], censored problems included); the mean of `r/K`
//! (the MLE, biased high) is shown beside it. Task intervals, for PassUntil and pass@k, are a
//! percentile bootstrap over problems seeded with the run's seed.
//!
//! Sample-based uncertainty (EVALS-SPEC §6): per problem with at least two counted samples,
//! EigV, the degree measure and eccentricity over the Jaccard similarity of its first
//! [`UQ_SAMPLES`] counted samples' texts; and how well each predicts failure, as AUROC: per
//! problem (a problem fails when most of those samples fail) for the three, and per sample
//! (the sample failed) for the per-response degree and eccentricity confidences.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::record::{load_samples, RunConfig, SampleRecord, StopRule};
use super::state::ProblemState;
use super::ChoiceRecord;
use super::RunError;
use crate::metrics::continuous::token_edit_distance;
use crate::metrics::pass_at_k::{pass_at_k, pass_at_k_dataset};
use crate::metrics::passuntil::{
    binomial_upper_bound, bootstrap_ci95, bootstrap_mean_ci95, task, Instance,
};
use crate::metrics::uncertainty::{auroc, jaccard_matrix, spearman, uncertainty};

/// Bootstrap resamples for the task intervals.
const BOOTSTRAP_ITERS: usize = 10_000;

/// Samples per problem the uncertainty measures look at (the first counted ones).
pub const UQ_SAMPLES: usize = 20;

/// A problem's sample-based uncertainty over its first counted samples.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemUncertainty {
    /// Samples looked at.
    pub samples: usize,
    /// Share of them that failed.
    pub failure_rate: f64,
    /// U_EigV.
    pub eigv: f64,
    /// U_Deg.
    pub degree: f64,
    /// U_Ecc.
    pub eccentricity: f64,
}

/// A statistic with its 95% percentile-bootstrap interval (seeded with the run's seed), when
/// enough resamples define it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The statistic on the data.
    pub value: f64,
    /// Its 95% interval.
    pub ci95: Option<(f64, f64)>,
}

impl Estimate {
    /// `value [lo, hi]`, or the value alone without an interval, each number written by `fmt`.
    pub fn show(&self, fmt: impl Fn(f64) -> String) -> String {
        match self.ci95 {
            Some((lo, hi)) => format!("{} [{}, {}]", fmt(self.value), fmt(lo), fmt(hi)),
            None => fmt(self.value),
        }
    }
}

/// Bootstrap resamples for the uncertainty statistics (each resample sorts its items).
const UQ_BOOTSTRAP_ITERS: usize = 1_000;

/// How well sample-based uncertainty predicts failure, over the run. Problem-level statistics
/// resample problems, sample-level ones samples.
#[derive(Clone, Debug, Serialize)]
pub struct UncertaintyReport {
    /// Problems with a measure (two or more counted samples).
    pub problems: usize,
    /// Of them, problems where most samples looked at failed.
    pub failing: usize,
    /// Samples looked at.
    pub samples: usize,
    /// Of them, samples that failed.
    pub failed: usize,
    /// Problem-level AUROC of U_EigV for "most samples fail" (`None` with one class only).
    pub auroc_eigv: Option<Estimate>,
    /// The same for U_Deg.
    pub auroc_degree: Option<Estimate>,
    /// The same for U_Ecc.
    pub auroc_eccentricity: Option<Estimate>,
    /// Spearman's rank correlation of U_EigV with the problems' pass rates (`r/K`), over
    /// problems with a measure: negative when more uncertain problems pass less. Useful where
    /// the problem-level AUROC has one class only (PassUntil runs stop at few successes).
    pub spearman_eigv: Option<Estimate>,
    /// The same for U_Deg.
    pub spearman_degree: Option<Estimate>,
    /// The same for U_Ecc.
    pub spearman_eccentricity: Option<Estimate>,
    /// Sample-level AUROC of `1 − C_Deg(s_j)` for "the sample failed".
    pub sample_auroc_degree: Option<Estimate>,
    /// Sample-level AUROC of the eccentricity norm `‖v'_j‖` for "the sample failed".
    pub sample_auroc_eccentricity: Option<Estimate>,
}

/// One problem's line.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemReport {
    /// Its id.
    pub problem: String,
    /// Its index in the task file.
    pub p: u64,
    /// `passed` (r successes), `censored` (cap reached), `done` (fixed n) or `open`.
    pub status: String,
    /// Samples counted: up to the stopping point, or the contiguous prefix while open.
    pub trials: u64,
    /// Successes among them.
    pub successes: u64,
    /// Samples recorded past the stopping point (or past a gap while open).
    pub beyond: u64,
    /// PassUntil `r/K` (successes/trials while open or censored).
    pub pu: f64,
    /// Unbiased `(r−1)/(K−1)` where defined.
    pub pu_unbiased: Option<f64>,
    /// 95% interval on the pass rate.
    pub ci95: (f64, f64),
    /// pass@k for each k of a fixed-n run.
    pub pass_at_k: Vec<(u64, f64)>,
    /// Mean generated tokens per counted sample.
    pub mean_tokens: f64,
    /// Sample-based uncertainty, with two or more counted samples.
    pub uncertainty: Option<ProblemUncertainty>,
    /// The reference answer teacher-forced, where the problem has one.
    pub reference: Option<ReferenceLine>,
}

/// A generative problem's reference answer teacher-forced after its prompt, and how far the
/// samples were from it (the Mirage paper's continuous metrics, EVALS-SPEC §3).
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceLine {
    /// The continuation scored ([`super::reference_of`]).
    pub text: String,
    /// Its log-probability after the prompt.
    pub logprob: f64,
    /// Its length in tokens.
    pub tokens: usize,
    /// `exp(logprob)`: the probability of the whole reference.
    pub probability: f64,
    /// `exp(logprob / tokens)`: the geometric-mean per-token probability.
    pub per_token: f64,
    /// Whether greedy decoding produces it.
    pub greedy: bool,
    /// Mean token edit distance of the counted samples (trimmed) to the reference (trimmed),
    /// tokenized without special tokens by the model's tokenizer; `None` without the model
    /// file or without counted samples.
    pub edit_distance: Option<f64>,
}

impl ProblemReport {
    /// The problem's pass-rate estimate that the task's headline averages: the unbiased
    /// PassUntil estimate under the run's stopping rule (`(r−1)/(K−1)`, or `s/K` for a censored
    /// record) for r ≥ 2, `r/K` for r = 1, `c/n` for a fixed-n run.
    pub fn pass_rate(&self) -> f64 {
        self.pu_unbiased.unwrap_or(self.pu)
    }
}

/// Task-level numbers.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    /// Problems in the run.
    pub problems: usize,
    /// Problems decided.
    pub decided: usize,
    /// Mean PassUntil over decided problems (MLE).
    pub pu: Option<f64>,
    /// Mean of the unbiased estimates where defined (problems that reached r successes).
    pub pu_unbiased: Option<f64>,
    /// The headline: the unbiased estimate of the mean pass rate under the stopping rule,
    /// censored problems included (r ≥ 2).
    pub pu_unbiased_all: Option<f64>,
    /// 95% bootstrap interval over problems of the headline (of the mean `r/K` when r = 1).
    pub pu_ci95: Option<(f64, f64)>,
    /// 95% bootstrap interval of the mean `r/K`.
    pub pu_mle_ci95: Option<(f64, f64)>,
    /// 95% bootstrap interval of the mean of the unbiased estimates where defined.
    pub pu_unbiased_ci95: Option<(f64, f64)>,
    /// Censored problems.
    pub censored: usize,
    /// pass@k with its 95% interval across problems, for fixed-n runs.
    pub pass_at_k: Vec<PassAtKLine>,
    /// How well sample-based uncertainty predicts failure.
    pub uncertainty: Option<UncertaintyReport>,
    /// The continuous metrics over the problems with a scored reference answer.
    pub continuous: Option<ContinuousReport>,
}

/// Task-level continuous metrics: means over the problems with a scored reference answer, each
/// with a 95% bootstrap interval over problems (seeded with the run's seed).
#[derive(Clone, Debug, Serialize)]
pub struct ContinuousReport {
    /// Problems with a scored reference.
    pub problems: usize,
    /// Mean log-probability of the reference.
    pub logprob: Estimate,
    /// Mean probability of the whole reference.
    pub probability: Estimate,
    /// Mean geometric-mean per-token probability.
    pub per_token: Estimate,
    /// Share of problems whose reference greedy decoding produces.
    pub greedy: Estimate,
    /// Mean over problems of the mean token edit distance of samples to the reference.
    pub edit_distance: Option<Estimate>,
    /// Why the edit distance is missing, when it is.
    pub edit_distance_note: Option<String>,
}

/// pass@k over the problems.
#[derive(Clone, Debug, Serialize)]
pub struct PassAtKLine {
    /// k.
    pub k: u64,
    /// Mean over problems.
    pub mean: f64,
    /// 95% bootstrap interval over problems.
    pub ci95: (f64, f64),
}

/// Throughput from the records' timings.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Sessions (the first run plus each resume).
    pub sessions: u32,
    /// Samples recorded.
    pub samples: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Wall seconds, summed over sessions (each up to its last judged sample).
    pub wall_s: f64,
    /// Samples per second.
    pub samples_per_s: f64,
    /// Generated tokens per second.
    pub tokens_per_s: f64,
    /// Seconds spent judging, over all judge threads.
    pub judge_s: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The run's settings.
    pub run: RunConfig,
    /// Per problem, in task order.
    pub problems: Vec<ProblemReport>,
    /// Task totals.
    pub task: TaskReport,
    /// Speed.
    pub throughput: Throughput,
    /// Multiple-choice problems, scored by log-likelihood, when the run has any.
    pub choices: Option<ChoiceReport>,
}

/// A multiple-choice problem's line: the choices' log-likelihoods after the prompt, read as
/// lm-eval reads them.
#[derive(Clone, Debug, Serialize)]
pub struct ChoiceLine {
    /// Its id.
    pub problem: String,
    /// Its index in the task file.
    pub p: u64,
    /// The choice with the highest log-likelihood (the first on ties).
    pub chosen: usize,
    /// Whether it is a correct answer (acc).
    pub correct: bool,
    /// Whether the best log-likelihood per character is (acc_norm).
    pub correct_norm: bool,
    /// Whether the best log-likelihood per UTF-8 byte is (acc_bytes).
    pub correct_bytes: bool,
    /// Whether greedy decoding produces the gold choice (exact_match).
    pub greedy_gold: bool,
    /// The chosen choice's probability under the softmax over the choices.
    pub confidence: f64,
    /// The gold choice's probability.
    pub p_gold: f64,
    /// `Σ_j (p_j − 1[j = gold])²`.
    pub brier: f64,
}

/// One bin of the reliability diagram.
#[derive(Clone, Debug, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge (inclusive).
    pub lo: f64,
    /// Upper edge (exclusive; 1 belongs to the last bin).
    pub hi: f64,
    /// Problems whose confidence falls in it.
    pub count: usize,
    /// Their mean confidence.
    pub confidence: f64,
    /// Their accuracy.
    pub accuracy: f64,
}

/// The multiple-choice section: acc, acc_norm, acc_bytes, exact_match, Brier and ECE with
/// 95% bootstrap intervals over problems (seeded with the run's seed), and the reliability
/// diagram's bins. A problem is correct when its chosen choice has the highest score in the
/// task (BIG-bench's `target_scores` may give several).
#[derive(Clone, Debug, Serialize)]
pub struct ChoiceReport {
    /// Multiple-choice problems in the run.
    pub problems: usize,
    /// Of them, scored so far.
    pub scored: usize,
    /// Accuracy of the highest log-likelihood.
    pub acc: Estimate,
    /// Accuracy of the highest log-likelihood per character (lm-eval's acc_norm).
    pub acc_norm: Estimate,
    /// Accuracy of the highest log-likelihood per byte.
    pub acc_bytes: Estimate,
    /// Share of problems whose gold choice greedy decoding produces.
    pub exact_match: Estimate,
    /// Mean multi-class Brier score (lm-eval's form, 0 to 2).
    pub brier: Estimate,
    /// Expected calibration error of the chosen choice's probability, [`ECE_BINS`]
    /// equal-width bins `[lo, hi)`.
    pub ece: Estimate,
    /// Maximum calibration error over non-empty bins.
    pub mce: f64,
    /// The reliability diagram.
    pub bins: Vec<ReliabilityBin>,
    /// Per problem, in task order.
    pub lines: Vec<ChoiceLine>,
}

fn clopper_pearson(s: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let lo = if s == 0 {
        0.0
    } else {
        1.0 - binomial_upper_bound(n - s, n, 0.025)
    };
    (lo, binomial_upper_bound(s, n, 0.025))
}

/// Builds the report of the run in `dir`.
pub fn report(dir: &Path) -> Result<Report, RunError> {
    let run = RunConfig::load(dir)?;
    let loaded = load_samples(&dir.join("samples.jsonl"))?;
    // Problems from the task file when it is still there and unchanged, else from the samples.
    let task_path = Path::new(&run.task.file.path);
    let from_task = super::FileRef::of_task(task_path, run.task.format)
        .ok()
        .filter(|f| f.sha256 == run.task.file.sha256)
        .and_then(|_| super::shard_problems(&run, task_path).ok());
    let (scored, _) = super::load_choices(&dir.join(super::SCORED_FILES[0]))?;
    let references: BTreeMap<u64, ChoiceRecord> =
        super::load_choices(&dir.join(super::SCORED_FILES[1]))?
            .0
            .into_iter()
            .map(|r| (r.p, r))
            .collect();
    // The edit distance needs the model's tokenizer: from the file the run used, if it is
    // still there unchanged.
    let tokenizer = if references.is_empty() {
        Err(String::new())
    } else {
        run_tokenizer(&run)
    };
    let (problems, choice_problems): (Vec<(u64, String)>, usize) = match from_task {
        Some(sp) => (
            sp.sampled.into_iter().map(|(p, pr)| (p, pr.id)).collect(),
            sp.choice.len(),
        ),
        None => {
            let mut m = BTreeMap::new();
            for r in &loaded.records {
                m.insert(r.p, r.problem.clone());
            }
            (m.into_iter().collect(), scored.len())
        }
    };
    let mut by_p: BTreeMap<u64, Vec<&SampleRecord>> = BTreeMap::new();
    for r in &loaded.records {
        by_p.entry(r.p).or_default().push(r);
    }
    let (r_wanted, ks) = match &run.rule {
        StopRule::PassUntil { r, .. } => (Some(*r), Vec::new()),
        StopRule::Fixed { k, .. } => (None, k.clone()),
    };
    let mut lines = Vec::new();
    let mut instances = Vec::new();
    let mut fixed = Vec::new();
    // Per-sample (1 − C_Deg, ‖v'_j‖, failed) for the sample-level AUROCs.
    let mut per_sample: Vec<(f64, f64, bool)> = Vec::new();
    for (p, id) in &problems {
        let mut recs = by_p.remove(p).unwrap_or_default();
        recs.sort_by_key(|r| r.index);
        let mut st = ProblemState::default();
        for r in &recs {
            st.judged(r.index, r.passed, &run.rule);
        }
        let decision = st.decision();
        // Counted: the samples before the stopping point, or the contiguous prefix.
        let counted: Vec<&&SampleRecord> = match decision {
            Some(d) => recs.iter().filter(|r| r.index < d.trials).collect(),
            None => recs
                .iter()
                .enumerate()
                .take_while(|(i, r)| r.index == *i as u64)
                .map(|(_, r)| r)
                .collect(),
        };
        let trials = counted.len() as u64;
        let successes = counted.iter().filter(|r| r.passed).count() as u64;
        let status = match (decision, r_wanted) {
            (None, _) => "open",
            (Some(d), Some(r)) if d.successes >= r => "passed",
            (Some(_), Some(_)) => "censored",
            (Some(_), None) => "done",
        };
        let inst = Instance {
            successes,
            trials,
            r: r_wanted.unwrap_or(1),
        };
        let ci95 = match status {
            "censored" => (0.0, inst.upper95()),
            "passed" => inst
                .inverse_binomial_interval(0.05)
                .unwrap_or_else(|| clopper_pearson(successes, trials)),
            _ => clopper_pearson(successes, trials),
        };
        if decision.is_some() {
            if r_wanted.is_some() {
                instances.push(inst);
            } else {
                fixed.push((trials, successes));
            }
        }
        let pass_at_k = if decision.is_some() {
            ks.iter()
                .filter_map(|&k| pass_at_k(trials, successes, k).ok().map(|v| (k, v)))
                .collect()
        } else {
            Vec::new()
        };
        let tokens: usize = counted.iter().map(|r| r.tokens.len()).sum();
        let looked: Vec<&&&SampleRecord> = counted.iter().take(UQ_SAMPLES).collect();
        let uncertainty = if looked.len() >= 2 {
            let texts: Vec<&str> = looked.iter().map(|r| r.text.as_str()).collect();
            let w = jaccard_matrix(&texts);
            uncertainty(&w, texts.len(), 0.9).ok().map(|u| {
                for (j, r) in looked.iter().enumerate() {
                    per_sample.push((
                        1.0 - u.degree_confidence[j],
                        u.eccentricity_norms[j],
                        !r.passed,
                    ));
                }
                ProblemUncertainty {
                    samples: looked.len(),
                    failure_rate: looked.iter().filter(|r| !r.passed).count() as f64
                        / looked.len() as f64,
                    eigv: u.eigv,
                    degree: u.degree,
                    eccentricity: u.eccentricity,
                }
            })
        } else {
            None
        };
        let reference = references.get(p).map(|r| {
            let (logprob, tokens) = (r.loglikelihoods[0], r.tokens[0]);
            let edit_distance = match &tokenizer {
                Ok(tok) if !counted.is_empty() => {
                    let encode = |t: &str| tok.encode(t.trim().as_bytes(), false, false);
                    let target = encode(&r.choices[0]);
                    let total: usize = counted
                        .iter()
                        .map(|s| token_edit_distance(&encode(&s.text), &target))
                        .sum();
                    Some(total as f64 / counted.len() as f64)
                }
                _ => None,
            };
            ReferenceLine {
                text: r.choices[0].clone(),
                logprob,
                tokens,
                probability: logprob.exp(),
                per_token: (logprob / tokens.max(1) as f64).exp(),
                greedy: r.greedy[0],
                edit_distance,
            }
        });
        lines.push(ProblemReport {
            problem: id.clone(),
            p: *p,
            status: status.to_owned(),
            trials,
            successes,
            beyond: recs.len() as u64 - trials,
            pu: inst.pu_mle(),
            pu_unbiased: if r_wanted.is_some() && decision.is_some() {
                inst.pu_unbiased()
            } else {
                None
            },
            ci95,
            pass_at_k,
            mean_tokens: if trials > 0 {
                tokens as f64 / trials as f64
            } else {
                0.0
            },
            uncertainty,
            reference,
        });
    }
    let tp = task(&instances).ok();
    let seed = run.seed;
    let pu_ci95 = {
        let headline: Option<Vec<f64>> = instances
            .iter()
            .map(|i| i.pu_unbiased_capped().or(Some(i.pu_mle())))
            .collect();
        headline.and_then(|v| bootstrap_mean_ci95(&v, BOOTSTRAP_ITERS, seed))
    };
    let mle: Vec<f64> = instances.iter().map(Instance::pu_mle).collect();
    let pu_mle_ci95 = bootstrap_mean_ci95(&mle, BOOTSTRAP_ITERS, seed ^ 0x4d);
    let unbiased: Vec<f64> = instances.iter().filter_map(Instance::pu_unbiased).collect();
    let pu_unbiased_ci95 = bootstrap_mean_ci95(&unbiased, BOOTSTRAP_ITERS, seed ^ 0x55);
    let pass_at_k = ks
        .iter()
        .filter_map(|&k| {
            pass_at_k_dataset(&fixed, k).ok().map(|d| PassAtKLine {
                k,
                mean: d.mean,
                ci95: bootstrap_mean_ci95(&d.per_problem, BOOTSTRAP_ITERS, seed ^ k)
                    .unwrap_or(d.ci95),
            })
        })
        .collect();
    let mut wall: BTreeMap<u32, f64> = BTreeMap::new();
    for r in &loaded.records {
        let w = wall.entry(r.session).or_insert(0.0);
        *w = w.max(r.elapsed_s);
    }
    let wall_s: f64 = wall.values().sum();
    let samples = loaded.records.len() as u64;
    let tokens: u64 = loaded.records.iter().map(|r| r.tokens.len() as u64).sum();
    let per_s = |x: u64| if wall_s > 0.0 { x as f64 / wall_s } else { 0.0 };
    Ok(Report {
        task: TaskReport {
            problems: lines.len(),
            decided: lines.iter().filter(|l| l.status != "open").count(),
            pu: tp.as_ref().map(|t| t.pu),
            pu_unbiased: tp.as_ref().and_then(|t| t.pu_unbiased),
            pu_unbiased_all: tp.as_ref().and_then(|t| t.pu_unbiased_all),
            pu_ci95,
            pu_mle_ci95,
            pu_unbiased_ci95,
            censored: tp.as_ref().map_or(0, |t| t.censored),
            pass_at_k,
            uncertainty: uncertainty_report(&lines, &per_sample, seed),
            continuous: continuous_report(&lines, tokenizer.err(), seed),
        },
        throughput: Throughput {
            sessions: wall.len() as u32,
            samples,
            tokens,
            wall_s,
            samples_per_s: per_s(samples),
            tokens_per_s: per_s(tokens),
            judge_s: loaded.records.iter().map(|r| r.judge_ms).sum::<f64>() / 1e3,
        },
        problems: lines,
        choices: choice_report(&scored, choice_problems, seed),
        run,
    })
}

/// The tokenizer of the model file a run used, if the file is there unchanged; else why not.
fn run_tokenizer(run: &RunConfig) -> Result<engine::tokenizer::Tokenizer, String> {
    let path = Path::new(&run.model.path);
    let now = super::FileRef::of(path).map_err(|e| format!("the model file: {e}"))?;
    if now.sha256 != run.model.sha256 {
        return Err(format!("the model file {} has changed", path.display()));
    }
    let file = quant::gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    engine::tokenizer::Tokenizer::from_metadata(file.metadata()).map_err(|e| e.to_string())
}

/// The task-level continuous metrics from the problems' reference lines.
fn continuous_report(
    lines: &[ProblemReport],
    tokenizer_error: Option<String>,
    seed: u64,
) -> Option<ContinuousReport> {
    let refs: Vec<&ReferenceLine> = lines.iter().filter_map(|l| l.reference.as_ref()).collect();
    if refs.is_empty() {
        return None;
    }
    let mean_of = |v: Vec<f64>, salt: u64| -> Estimate {
        Estimate {
            value: v.iter().sum::<f64>() / v.len() as f64,
            ci95: bootstrap_mean_ci95(&v, BOOTSTRAP_ITERS, seed ^ salt),
        }
    };
    let edits: Vec<f64> = refs.iter().filter_map(|r| r.edit_distance).collect();
    let edit_distance_note = match tokenizer_error {
        Some(e) => Some(format!("no edit distance: {e}")),
        None if edits.len() < refs.len() => Some(format!(
            "edit distance over the {} of {} problems with counted samples",
            edits.len(),
            refs.len()
        )),
        None => None,
    };
    Some(ContinuousReport {
        problems: refs.len(),
        logprob: mean_of(refs.iter().map(|r| r.logprob).collect(), 0xc1),
        probability: mean_of(refs.iter().map(|r| r.probability).collect(), 0xc2),
        per_token: mean_of(refs.iter().map(|r| r.per_token).collect(), 0xc3),
        greedy: mean_of(
            refs.iter().map(|r| f64::from(u8::from(r.greedy))).collect(),
            0xc4,
        ),
        edit_distance: (!edits.is_empty()).then(|| mean_of(edits, 0xc5)),
        edit_distance_note,
    })
}

/// Equal-width bins of the reliability diagram and the ECE (EVALS-SPEC §7).
pub const ECE_BINS: usize = 10;

/// The multiple-choice section from the scored problems (of `total` in the run).
fn choice_report(scored: &[ChoiceRecord], total: usize, seed: u64) -> Option<ChoiceReport> {
    use crate::metrics::calibration::{calibration, predict};
    use crate::metrics::continuous::{brier_score, option_probabilities};
    if scored.is_empty() {
        return None;
    }
    let lines: Vec<ChoiceLine> = scored
        .iter()
        .map(|r| {
            let choices: Vec<&str> = r.choices.iter().map(String::as_str).collect();
            // Records are checked on load: as many log-likelihoods as choices, at least one.
            let pred = predict(&r.loglikelihoods, &choices).unwrap_or(
                crate::metrics::calibration::ChoicePredictions {
                    acc: 0,
                    acc_norm: 0,
                    acc_bytes: 0,
                },
            );
            let probs = option_probabilities(&r.loglikelihoods);
            let gold = r.gold();
            ChoiceLine {
                problem: r.problem.clone(),
                p: r.p,
                chosen: pred.acc,
                correct: r.correct(pred.acc),
                correct_norm: r.correct(pred.acc_norm),
                correct_bytes: r.correct(pred.acc_bytes),
                greedy_gold: r.greedy[gold],
                confidence: probs[pred.acc],
                p_gold: probs[gold],
                brier: brier_score(&r.loglikelihoods, gold).unwrap_or(f64::NAN),
            }
        })
        .collect();
    let n = lines.len();
    let mean_of = |f: &dyn Fn(&ChoiceLine) -> f64, salt: u64| -> Estimate {
        let v: Vec<f64> = lines.iter().map(f).collect();
        Estimate {
            value: v.iter().sum::<f64>() / n as f64,
            ci95: bootstrap_mean_ci95(&v, BOOTSTRAP_ITERS, seed ^ salt),
        }
    };
    let flag = |b: bool| f64::from(u8::from(b));
    let conf: Vec<f64> = lines.iter().map(|l| l.confidence).collect();
    let correct: Vec<bool> = lines.iter().map(|l| l.correct).collect();
    let cal = calibration(&conf, &correct, ECE_BINS).ok()?;
    let ece_ci = bootstrap_ci95(n, UQ_BOOTSTRAP_ITERS, seed ^ 0xec, |idx| {
        let c: Vec<f64> = idx.iter().map(|&i| conf[i]).collect();
        let k: Vec<bool> = idx.iter().map(|&i| correct[i]).collect();
        calibration(&c, &k, ECE_BINS).ok().map(|x| x.ece)
    });
    Some(ChoiceReport {
        problems: total.max(n),
        scored: n,
        acc: mean_of(&|l| flag(l.correct), 0xa1),
        acc_norm: mean_of(&|l| flag(l.correct_norm), 0xa2),
        acc_bytes: mean_of(&|l| flag(l.correct_bytes), 0xa3),
        exact_match: mean_of(&|l| flag(l.greedy_gold), 0xa4),
        brier: mean_of(&|l| l.brier, 0xb1),
        ece: Estimate {
            value: cal.ece,
            ci95: ece_ci,
        },
        mce: cal.mce,
        bins: cal
            .bins
            .iter()
            .enumerate()
            .map(|(b, &(count, confidence, accuracy))| ReliabilityBin {
                lo: b as f64 / ECE_BINS as f64,
                hi: (b + 1) as f64 / ECE_BINS as f64,
                count,
                confidence,
                accuracy,
            })
            .collect(),
        lines,
    })
}

/// A statistic of item scores over a (re)sample of item indices.
type Stat<'a> = &'a dyn Fn(&[f64], &[usize]) -> Option<f64>;

/// The run's uncertainty statistics from the problems' measures and the per-sample
/// confidences, each with a bootstrap interval seeded by `seed`.
fn uncertainty_report(
    lines: &[ProblemReport],
    per_sample: &[(f64, f64, bool)],
    seed: u64,
) -> Option<UncertaintyReport> {
    let measured: Vec<&ProblemUncertainty> = lines
        .iter()
        .filter_map(|l| l.uncertainty.as_ref())
        .collect();
    if measured.is_empty() {
        return None;
    }
    let rates: Vec<f64> = lines
        .iter()
        .filter(|l| l.uncertainty.is_some())
        .map(|l| l.pu)
        .collect();
    let failing: Vec<bool> = measured.iter().map(|u| u.failure_rate > 0.5).collect();
    let failed: Vec<bool> = per_sample.iter().map(|s| s.2).collect();
    // A statistic of the items' scores over all items, with its bootstrap interval.
    let estimate = |scores: &[f64], stat: Stat<'_>, salt: u64| -> Option<Estimate> {
        let all: Vec<usize> = (0..scores.len()).collect();
        let value = stat(scores, &all)?;
        let ci95 = bootstrap_ci95(scores.len(), UQ_BOOTSTRAP_ITERS, seed ^ salt, |idx| {
            stat(scores, idx)
        });
        Some(Estimate { value, ci95 })
    };
    let pick = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let labels_at =
        |labels: &[bool], idx: &[usize]| idx.iter().map(|&i| labels[i]).collect::<Vec<bool>>();
    let problem_auroc =
        |scores: &[f64], idx: &[usize]| auroc(&pick(scores, idx), &labels_at(&failing, idx));
    let sample_auroc =
        |scores: &[f64], idx: &[usize]| auroc(&pick(scores, idx), &labels_at(&failed, idx));
    let rho = |scores: &[f64], idx: &[usize]| spearman(&pick(scores, idx), &pick(&rates, idx));
    let of =
        |f: fn(&ProblemUncertainty) -> f64| measured.iter().map(|u| f(u)).collect::<Vec<f64>>();
    let (eigv, degree, ecc) = (of(|u| u.eigv), of(|u| u.degree), of(|u| u.eccentricity));
    let sample_degree: Vec<f64> = per_sample.iter().map(|s| s.0).collect();
    let sample_ecc: Vec<f64> = per_sample.iter().map(|s| s.1).collect();
    Some(UncertaintyReport {
        problems: measured.len(),
        failing: failing.iter().filter(|&&f| f).count(),
        samples: per_sample.len(),
        failed: failed.iter().filter(|&&f| f).count(),
        auroc_eigv: estimate(&eigv, &problem_auroc, 1),
        auroc_degree: estimate(&degree, &problem_auroc, 2),
        auroc_eccentricity: estimate(&ecc, &problem_auroc, 3),
        spearman_eigv: estimate(&eigv, &rho, 4),
        spearman_degree: estimate(&degree, &rho, 5),
        spearman_eccentricity: estimate(&ecc, &rho, 6),
        sample_auroc_degree: estimate(&sample_degree, &sample_auroc, 7),
        sample_auroc_eccentricity: estimate(&sample_ecc, &sample_auroc, 8),
    })
}

/// `id` in at most `w` characters: as it is, or with its middle elided (`…`), since a long
/// id's end (subtask, index, `/mc` or `/gen`) tells it from its neighbours.
pub(crate) fn fit_id(id: &str, w: usize) -> String {
    let n = id.chars().count();
    if n <= w {
        return id.to_owned();
    }
    let head = w * 2 / 5;
    let tail = w.saturating_sub(head + 1);
    let mut out: String = id.chars().take(head).collect();
    out.push('…');
    out.extend(id.chars().skip(n - tail));
    out
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

impl Report {
    /// Text tables.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rule = match &self.run.rule {
            StopRule::PassUntil { r, max_samples } => {
                format!("PassUntil r={r}, cap {max_samples}")
            }
            StopRule::Fixed { n, k } => format!("n={n} per problem, pass@{k:?}"),
        };
        let _ = writeln!(
            s,
            "run: {} on {} ({}), task {} ({}), {rule}, seed {}, T={} top-k {} top-p {} min-p {}",
            Path::new(&self.run.model.path).file_name().map_or_else(
                || self.run.model.path.clone(),
                |n| n.to_string_lossy().into_owned()
            ),
            self.run.backend,
            &self.run.model.sha256[..12.min(self.run.model.sha256.len())],
            self.run.task.file.path,
            if self.run.chat {
                format!("{}, through the chat template", self.run.task.format)
            } else {
                self.run.task.format.to_string()
            },
            self.run.seed,
            self.run.sampling.temperature,
            self.run.sampling.top_k,
            self.run.sampling.top_p,
            self.run.sampling.min_p,
        );
        if !self.run.merged_from.is_empty() {
            let _ = writeln!(s, "merged from {} shards", self.run.merged_from.len());
        } else if self.run.shard.count() > 1 {
            let _ = writeln!(s, "shard {}", self.run.shard);
        }
        if let Some(i) = self.run.judge_isolation {
            let _ = writeln!(s, "programs judged in: {}", i.describe());
        }
        // A run of multiple-choice problems only has no sampled section.
        if !self.problems.is_empty() || self.choices.is_none() {
            let w = self
                .problems
                .iter()
                .map(|p| p.problem.chars().count())
                .max()
                .unwrap_or(7)
                .clamp(7, 56);
            let _ = writeln!(
                s,
                "\n{:<w$}  {:>8}  {:>8}  {:>4}  {:>6}  {:>9}  {:>9}  {:>21}  {:>6}",
                "problem",
                "status",
                "samples",
                "pass",
                "beyond",
                "PU",
                "unbiased",
                "95% interval",
                "tokens"
            );
            for p in &self.problems {
                let id = fit_id(&p.problem, w);
                let _ = write!(
                    s,
                    "{id:<w$}  {:>8}  {:>8}  {:>4}  {:>6}  {:>9}  {:>9}  {:>21}  {:>6.1}",
                    p.status,
                    p.trials,
                    p.successes,
                    p.beyond,
                    sci(p.pu),
                    p.pu_unbiased.map_or("-".into(), sci),
                    format!("[{}, {}]", sci(p.ci95.0), sci(p.ci95.1)),
                    p.mean_tokens
                );
                for (k, v) in &p.pass_at_k {
                    let _ = write!(s, "  pass@{k} {}", sci(*v));
                }
                if let Some(r) = &p.reference {
                    let _ = write!(s, "  ref log p {:.3}", r.logprob);
                    if let Some(d) = r.edit_distance {
                        let _ = write!(s, ", edit {d:.2}");
                    }
                }
                s.push('\n');
            }
            let t = &self.task;
            let _ = writeln!(s, "\nproblems: {} ({} decided)", t.problems, t.decided);
            let ci = |c: Option<(f64, f64)>| {
                c.map_or(String::new(), |(a, b)| format!(" [{}, {}]", sci(a), sci(b)))
            };
            match (t.pu, t.pu_unbiased_all) {
                (Some(pu), Some(u)) => {
                    let _ = writeln!(
                    s,
                    "PassUntil (unbiased): {}{}   mean r/K (MLE, biased high): {}{}   censored: {}",
                    sci(u),
                    ci(t.pu_ci95),
                    sci(pu),
                    ci(t.pu_mle_ci95),
                    t.censored
                );
                }
                (Some(pu), None) => {
                    let _ = writeln!(
                    s,
                    "PassUntil (mean r/K; r = 1 has no useful unbiased estimate): {}{}   censored: {}",
                    sci(pu),
                    ci(t.pu_ci95),
                    t.censored
                );
                }
                _ => {}
            }
            for l in &t.pass_at_k {
                let _ = writeln!(
                    s,
                    "pass@{}: {} [{}, {}]",
                    l.k,
                    sci(l.mean),
                    sci(l.ci95.0),
                    sci(l.ci95.1)
                );
            }
            if let Some(u) = &t.uncertainty {
                let a =
                    |v: Option<Estimate>| v.map_or("-".into(), |e| e.show(|x| format!("{x:.3}")));
                let _ = writeln!(
                    s,
                    "sample-based uncertainty (Jaccard over the first {UQ_SAMPLES} samples): \
                 AUROC for failure, {} problems ({} mostly failing): EigV {}, degree {}, \
                 eccentricity {}; rank correlation with the pass rate: EigV {}, degree {}, \
                 eccentricity {}; {} samples ({} failed): degree {}, eccentricity {}",
                    u.problems,
                    u.failing,
                    a(u.auroc_eigv),
                    a(u.auroc_degree),
                    a(u.auroc_eccentricity),
                    a(u.spearman_eigv),
                    a(u.spearman_degree),
                    a(u.spearman_eccentricity),
                    u.samples,
                    u.failed,
                    a(u.sample_auroc_degree),
                    a(u.sample_auroc_eccentricity)
                );
            }
            if let Some(c) = &self.task.continuous {
                let e = |e: &Estimate| e.show(sci);
                let _ = writeln!(
                s,
                "continuous metrics (the reference answer teacher-forced, {} problems): log p {}, \
                 p {}, per-token p {}, greedy {}, token edit distance of samples {}",
                c.problems,
                e(&c.logprob),
                e(&c.probability),
                e(&c.per_token),
                e(&c.greedy),
                c.edit_distance.as_ref().map_or("-".into(), e)
            );
                if let Some(n) = &c.edit_distance_note {
                    let _ = writeln!(s, "  ({n})");
                }
            }
            let h = &self.throughput;
            let _ = writeln!(
            s,
            "samples: {}   tokens: {}   wall: {:.1} s over {} session(s)   {:.1} samples/s   {:.1} tokens/s   judging {:.2} s",
            h.samples, h.tokens, h.wall_s, h.sessions, h.samples_per_s, h.tokens_per_s, h.judge_s
        );
        }
        if let Some(c) = &self.choices {
            let e = |e: &Estimate| e.show(|x| format!("{x:.4}"));
            let _ = writeln!(
                s,
                "\nmultiple choice, {} of {} problems scored (each choice's log-likelihood after \
                 the prompt):\n  acc {}   acc_norm {}   acc_bytes {}   exact_match {}\n  Brier {}   \
                 ECE ({ECE_BINS} bins) {}   MCE {:.4}",
                c.scored,
                c.problems,
                e(&c.acc),
                e(&c.acc_norm),
                e(&c.acc_bytes),
                e(&c.exact_match),
                e(&c.brier),
                e(&c.ece),
                c.mce
            );
            let w = c
                .lines
                .iter()
                .map(|l| l.problem.chars().count())
                .max()
                .unwrap_or(7)
                .max(7);
            let _ = writeln!(
                s,
                "  {:<w$}  {:>6}  {:>7}  {:>8}  {:>10}  {:>6}",
                "problem", "chosen", "correct", "p(chosen)", "p(gold)", "Brier"
            );
            for l in &c.lines {
                let _ = writeln!(
                    s,
                    "  {:<w$}  {:>6}  {:>7}  {:>8.4}  {:>10.4}  {:>6.4}",
                    l.problem,
                    l.chosen,
                    if l.correct { "yes" } else { "no" },
                    l.confidence,
                    l.p_gold,
                    l.brier
                );
            }
        }
        s
    }

    /// Writes the reliability diagram of the multiple-choice problems at `path`: accuracy
    /// against mean confidence per bin, with the diagonal and each bin's count.
    pub fn plot_reliability(&self, path: &Path) -> Result<(), RunError> {
        use plotters::prelude::*;
        let err = |e: String| RunError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let Some(c) = &self.choices else {
            return Err(err("the run has no multiple-choice problem".into()));
        };
        let root = SVGBackend::new(path, (640, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("reliability: {} problems, ECE {:.3}", c.scored, c.ece.value),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("confidence (probability of the chosen choice)")
            .y_desc("accuracy")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(c.bins.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new(
                    [(b.lo + 0.005, 0.0), (b.hi - 0.005, b.accuracy)],
                    BLUE.mix(0.5).filled(),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                c.bins
                    .iter()
                    .filter(|b| b.count > 0)
                    .map(|b| Circle::new((b.confidence, b.accuracy), 4, RED.filled())),
            )
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(c.bins.iter().filter(|b| b.count > 0).map(|b| {
                Text::new(
                    format!("{}", b.count),
                    ((b.lo + b.hi) / 2.0 - 0.01, (b.accuracy + 0.03).min(0.97)),
                    ("sans-serif", 12),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Writes an SVG plot of per-problem pass rates (log axis, 95% intervals; censored
    /// problems as their upper bound, drawn as a downward triangle).
    pub fn plot(&self, path: &Path) -> Result<(), RunError> {
        use plotters::prelude::*;
        let err = |e: String| RunError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let mut rows: Vec<&ProblemReport> = self.problems.iter().filter(|p| p.trials > 0).collect();
        rows.sort_by(|a, b| {
            let key = |p: &ProblemReport| if p.pu > 0.0 { p.pu } else { p.ci95.1 };
            key(b).total_cmp(&key(a))
        });
        let floor = rows
            .iter()
            .map(|p| p.ci95.1.min(if p.pu > 0.0 { p.pu } else { 1.0 }))
            .chain(rows.iter().map(|p| p.ci95.0).filter(|&x| x > 0.0))
            .fold(1.0f64, f64::min)
            .max(1e-7)
            / 2.0;
        let n = rows.len().max(1);
        let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let title = format!(
            "pass rate per problem: {}",
            Path::new(&self.run.task.file.path)
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (floor..1.0f64).log_scale())
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("problems, by pass rate")
            .y_desc("pass rate (95% interval)")
            .x_labels(n.min(20))
            .x_label_formatter(&|x| format!("{:.0}", x))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let clamp = |x: f64| x.max(floor);
        chart
            .draw_series(rows.iter().enumerate().map(|(i, p)| {
                ErrorBar::new_vertical(
                    i as f64,
                    clamp(p.ci95.0),
                    clamp(if p.pu > 0.0 { p.pu } else { p.ci95.1 }),
                    clamp(p.ci95.1),
                    BLUE.stroke_width(1),
                    6,
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .filter(|(_, p)| p.pu > 0.0)
                    .map(|(i, p)| Circle::new((i as f64, p.pu), 4, BLUE.filled())),
            )
            .map_err(|e| err(e.to_string()))?
            .label("r/K")
            .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .filter(|(_, p)| p.pu == 0.0)
                    .map(|(i, p)| {
                        TriangleMarker::new((i as f64, clamp(p.ci95.1)), 6, RED.filled())
                    }),
            )
            .map_err(|e| err(e.to_string()))?
            .label("no success: 95% upper bound")
            .legend(|(x, y)| TriangleMarker::new((x, y), 6, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{clopper_pearson, fit_id, report};

    #[test]
    fn long_ids_keep_their_ends() {
        assert_eq!(fit_id("HumanEval/8", 12), "HumanEval/8");
        let id = "modified_arithmetic:three_digit_addition_plus_one/500";
        let short = fit_id(id, 20);
        assert_eq!(short.chars().count(), 20);
        assert_eq!(short, "modified…lus_one/500");
        assert_eq!(fit_id(id, 56), id);
    }
    use crate::run::record::{RunConfig, SampleRecord, SampleWriter, StopRule, Stopped};

    /// Three problems with known texts: one always right with one answer, one always wrong
    /// with four different answers, one mostly right with one odd answer out. EigV ranks the
    /// failing problem highest, and every failed sample has a lower degree confidence than
    /// every passed one: both AUROCs are 1.
    #[test]
    fn uncertainty_predicts_the_failures_it_should() {
        let dir = tempfile::tempdir().unwrap();
        // The task file does not exist: the report takes its problems from the samples.
        RunConfig {
            rule: StopRule::Fixed { n: 4, k: vec![1] },
            shard: Default::default(),
            ..crate::run::record::tests::config()
        }
        .save(dir.path())
        .unwrap();
        let problems: [(&str, [(&str, bool); 4]); 3] = [
            ("easy", [("it is 4", true); 4]),
            (
                "hard",
                [
                    ("a b", false),
                    ("c d", false),
                    ("e f", false),
                    ("g h", false),
                ],
            ),
            (
                "mid",
                [("x 1", true), ("x 1", true), ("y", false), ("x 1", true)],
            ),
        ];
        let mut w = SampleWriter::open(&dir.path().join("samples.jsonl"), 0).unwrap();
        for (p, (id, samples)) in problems.iter().enumerate() {
            for (i, (text, passed)) in samples.iter().enumerate() {
                w.append(&SampleRecord {
                    problem: id.to_string(),
                    p: p as u64,
                    index: i as u64,
                    passed: *passed,
                    verdict: match passed {
                        true => crate::judges::Verdict::Pass,
                        false => crate::judges::Verdict::Fail {
                            detail: String::new(),
                        },
                    },
                    text: text.to_string(),
                    tokens: vec![1, 2],
                    stop: Stopped::Eog,
                    logprob: -1.0,
                    sampling_logprob: -1.0,
                    session: 0,
                    elapsed_s: 0.0,
                    judge_ms: 0.0,
                })
                .unwrap();
            }
        }
        drop(w);
        let r = report(dir.path()).unwrap();
        let u = r
            .task
            .uncertainty
            .as_ref()
            .expect("the uncertainty section");
        assert_eq!((u.problems, u.failing, u.samples, u.failed), (3, 1, 12, 5));
        let value = |e: Option<super::Estimate>| e.map(|e| e.value);
        assert_eq!(value(u.auroc_eigv), Some(1.0));
        assert_eq!(value(u.auroc_degree), Some(1.0));
        assert_eq!(value(u.sample_auroc_degree), Some(1.0));
        // Pass rates 1, 0, 0.75 against EigV 1, 4, between: ranks exactly reversed.
        assert_eq!(value(u.spearman_eigv), Some(-1.0));
        // Perfect separation stays perfect in every resample that has both classes.
        assert_eq!(u.sample_auroc_degree.unwrap().ci95, Some((1.0, 1.0)));
        let easy = r.problems[0].uncertainty.as_ref().unwrap();
        let hard = r.problems[1].uncertainty.as_ref().unwrap();
        assert!((easy.eigv - 1.0).abs() < 1e-9 && (hard.eigv - 4.0).abs() < 1e-9);
        assert!(r.render().contains("sample-based uncertainty"));
    }

    #[test]
    fn clopper_pearson_bounds() {
        // Known values: 2/10 → [0.0252, 0.5561].
        let (lo, hi) = clopper_pearson(2, 10);
        assert!((lo - 0.02521).abs() < 1e-4, "{lo}");
        assert!((hi - 0.55610).abs() < 1e-4, "{hi}");
        assert_eq!(clopper_pearson(0, 10).0, 0.0);
        assert_eq!(clopper_pearson(10, 10).1, 1.0);
    }
}
