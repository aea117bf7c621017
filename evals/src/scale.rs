//! `pass-until scale`: PassUntil across models, the method's central claim as a command.
//!
//! Each run directory is a point on a size axis: parameters from its GGUF file (all tensors,
//! in billions, as model names count them), bits per weight for quantized variants of one
//! model (chosen when every run's file has the same parameter count), or values given by the
//! caller. Each run's pass rate is its report's headline (the unbiased PassUntil estimate
//! under its stopping rule for r ≥ 2, `r/K` for r = 1, pass@1 for a fixed-n run) over the
//! problems decided in every run, so that all points measure the same problems.
//!
//! - **The law.** `PU(N) = exp(−c·N^−α)` fitted as a line in `(ln N, ln(−ln PU))`
//!   (EVALS-SPEC §2), with intervals on c and α from a bootstrap over problems: one resample
//!   of problem ids is applied to every run (the runs share their problems), each run's mean
//!   recomputed, the law refitted.
//! - **The prediction.** A held-out run (`predict`) is predicted at its x from the fit, with
//!   the same bootstrap's interval, and compared with its measured value: the difference,
//!   paired over problems, with its interval. The paper's instance-level prediction (a law
//!   per problem, averaged) is given beside it.
//! - **Emergence.** The quadratic term q of `ln(−ln PU)` in `ln N` over the fitted runs (three
//!   or more), its problem-bootstrap interval and the verdict: linear (the law holds), convex
//!   (sub-scaling) or concave (accelerated emergence).
//! - **Budget reallocation** (EVALS-SPEC §9, for fixed-n runs): pass@k against compute, with
//!   FLOPs per sample `2 × non-embedding parameters × generated tokens` (a tied output head
//!   counts: it multiplies the whole vocabulary's rows every token, and in small models with
//!   large vocabularies it is most of the work) and the prompt counted once per problem; and
//!   every pairing of a cheaper model sampled more against a dearer one
//!   sampled less at equal compute, the difference paired over problems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::metrics::pass_at_k::pass_at_k;
use crate::metrics::passuntil::{
    bootstrap_ci95, bootstrap_mean_ci95, curvature, Curvature, ScalingLaw,
};
use crate::run::report::{report, Estimate, Report};
use crate::run::RunError;
use crate::run::{FileRef, RunConfig, StopRule};

/// Bootstrap resamples (each refits the law).
const BOOTSTRAP_ITERS: usize = 2_000;

/// |q| below this is rounding, not curvature (real curvatures are 1e-2 and up).
const CURVATURE_ZERO: f64 = 1e-9;

/// Why a scaling analysis cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// A run could not be read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Settings that cannot work (too few runs, x values that do not match, mixed tasks...).
    #[error("{0}")]
    Settings(String),
    /// A run's model file cannot give the size axis.
    #[error("{}: {message}; give the runs' sizes with --x", dir.display())]
    Model {
        /// The run directory.
        dir: PathBuf,
        /// What is wrong with its model file.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What the x axis measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Parameters of the model file, in billions.
    Params,
    /// Bits per weight of the model file.
    BitsPerWeight,
    /// Values the caller gave.
    Given,
}

impl Axis {
    fn label(self) -> &'static str {
        match self {
            Axis::Params => "parameters (billions)",
            Axis::BitsPerWeight => "bits per weight",
            Axis::Given => "x (given)",
        }
    }
}

/// What to analyse.
#[derive(Clone, Debug, Default)]
pub struct ScaleOptions {
    /// Run directories the law is fitted on; a study directory stands for its runs.
    pub runs: Vec<PathBuf>,
    /// A held-out run to predict.
    pub predict: Option<PathBuf>,
    /// The x of each run (in `runs` order, then the held-out run), instead of reading them
    /// from the model files.
    pub x: Option<Vec<f64>>,
    /// The axis read from the model files (`None`: parameters, or bits per weight when every
    /// file has the same parameter count). Ignored with `x`.
    pub axis: Option<Axis>,
    /// The bootstrap's seed (`None`: the first run's seed).
    pub seed: Option<u64>,
}

/// Size facts of a run's model file.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ModelSize {
    /// Parameters over all tensors.
    pub params: u64,
    /// Parameters outside the token embedding.
    pub non_embedding_params: u64,
    /// Weights multiplied per token: the non-embedding parameters, plus the output head when
    /// it is the token embedding (tied), which then is a product over the vocabulary every
    /// token all the same. FLOPs are counted with these.
    pub flop_params: u64,
    /// Bits per weight over all tensors.
    pub bits_per_weight: f64,
}

/// One run as a point.
#[derive(Clone, Debug, Serialize)]
pub struct ScalePoint {
    /// The run directory.
    pub dir: String,
    /// The model file.
    pub model: String,
    /// Its size, when the file is there and is the one the run used.
    pub size: Option<ModelSize>,
    /// Its x.
    pub x: f64,
    /// What its pass rate is: `PassUntil (unbiased)`, `PassUntil r/K` or `pass@1`.
    pub measure: String,
    /// Its pass rate over the shared problems, with a bootstrap interval over them.
    pub pass_rate: Estimate,
    /// Shared problems that reached the cap without the r successes asked for.
    pub censored: usize,
    /// Mean generated tokens per counted sample over the shared problems.
    pub mean_tokens: f64,
    /// The fitted law at its x.
    pub fitted: Option<f64>,
    /// Whether it is the held-out run.
    pub held_out: bool,
}

/// The fitted law.
#[derive(Clone, Debug, Serialize)]
pub struct FitLine {
    /// c.
    pub c: Estimate,
    /// α.
    pub alpha: Estimate,
    /// Runs the fit used (those with 0 < pass rate < 1).
    pub points: usize,
}

/// The emergence test over the fitted runs.
#[derive(Clone, Debug, Serialize)]
pub struct EmergenceLine {
    /// The quadratic coefficient q, with its problem-bootstrap interval.
    pub q: Estimate,
    /// `linear`, `convex` (sub-scaling) or `concave` (accelerated emergence).
    pub class: String,
}

/// The held-out run predicted.
#[derive(Clone, Debug, Serialize)]
pub struct PredictionLine {
    /// The run directory.
    pub dir: String,
    /// Its x.
    pub x: f64,
    /// The task law's prediction, with its interval.
    pub predicted: Estimate,
    /// The paper's instance-level prediction: each problem's own law at x, averaged (a
    /// problem with fewer than two usable points keeps its value at the largest fitted x).
    pub predicted_by_instances: f64,
    /// Problems that had a law of their own.
    pub instance_laws: usize,
    /// The measured pass rate, with its interval.
    pub measured: Estimate,
    /// Predicted minus measured, paired over problems, with its interval.
    pub error: Estimate,
}

/// pass@k against compute for one fixed-n run.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetCurve {
    /// The run directory.
    pub dir: String,
    /// Samples per problem.
    pub n: u64,
    /// FLOPs of one sample: 2 × [`ModelSize::flop_params`] × mean generated tokens.
    pub flops_per_sample: f64,
    /// FLOPs of a problem's prompt, once per problem (mean over problems).
    pub flops_prompt: f64,
    /// Per k: FLOPs per problem and pass@k with its interval.
    pub points: Vec<BudgetPoint>,
}

/// One k of a budget curve.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetPoint {
    /// Samples per problem.
    pub k: u64,
    /// FLOPs per problem for k samples.
    pub flops: f64,
    /// Mean unbiased pass@k over the problems.
    pub pass_at_k: Estimate,
}

/// A cheaper model sampled more against a dearer one at equal compute.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetMatch {
    /// The dearer run and its k.
    pub dear: String,
    /// Its samples per problem.
    pub k_dear: u64,
    /// Its FLOPs per problem: the budget.
    pub flops: f64,
    /// The cheaper run.
    pub cheap: String,
    /// The most samples per problem it can draw within the budget, at most its run's n.
    pub k_cheap: u64,
    /// What those samples cost per problem: the budget, less what is left over (all of
    /// what is left over when its run's n limits `k_cheap`).
    pub flops_cheap: f64,
    /// Whether its run's n limited `k_cheap` (it then spends less than the budget).
    pub capped: bool,
    /// pass@k of the dearer run.
    pub pass_dear: f64,
    /// pass@k of the cheaper run.
    pub pass_cheap: f64,
    /// Cheaper minus dearer, paired over problems, with its interval.
    pub gain: Estimate,
}

/// The whole analysis.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// What x is.
    pub axis: Axis,
    /// The problems every run decided (the points are means over them).
    pub problems: usize,
    /// Problems left out because some run had not decided them.
    pub dropped: Vec<String>,
    /// The fitted runs in order, then the held-out run.
    pub runs: Vec<ScalePoint>,
    /// The law, when two or more runs have a pass rate strictly between 0 and 1.
    pub fit: Option<FitLine>,
    /// The emergence test, with three or more such runs.
    pub emergence: Option<EmergenceLine>,
    /// The held-out run's prediction.
    pub prediction: Option<PredictionLine>,
    /// pass@k against compute, for fixed-n runs.
    pub budget: Vec<BudgetCurve>,
    /// Equal-compute pairings.
    pub matches: Vec<BudgetMatch>,
    /// What could not be computed, and why.
    pub notes: Vec<String>,
    /// The bootstrap's seed.
    pub seed: u64,
}

/// One run read.
struct Loaded {
    dir: PathBuf,
    report: Report,
    size: Result<ModelSize, String>,
}

/// Study directories stand for their runs, in the study's order (the reference's exact-
/// activation run where the study split activations and has no other reference run).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScaleError> {
    let mut out = Vec::new();
    for p in paths {
        let study = p.join("study.json");
        if !study.is_file() {
            out.push(p.clone());
            continue;
        }
        let io = |source| ScaleError::Io {
            path: study.clone(),
            source,
        };
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&study).map_err(io)?)
            .map_err(|e| {
                ScaleError::Settings(format!("{}: not a study report: {e}", study.display()))
            })?;
        let names = v["types"]
            .as_array()
            .ok_or_else(|| ScaleError::Settings(format!("{}: no `types` list", study.display())))?;
        for t in names {
            let name = t["name"].as_str().ok_or_else(|| {
                ScaleError::Settings(format!("{}: a type without a name", study.display()))
            })?;
            let plain = p.join("runs").join(name);
            let exact = p.join("runs").join(format!("{name}-exact"));
            out.push(if plain.join("run.json").is_file() || !exact.is_dir() {
                plain
            } else {
                exact
            });
        }
    }
    Ok(out)
}

/// The size of the model file a run used, if it is still there unchanged.
fn model_size(run: &RunConfig) -> Result<ModelSize, String> {
    let path = Path::new(&run.model.path);
    let now = FileRef::of(path).map_err(|e| format!("model file: {e}"))?;
    if now.sha256 != run.model.sha256 {
        return Err(format!(
            "the model file {} has changed since the run (sha256 {} now, {} then)",
            path.display(),
            now.sha256,
            run.model.sha256
        ));
    }
    let f = quant::gguf::GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut params, mut embd, mut bits, mut head) = (0u64, 0u64, 0u64, false);
    for t in f.tensor_infos() {
        params += t.n_elements();
        bits += 8 * t.size;
        match t.name.as_str() {
            "token_embd.weight" => embd += t.n_elements(),
            "output.weight" => head = true,
            _ => {}
        }
    }
    if params == 0 {
        return Err(format!("{} holds no tensors", path.display()));
    }
    Ok(ModelSize {
        params,
        non_embedding_params: params - embd,
        flop_params: if head { params - embd } else { params },
        bits_per_weight: bits as f64 / params as f64,
    })
}

fn measure(rule: &StopRule) -> &'static str {
    match rule {
        StopRule::PassUntil { r, .. } if *r >= 2 => "PassUntil (unbiased)",
        StopRule::PassUntil { .. } => "PassUntil r/K",
        StopRule::Fixed { .. } => "pass@1",
    }
}

/// The verdict's words.
fn curvature_name(c: Curvature) -> &'static str {
    match c {
        Curvature::Linear => "linear (the law holds)",
        Curvature::Convex => "convex (sub-scaling)",
        Curvature::Concave => "concave (accelerated emergence)",
    }
}

/// Mean of `v` over the indices `idx`.
fn mean_at(v: &[f64], idx: &[usize]) -> f64 {
    idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64
}

/// Runs the analysis.
pub fn scale(opts: &ScaleOptions) -> Result<ScaleReport, ScaleError> {
    let fit_dirs = expand(&opts.runs)?;
    if fit_dirs.is_empty() {
        return Err(ScaleError::Settings("no run to fit".into()));
    }
    let mut dirs = fit_dirs.clone();
    dirs.extend(opts.predict.iter().cloned());
    let mut loaded = Vec::new();
    for dir in &dirs {
        let report = report(dir)?;
        let size = model_size(&report.run);
        loaded.push(Loaded {
            dir: dir.clone(),
            report,
            size,
        });
    }
    // One task for all: the same problems, so the points can be paired.
    let first = &loaded[0];
    for l in &loaded[1..] {
        if l.report.run.task.file.sha256 != first.report.run.task.file.sha256 {
            return Err(ScaleError::Settings(format!(
                "{} and {} ran different task files ({} and {}); a scaling fit compares one \
                 task across models",
                first.dir.display(),
                l.dir.display(),
                first.report.run.task.file.path,
                l.report.run.task.file.path
            )));
        }
    }
    let seed = opts.seed.unwrap_or(first.report.run.seed);
    let (axis, xs) = axis_values(opts, &loaded)?;

    // The problems every run decided.
    let decided = |r: &Report| -> BTreeMap<String, (u64, u64, f64)> {
        r.problems
            .iter()
            .filter(|p| p.status != "open")
            .map(|p| (p.problem.clone(), (p.successes, p.trials, p.pass_rate())))
            .collect()
    };
    let per_run: Vec<BTreeMap<String, (u64, u64, f64)>> =
        loaded.iter().map(|l| decided(&l.report)).collect();
    let all_ids: Vec<String> = loaded[0]
        .report
        .problems
        .iter()
        .map(|p| p.problem.clone())
        .collect();
    let (shared, dropped): (Vec<String>, Vec<String>) = all_ids
        .into_iter()
        .partition(|id| per_run.iter().all(|m| m.contains_key(id)));
    if shared.is_empty() {
        return Err(ScaleError::Settings(
            "no problem is decided in every run; finish or resume them first".into(),
        ));
    }
    let m = shared.len();
    // values[i][j]: run i's estimate on shared problem j.
    let values: Vec<Vec<f64>> = per_run
        .iter()
        .map(|pm| shared.iter().map(|id| pm[id].2).collect())
        .collect();
    let all_idx: Vec<usize> = (0..m).collect();
    let n_fit = fit_dirs.len();
    let fit_x = &xs[..n_fit];
    let means =
        |idx: &[usize]| -> Vec<f64> { values[..n_fit].iter().map(|v| mean_at(v, idx)).collect() };
    let point_means = means(&all_idx);
    let mut notes = Vec::new();

    // The law and its bootstrap.
    let law = match ScalingLaw::fit(fit_x, &point_means) {
        Ok(l) => Some(l),
        Err(e) => {
            notes.push(format!(
                "no scaling fit: {e} (runs with a pass rate strictly between 0 and 1)"
            ));
            None
        }
    };
    let refit = |idx: &[usize]| -> Option<ScalingLaw> {
        let l = ScalingLaw::fit(fit_x, &means(idx)).ok()?;
        // A resample that loses a point fits another design; it is left out.
        (Some(l.points) == law.map(|l| l.points)).then_some(l)
    };
    if let Some(l) = law.filter(|l| !(l.c > 0.0 && l.alpha > 0.0)) {
        notes.push(format!(
            "the fitted c = {:.4}, alpha = {:.4} are outside the law's domain (c, alpha > 0: \
             pass rates that grow with x); the law does not describe these runs",
            l.c, l.alpha
        ));
    }
    let fit = law.map(|l| FitLine {
        c: Estimate {
            value: l.c,
            ci95: bootstrap_ci95(m, BOOTSTRAP_ITERS, seed, |idx| refit(idx).map(|b| b.c)),
        },
        alpha: Estimate {
            value: l.alpha,
            ci95: bootstrap_ci95(m, BOOTSTRAP_ITERS, seed, |idx| refit(idx).map(|b| b.alpha)),
        },
        points: l.points,
    });

    let usable = |v: &[f64]| v.iter().filter(|&&p| p > 0.0 && p < 1.0).count();
    let emergence = match curvature(fit_x, &point_means) {
        Ok(q) => {
            let points = usable(&point_means);
            // Resamples that lose or gain a usable point fit another design: left out.
            let ci = bootstrap_ci95(m, BOOTSTRAP_ITERS, seed ^ 0x51, |idx| {
                let v = means(idx);
                (usable(&v) == points)
                    .then(|| curvature(fit_x, &v).ok())
                    .flatten()
            });
            // Points exactly on a law leave a q of rounding size; that is no curvature.
            let class = match ci {
                None => "undetermined (too few resamples keep the design)",
                Some((lo, _)) if lo > CURVATURE_ZERO => curvature_name(Curvature::Convex),
                Some((_, hi)) if hi < -CURVATURE_ZERO => curvature_name(Curvature::Concave),
                Some(_) => curvature_name(Curvature::Linear),
            };
            Some(EmergenceLine {
                q: Estimate { value: q, ci95: ci },
                class: class.into(),
            })
        }
        Err(e) => {
            notes.push(format!("no emergence test: {e}"));
            None
        }
    };

    let prediction = match (&opts.predict, law) {
        (Some(dir), Some(l)) => {
            let x = xs[n_fit];
            let held = &values[n_fit];
            let predicted = Estimate {
                value: l.predict(x),
                ci95: bootstrap_ci95(m, BOOTSTRAP_ITERS, seed ^ 0x9e, |idx| {
                    refit(idx).map(|b| b.predict(x))
                }),
            };
            let measured = Estimate {
                value: mean_at(held, &all_idx),
                ci95: bootstrap_mean_ci95(held, BOOTSTRAP_ITERS, seed ^ 0x3c),
            };
            let error = Estimate {
                value: predicted.value - measured.value,
                ci95: bootstrap_ci95(m, BOOTSTRAP_ITERS, seed ^ 0x9e, |idx| {
                    refit(idx).map(|b| b.predict(x) - mean_at(held, idx))
                }),
            };
            let largest = (0..n_fit)
                .max_by(|&a, &b| fit_x[a].total_cmp(&fit_x[b]))
                .unwrap_or(0);
            let mut instance_laws = 0;
            let by_instance = (0..m)
                .map(|j| {
                    let pu: Vec<f64> = values[..n_fit].iter().map(|v| v[j]).collect();
                    match ScalingLaw::fit(fit_x, &pu) {
                        Ok(law) => {
                            instance_laws += 1;
                            law.predict(x)
                        }
                        Err(_) => pu[largest],
                    }
                })
                .sum::<f64>()
                / m as f64;
            Some(PredictionLine {
                dir: dir.display().to_string(),
                x,
                predicted,
                predicted_by_instances: by_instance,
                instance_laws,
                measured,
                error,
            })
        }
        (Some(_), None) => {
            notes.push("no prediction: the law could not be fitted".into());
            None
        }
        _ => None,
    };

    let shared_set: std::collections::BTreeSet<&str> = shared.iter().map(String::as_str).collect();
    let runs = loaded
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let tokens: (f64, u64) = l
                .report
                .problems
                .iter()
                .filter(|p| shared_set.contains(p.problem.as_str()))
                .fold((0.0, 0), |(t, n), p| {
                    (t + p.mean_tokens * p.trials as f64, n + p.trials)
                });
            ScalePoint {
                dir: l.dir.display().to_string(),
                model: l.report.run.model.path.clone(),
                size: l.size.as_ref().ok().copied(),
                x: xs[i],
                measure: measure(&l.report.run.rule).into(),
                pass_rate: Estimate {
                    value: mean_at(&values[i], &all_idx),
                    ci95: bootstrap_mean_ci95(&values[i], BOOTSTRAP_ITERS, seed ^ i as u64),
                },
                censored: l
                    .report
                    .problems
                    .iter()
                    .filter(|p| p.status == "censored" && shared_set.contains(p.problem.as_str()))
                    .count(),
                mean_tokens: if tokens.1 > 0 {
                    tokens.0 / tokens.1 as f64
                } else {
                    0.0
                },
                fitted: law.map(|law| law.predict(xs[i])),
                held_out: i >= n_fit,
            }
        })
        .collect::<Vec<_>>();

    let (budget, matches) = budget(&loaded, &per_run, &shared, &runs, seed, &mut notes);
    Ok(ScaleReport {
        axis,
        problems: m,
        dropped,
        runs,
        fit,
        emergence,
        prediction,
        budget,
        matches,
        notes,
        seed,
    })
}

/// The x of every run: given, or read from the model files.
fn axis_values(opts: &ScaleOptions, loaded: &[Loaded]) -> Result<(Axis, Vec<f64>), ScaleError> {
    if let Some(x) = &opts.x {
        if x.len() != loaded.len() {
            return Err(ScaleError::Settings(format!(
                "{} x values for {} runs (the fitted runs in order, then the held-out one)",
                x.len(),
                loaded.len()
            )));
        }
        if let Some(bad) = x.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(ScaleError::Settings(format!(
                "x = {bad}: sizes must be positive"
            )));
        }
        return Ok((Axis::Given, x.clone()));
    }
    let sizes = loaded
        .iter()
        .map(|l| {
            l.size.clone().map_err(|message| ScaleError::Model {
                dir: l.dir.clone(),
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if opts.axis == Some(Axis::Given) {
        return Err(ScaleError::Settings(
            "the given axis needs the x values (--x)".into(),
        ));
    }
    let axis = opts.axis.unwrap_or_else(|| {
        if sizes.iter().all(|s| s.params == sizes[0].params) {
            Axis::BitsPerWeight
        } else {
            Axis::Params
        }
    });
    let xs = sizes
        .iter()
        .map(|s| match axis {
            Axis::BitsPerWeight => s.bits_per_weight,
            _ => s.params as f64 / 1e9,
        })
        .collect();
    Ok((axis, xs))
}

/// The budget section: pass@k against FLOPs for each fixed-n run, and the equal-compute
/// pairings between them.
fn budget(
    loaded: &[Loaded],
    per_run: &[BTreeMap<String, (u64, u64, f64)>],
    shared: &[String],
    runs: &[ScalePoint],
    seed: u64,
    notes: &mut Vec<String>,
) -> (Vec<BudgetCurve>, Vec<BudgetMatch>) {
    // Per fixed-n run: the curve and its per-problem (n, c).
    let mut curves: Vec<(BudgetCurve, Vec<(u64, u64)>)> = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let StopRule::Fixed { n, .. } = l.report.run.rule else {
            continue;
        };
        let size = match &l.size {
            Ok(s) => *s,
            Err(e) => {
                notes.push(format!("no budget curve for {}: {e}", l.dir.display()));
                continue;
            }
        };
        let task = Path::new(&l.report.run.task.file.path);
        match FileRef::of_task(task, l.report.run.task.format) {
            Ok(now) if now.sha256 == l.report.run.task.file.sha256 => {}
            _ => {
                notes.push(format!(
                    "no budget curve for {}: its task file {} is gone or changed (the prompts \
                     are tokenized from it)",
                    l.dir.display(),
                    task.display()
                ));
                continue;
            }
        }
        let lengths = match crate::run::prompt_lengths(
            &l.report.run,
            Path::new(&l.report.run.model.path),
            task,
        ) {
            Ok(p) => p,
            Err(e) => {
                notes.push(format!(
                    "no budget curve for {}: prompt lengths: {e}",
                    l.dir.display()
                ));
                continue;
            }
        };
        let by_id: BTreeMap<&str, u64> = l
            .report
            .problems
            .iter()
            .map(|p| (p.problem.as_str(), p.p))
            .collect();
        let Some(prompt) = shared
            .iter()
            .map(|id| {
                by_id
                    .get(id.as_str())
                    .and_then(|p| lengths.get(p))
                    .map(|&n| n as f64)
            })
            .sum::<Option<f64>>()
        else {
            notes.push(format!(
                "no budget curve for {}: a problem of its report is not in its task file",
                l.dir.display()
            ));
            continue;
        };
        let prompt = prompt / shared.len() as f64;
        let nc: Vec<(u64, u64)> = shared
            .iter()
            .map(|id| {
                let (c, t, _) = per_run[i][id];
                (t, c)
            })
            .collect();
        // Every shared problem of a finished fixed-n run has its n samples.
        let n_min = nc.iter().map(|&(t, _)| t).min().unwrap_or(0).min(n);
        if n_min == 0 {
            continue;
        }
        let two_n = 2.0 * size.flop_params as f64;
        let flops_per_sample = two_n * runs[i].mean_tokens;
        let flops_prompt = two_n * prompt;
        let mut ks: Vec<u64> = std::iter::successors(Some(1u64), |k| Some(k * 2))
            .take_while(|&k| k <= n_min)
            .collect();
        if ks.last() != Some(&n_min) {
            ks.push(n_min);
        }
        let points = ks
            .iter()
            .map(|&k| {
                let v: Vec<f64> = nc
                    .iter()
                    .map(|&(t, c)| pass_at_k(t, c, k).unwrap_or(f64::NAN))
                    .collect();
                BudgetPoint {
                    k,
                    flops: flops_prompt + k as f64 * flops_per_sample,
                    pass_at_k: Estimate {
                        value: v.iter().sum::<f64>() / v.len() as f64,
                        ci95: bootstrap_mean_ci95(&v, BOOTSTRAP_ITERS, seed ^ k),
                    },
                }
            })
            .collect();
        curves.push((
            BudgetCurve {
                dir: l.dir.display().to_string(),
                n: n_min,
                flops_per_sample,
                flops_prompt,
                points,
            },
            nc,
        ));
    }
    let mut matches = Vec::new();
    for (dear, dear_nc) in &curves {
        for (cheap, cheap_nc) in &curves {
            if !(cheap.flops_per_sample > 0.0 && cheap.flops_per_sample < dear.flops_per_sample) {
                continue;
            }
            for point in &dear.points {
                let afford = ((point.flops - cheap.flops_prompt) / cheap.flops_per_sample).floor();
                if afford < 1.0 {
                    continue;
                }
                let capped = afford > cheap.n as f64;
                let k_cheap = afford.min(cheap.n as f64) as u64;
                let per = |nc: &[(u64, u64)], k: u64| -> Vec<f64> {
                    nc.iter()
                        .map(|&(t, c)| pass_at_k(t, c, k).unwrap_or(f64::NAN))
                        .collect()
                };
                let (a, b) = (per(cheap_nc, k_cheap), per(dear_nc, point.k));
                let gain: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                matches.push(BudgetMatch {
                    dear: dear.dir.clone(),
                    k_dear: point.k,
                    flops: point.flops,
                    cheap: cheap.dir.clone(),
                    k_cheap,
                    flops_cheap: cheap.flops_prompt + k_cheap as f64 * cheap.flops_per_sample,
                    capped,
                    pass_dear: mean(&b),
                    pass_cheap: mean(&a),
                    gain: Estimate {
                        value: mean(&gain),
                        ci95: bootstrap_mean_ci95(&gain, BOOTSTRAP_ITERS, seed ^ point.k),
                    },
                });
            }
        }
    }
    if curves.is_empty()
        && loaded
            .iter()
            .any(|l| matches!(l.report.run.rule, StopRule::PassUntil { .. }))
    {
        notes.push(
            "no budget curves: pass@k against compute needs fixed-n runs (--n); under \
             sample-until-r it has no unbiased estimate"
                .into(),
        );
    }
    (curves.into_iter().map(|(c, _)| c).collect(), matches)
}

/// Four significant digits, scientific below 1e-3.
fn sig(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

impl ScaleReport {
    /// Text tables.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let held = self.runs.iter().filter(|r| r.held_out).count();
        let _ = writeln!(
            s,
            "{} runs{}, x = {}, {} problems decided in every run{}; intervals: 95%, bootstrap \
             over problems (seed {})\n",
            self.runs.len() - held,
            if held > 0 { " and 1 held out" } else { "" },
            self.axis.label(),
            self.problems,
            if self.dropped.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} left out: {})",
                    self.dropped.len(),
                    self.dropped.join(", ")
                )
            },
            self.seed
        );
        let _ = writeln!(
            s,
            "{:<32} {:>10} {:<21} {:<34} {:>10}",
            "run", "x", "measure", "pass rate [95%]", "law"
        );
        for r in &self.runs {
            let mut dir = r.dir.clone();
            if r.held_out {
                dir.push_str(" (held out)");
            }
            let _ = writeln!(
                s,
                "{:<32} {:>10} {:<21} {:<34} {:>10}",
                dir,
                sig(r.x),
                r.measure,
                r.pass_rate.show(sig),
                r.fitted.map_or("-".into(), sig)
            );
        }
        if let Some(f) = &self.fit {
            let _ = writeln!(
                s,
                "\nlaw: PU(x) = exp(-c * x^-alpha), c = {}, alpha = {} ({} runs)",
                f.c.show(sig),
                f.alpha.show(sig),
                f.points
            );
        }
        if let Some(e) = &self.emergence {
            let _ = writeln!(
                s,
                "emergence: q = {} in ln(-ln PU) = a + b ln x + q (ln x)^2: {}",
                e.q.show(sig),
                e.class
            );
        }
        if let Some(p) = &self.prediction {
            let _ = writeln!(
                s,
                "\nprediction for {} at x = {}:\n  law          {}\n  instances    {} ({} of \
                 {} problems with a law of their own)\n  measured     {}\n  law - \
                 measured {}",
                p.dir,
                sig(p.x),
                p.predicted.show(sig),
                sig(p.predicted_by_instances),
                p.instance_laws,
                self.problems,
                p.measured.show(sig),
                p.error.show(sig)
            );
        }
        if !self.budget.is_empty() {
            let _ = writeln!(
                s,
                "\npass@k against compute (FLOPs per problem: the prompt once, then 2 x \
                 non-embedding parameters (a tied head counted) x tokens per sample)"
            );
            let _ = writeln!(
                s,
                "{:<32} {:>6} {:>12} {:<34}",
                "run", "k", "GFLOPs", "pass@k [95%]"
            );
            for c in &self.budget {
                for p in &c.points {
                    let _ = writeln!(
                        s,
                        "{:<32} {:>6} {:>12.3} {:<34}",
                        c.dir,
                        p.k,
                        p.flops / 1e9,
                        p.pass_at_k.show(sig)
                    );
                }
            }
        }
        if !self.matches.is_empty() {
            let _ = writeln!(s, "\nequal compute: a cheaper model sampled more");
            let _ = writeln!(
                s,
                "{:>12}  {:<32} {:>6} {:>8}  {:<32} {:>6} {:>8}  {:<30}",
                "GFLOPs", "dearer", "k", "pass@k", "cheaper", "k", "pass@k", "gain [95%]"
            );
            for m in &self.matches {
                let _ = writeln!(
                    s,
                    "{:>12.3}  {:<32} {:>6} {:>8.4}  {:<32} {:>6} {:>8.4}  {:<30}",
                    m.flops / 1e9,
                    m.dear,
                    m.k_dear,
                    m.pass_dear,
                    m.cheap,
                    format!("{}{}", m.k_cheap, if m.capped { "*" } else { "" }),
                    m.pass_cheap,
                    m.gain.show(sig)
                );
            }
            if self.matches.iter().any(|m| m.capped) {
                let _ = writeln!(
                    s,
                    "* the run's n: the cheaper model could afford more samples than it drew, \
                     and spends less than the budget"
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }

    /// Writes the scaling plot (pass rates on log axes with their intervals, the fitted law,
    /// the held-out run measured and predicted) to `path` and, with budget curves, pass@k
    /// against FLOPs beside it (`STEM-budget.svg`). Returns the files written.
    pub fn plot(&self, path: &Path) -> Result<Vec<PathBuf>, ScaleError> {
        let mut written = vec![path.to_path_buf()];
        self.plot_law(path)?;
        if !self.budget.is_empty() {
            let stem = path
                .file_stem()
                .map_or_else(|| "scale".into(), |s| s.to_string_lossy().into_owned());
            let budget = path.with_file_name(format!("{stem}-budget.svg"));
            self.plot_budget(&budget)?;
            written.push(budget);
        }
        Ok(written)
    }

    fn plot_law(&self, path: &Path) -> Result<(), ScaleError> {
        use plotters::prelude::*;
        let err = |e: String| ScaleError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let xs: Vec<f64> = self.runs.iter().map(|r| r.x).collect();
        let (x_lo, x_hi) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let (x_lo, x_hi) = (x_lo / 1.5, x_hi * 1.5);
        let ys = self
            .runs
            .iter()
            .flat_map(|r| {
                let (lo, hi) = r
                    .pass_rate
                    .ci95
                    .unwrap_or((r.pass_rate.value, r.pass_rate.value));
                [r.pass_rate.value, lo, hi]
            })
            .chain(self.prediction.iter().flat_map(|p| {
                let (lo, hi) = p
                    .predicted
                    .ci95
                    .unwrap_or((p.predicted.value, p.predicted.value));
                [p.predicted.value, lo, hi]
            }))
            .filter(|&y| y > 0.0);
        let (y_lo, y_hi) = ys.fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
        // No positive value at all: a decade below 1.
        let (y_lo, y_hi) = if y_hi > 0.0 { (y_lo, y_hi) } else { (0.1, 1.0) };
        let y_lo = (y_lo / 2.0).max(1e-9);
        let y_hi = (y_hi * 2.0).min(1.0).max((y_lo * 4.0).min(1.0));
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("pass rate against model size", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(self.axis.label())
            .y_desc("pass rate (95% interval)")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let clamp = |y: f64| y.clamp(y_lo, y_hi);
        if let Some(f) = &self.fit {
            let (c, a) = (f.c.value, f.alpha.value);
            let steps = 200;
            let curve = (0..=steps).map(|i| {
                let x = x_lo * (x_hi / x_lo).powf(i as f64 / steps as f64);
                (x, clamp((-c * x.powf(-a)).exp()))
            });
            chart
                .draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("law: exp(-{c:.3} x^-{a:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
        }
        for (held, color, label) in [
            (false, BLACK, "measured"),
            (true, RED, "held out, measured"),
        ] {
            let pts: Vec<&ScalePoint> = self
                .runs
                .iter()
                .filter(|r| r.held_out == held && r.pass_rate.value > 0.0)
                .collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(pts.iter().map(|r| {
                    let (lo, hi) = r
                        .pass_rate
                        .ci95
                        .unwrap_or((r.pass_rate.value, r.pass_rate.value));
                    ErrorBar::new_vertical(
                        r.x,
                        clamp(lo.max(y_lo)),
                        clamp(r.pass_rate.value),
                        clamp(hi),
                        color.filled(),
                        8,
                    )
                }))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        }
        if let Some(p) = &self.prediction {
            let (lo, hi) = p
                .predicted
                .ci95
                .unwrap_or((p.predicted.value, p.predicted.value));
            let x = p.x * 1.04;
            chart
                .draw_series(std::iter::once(ErrorBar::new_vertical(
                    x,
                    clamp(lo),
                    clamp(p.predicted.value),
                    clamp(hi),
                    GREEN.filled(),
                    8,
                )))
                .map_err(|e| err(e.to_string()))?
                .label("held out, predicted")
                .legend(|(x, y)| Circle::new((x + 9, y), 4, GREEN.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    fn plot_budget(&self, path: &Path) -> Result<(), ScaleError> {
        use plotters::prelude::*;
        let err = |e: String| ScaleError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let flops = self
            .budget
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.flops));
        let (lo, hi) = flops.fold((f64::MAX, f64::MIN), |(a, b), f| (a.min(f), b.max(f)));
        let (lo, hi) = (lo.max(1.0) / 1.5, hi.max(2.0) * 1.5);
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("pass@k against compute", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0f64..1.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("FLOPs per problem")
            .y_desc("pass@k (95% interval)")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, c) in self.budget.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let name = Path::new(&c.dir)
                .file_name()
                .map_or_else(|| c.dir.clone(), |n| n.to_string_lossy().into_owned());
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().map(|p| (p.flops, p.pass_at_k.value)),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(c.points.iter().map(|p| {
                    let (l, h) = p
                        .pass_at_k
                        .ci95
                        .unwrap_or((p.pass_at_k.value, p.pass_at_k.value));
                    ErrorBar::new_vertical(p.flops, l, p.pass_at_k.value, h, color.filled(), 6)
                }))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}
