//! `pass-until study`: what quantization does to what a model can do.
//!
//! For each type, the base model is requantized (cached in `DIR/models/`, keyed by the base's
//! sha256), the same task is run with the same seeds (`DIR/runs/NAME/`: a paired design, so
//! sample i of problem p differs between types only through the weights), and, with a text,
//! each type is compared with the reference (perplexity, KL divergence, same-top %). The
//! report gives per type the bits per weight, file size, task score, its paired shift against
//! the reference with a 95% interval, and which problems flip; per problem, every type's
//! pass rate. The reference is the base file itself or a requantization of it (e.g. F32
//! dequantized from a Q4_1 model), and the report says which.
//!
//! With [`StudyOptions::split`] (native engine) each type also runs with exact activations
//! (`DIR/runs/NAME-exact/`) and the reference runs only so (`DIR/runs/reference-exact/`): the model as its weights define
//! it. Each type's score shift and KL divergence then split into a weight part (exact
//! activations against the reference) and an activation part (8-bit against exact
//! activations, same weights), each with a paired 95% interval; the two add up to the total.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compare::{CompareOptions, CompareReport};
use crate::run::report::{report, Report};
use crate::run::{RunError, RunOptions};
use engine::quantize::Target;
use quant::requant::requantize;

/// An error in a study.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// A run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Requantizing failed.
    #[error(transparent)]
    Requant(#[from] quant::requant::RequantError),
    /// The comparison failed.
    #[error(transparent)]
    Compare(#[from] crate::compare::CompareError),
    /// Settings that cannot work together.
    #[error("{0}")]
    Settings(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to study.
#[derive(Clone, Debug)]
pub struct StudyOptions {
    /// The base model file.
    pub base: PathBuf,
    /// The reference: `None` for the base file itself, or a requantization of it.
    pub reference: Option<Target>,
    /// The types to compare with the reference.
    pub types: Vec<Target>,
    /// Run settings shared by every type (`model` and `out` are set per type).
    pub run: RunOptions,
    /// A text for perplexity and KL divergence, with its settings.
    pub text: Option<(PathBuf, CompareOptions)>,
    /// The study directory.
    pub out: PathBuf,
    /// Split each shift into its weight and activation parts (native engine): every type
    /// runs with 8-bit and with exact activations, the reference with exact ones (the run's
    /// and the text comparison's own activation settings are then not used).
    pub split: bool,
}

/// One type's line.
#[derive(Clone, Debug, Serialize)]
pub struct TypeLine {
    /// `reference`, a type or a mix.
    pub name: String,
    /// The model file.
    pub model: String,
    /// Bits per weight.
    pub bits_per_weight: f64,
    /// File size.
    pub bytes: u64,
    /// Task score: the run's headline (PassUntil's unbiased mean pass rate, `r/K` for r = 1),
    /// or mean pass@k for the smallest k.
    pub score: f64,
    /// Its 95% interval (bootstrap over problems, seeded with the run's seed).
    pub score_ci95: Option<(f64, f64)>,
    /// Mean per-problem difference from the reference, with a 95% interval (paired).
    pub shift: Option<(f64, f64, f64)>,
    /// Fixed-n runs: per k, the mean per-problem difference of the unbiased pass@k from the
    /// reference's, with a 95% interval (paired over problems).
    pub pass_at_k_shift: Vec<KShift>,
    /// Problems solved by the reference but not by this type.
    pub lost: Vec<String>,
    /// Problems solved by this type but not by the reference.
    pub gained: Vec<String>,
    /// Perplexity on the text.
    pub ppl: Option<f64>,
    /// Mean KL divergence from the reference on the text.
    pub kld: Option<f64>,
    /// Share of text positions where the top token agrees with the reference's.
    pub same_top: Option<f64>,
    /// 95% intervals of the three, `value ± 1.96 ×` the uncertainty llama.cpp's perplexity
    /// tool gives (none for the reference's own KL and agreement, which are exact).
    pub text_ci95: TextIntervals,
    /// The shift split into weights and activations ([`StudyOptions::split`]; not for the
    /// reference).
    pub split: Option<SplitLine>,
}

/// One type's shifts split into what its weights do and what 8-bit activations add. Each is
/// `(mean, lo, hi)`, a 95% interval paired over problems (scores) or text positions (KL).
#[derive(Clone, Debug, Serialize)]
pub struct SplitLine {
    /// Task score with exact activations.
    pub score_exact: f64,
    /// Its 95% interval.
    pub score_exact_ci95: Option<(f64, f64)>,
    /// Score shift of the weights alone: exact activations against the reference.
    pub weight_shift: Option<(f64, f64, f64)>,
    /// Score shift of the 8-bit activations: the same weights, 8-bit against exact.
    pub activation_shift: Option<(f64, f64, f64)>,
    /// Mean KL divergence from the reference with exact activations: the weights' part.
    pub kld_weight: Option<(f64, f64, f64)>,
    /// What 8-bit activations add to it: KL(8-bit) − KL(exact), per position.
    pub kld_activation: Option<(f64, f64, f64)>,
}

/// 95% intervals of a type's numbers on the text.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TextIntervals {
    /// Perplexity.
    pub ppl: Option<(f64, f64)>,
    /// Mean KL divergence.
    pub kld: Option<(f64, f64)>,
    /// Top-token agreement.
    pub same_top: Option<(f64, f64)>,
}

/// A paired pass@k shift.
#[derive(Clone, Debug, Serialize)]
pub struct KShift {
    /// k.
    pub k: u64,
    /// Mean of pass@k(type) − pass@k(reference) over problems.
    pub mean: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Per-problem pass@k of a fixed-n run, for each k it reports.
fn pass_at_k_by_k(r: &Report) -> Vec<(u64, Vec<f64>)> {
    let ks: Vec<u64> = r
        .problems
        .first()
        .map(|p| p.pass_at_k.iter().map(|&(k, _)| k).collect())
        .unwrap_or_default();
    ks.into_iter()
        .map(|k| {
            let v = r
                .problems
                .iter()
                .map(|p| {
                    p.pass_at_k
                        .iter()
                        .find(|&&(kk, _)| kk == k)
                        .map_or(f64::NAN, |&(_, v)| v)
                })
                .collect();
            (k, v)
        })
        .collect()
}

/// The study's report.
#[derive(Clone, Debug, Serialize)]
pub struct StudyReport {
    /// What the reference is.
    pub reference: String,
    /// The reference first, then each type.
    pub types: Vec<TypeLine>,
    /// Problem ids, in task order.
    pub problems: Vec<String>,
    /// Per type (same order as `types`), each problem's pass rate as the score averages it
    /// ([`crate::run::report::ProblemReport::pass_rate`]).
    pub rates: Vec<Vec<f64>>,
    /// The comparison on the text, if one was made.
    pub compare: Option<CompareReport>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StudyError + '_ {
    move |source| StudyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `target` applied to the base, cached in `DIR/models/NAME.gguf` next to a stamp naming the
/// base's sha256.
fn requantized(
    opts: &StudyOptions,
    base_sha: &str,
    target: Target,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, StudyError> {
    let dir = opts.out.join("models");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(format!("{target}.gguf"));
    let stamp = dir.join(format!("{target}.gguf.base"));
    if path.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == base_sha) {
        return Ok(path);
    }
    progress(&format!("requantizing to {target}"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    requantize(&opts.base, &path, &target, threads, &mut |_| {})?;
    std::fs::write(&stamp, base_sha).map_err(io(&stamp))?;
    Ok(path)
}

/// Solved: the stopping rule met (PassUntil) or any success (fixed n).
fn solved(r: &Report) -> Vec<bool> {
    r.problems
        .iter()
        .map(|p| p.status == "passed" || (p.status == "done" && p.successes > 0))
        .collect()
}

/// The run's headline with its interval: PassUntil's, or pass@k's for the smallest k.
fn score(r: &Report) -> (f64, Option<(f64, f64)>) {
    match (
        r.task.pu_unbiased_all.or(r.task.pu),
        r.task.pass_at_k.first(),
    ) {
        (Some(pu), _) => (pu, r.task.pu_ci95),
        (None, Some(l)) => (l.mean, Some(l.ci95)),
        (None, None) => (0.0, None),
    }
}

/// Each problem's pass rate, as the headline averages it.
fn rates(r: &Report) -> Vec<f64> {
    r.problems.iter().map(|p| p.pass_rate()).collect()
}

/// Runs the study, and writes its report to `OUT/study.json`.
pub fn study(
    opts: &StudyOptions,
    progress: &mut dyn FnMut(&str),
    run_progress: &mut dyn crate::run::Progress,
) -> Result<StudyReport, StudyError> {
    if opts.split && opts.run.backend != engine::BackendKind::Native {
        return Err(StudyError::Settings(
            "splitting weights from activations needs the native backend (llama.cpp has no \
             exact-activation mode)"
                .into(),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let base_sha = crate::run::FileRef::of(&opts.base)?.sha256;
    let mut reference_name = match opts.reference {
        None => format!("the base file {}", opts.base.display()),
        Some(t) => format!("{t} requantized from {}", opts.base.display()),
    };
    if opts.split {
        reference_name.push_str(", exact activations");
    }
    let mut models: Vec<(String, PathBuf)> = vec![(
        "reference".into(),
        match opts.reference {
            None => opts.base.clone(),
            Some(t) => requantized(opts, &base_sha, t, progress)?,
        },
    )];
    for &t in &opts.types {
        models.push((t.to_string(), requantized(opts, &base_sha, t, progress)?));
    }
    use engine::Activations;
    // The reference with exact activations when splitting; each type with 8-bit ones (the
    // run's own mode otherwise), then, when splitting, with exact ones.
    let mut reports = Vec::new();
    let mut exact_reports = Vec::new();
    for (i, (name, model)) in models.iter().enumerate() {
        let modes: &[Activations] = match (opts.split, i) {
            (false, _) => &[opts.run.activations],
            (true, 0) => &[Activations::Exact],
            (true, _) => &[Activations::Q8, Activations::Exact],
        };
        for &mode in modes {
            // Exact runs get their own directories, so a study directory that ran without the
            // split keeps its runs (and refuses none) when it runs with it.
            let dir_name = match (opts.split, mode) {
                (true, Activations::Exact) => format!("{name}-exact"),
                _ => name.clone(),
            };
            progress(&format!("running {dir_name}"));
            let mut run = opts.run.clone();
            run.model = model.clone();
            run.activations = mode;
            run.out = opts.out.join("runs").join(&dir_name);
            crate::run::start(&run, run_progress)?;
            let r = report(&run.out)?;
            match (opts.split && i > 0, mode) {
                (true, Activations::Exact) => exact_reports.push(r),
                _ => reports.push(r),
            }
        }
    }
    let compare = match &opts.text {
        Some((path, copts)) => {
            progress("comparing on the text");
            let text = std::fs::read(path).map_err(io(path))?;
            let mut others: Vec<(PathBuf, Activations)> = Vec::new();
            for (_, m) in &models[1..] {
                match opts.split {
                    false => others.push((m.clone(), copts.activations)),
                    true => {
                        others.push((m.clone(), Activations::Q8));
                        others.push((m.clone(), Activations::Exact));
                    }
                }
            }
            let reference_mode = match opts.split {
                true => Activations::Exact,
                false => copts.reference_activations,
            };
            Some(crate::compare::compare_modes(
                (&models[0].1, reference_mode),
                &others,
                &text,
                copts,
            )?)
        }
        None => None,
    };
    // Type i's comparisons (8-bit, then exact when splitting) in `compare.models`.
    let per_type = if opts.split { 2 } else { 1 };
    let base_rates = rates(&reports[0]);
    let base_solved = solved(&reports[0]);
    let problems: Vec<String> = reports[0]
        .problems
        .iter()
        .map(|p| p.problem.clone())
        .collect();
    let mut types = Vec::new();
    for (i, ((name, model), r)) in models.iter().zip(&reports).enumerate() {
        let facts = crate::compare::FileFacts::of(model)?;
        let own = rates(r);
        let sv = solved(r);
        let shift = (i > 0).then(|| paired_shift(&own, &base_rates)).flatten();
        let pass_at_k_shift = if i == 0 {
            Vec::new()
        } else {
            pass_at_k_by_k(r)
                .into_iter()
                .zip(pass_at_k_by_k(&reports[0]))
                .filter(|((k, _), (kb, _))| k == kb)
                .filter_map(|((k, v), (_, b))| {
                    paired_shift(&v, &b).map(|(mean, lo, hi)| KShift { k, mean, lo, hi })
                })
                .collect()
        };
        let pick = |f: &dyn Fn(&crate::metrics::perplexity::KlSummary) -> f64| {
            compare.as_ref().map(|c| match i {
                0 => c.models.first().map_or(f64::NAN, |m| m.summary.ppl_base.0),
                _ => f(&c.models[per_type * (i - 1)].summary),
            })
        };
        let split = (opts.split && i > 0).then(|| {
            let exact = &exact_reports[i - 1];
            let exact_rates = rates(exact);
            let kl = |j: usize| {
                compare
                    .as_ref()
                    .map(|c| c.models[per_type * (i - 1) + j].kld_per_token.as_slice())
            };
            SplitLine {
                score_exact: score(exact).0,
                score_exact_ci95: score(exact).1,
                weight_shift: paired_shift(&exact_rates, &base_rates),
                activation_shift: paired_shift(&own, &exact_rates),
                kld_weight: kl(1).and_then(|e| paired_shift(e, &vec![0.0; e.len()])),
                kld_activation: kl(0).zip(kl(1)).and_then(|(q, e)| paired_shift(q, e)),
            }
        });
        types.push(TypeLine {
            name: name.clone(),
            model: model.display().to_string(),
            bits_per_weight: facts.bits_per_weight,
            bytes: facts.bytes,
            score: score(r).0,
            score_ci95: score(r).1,
            shift,
            pass_at_k_shift,
            lost: problems
                .iter()
                .zip(base_solved.iter().zip(&sv))
                .filter(|(_, (b, t))| **b && !**t)
                .map(|(p, _)| p.clone())
                .collect(),
            gained: problems
                .iter()
                .zip(base_solved.iter().zip(&sv))
                .filter(|(_, (b, t))| !**b && **t)
                .map(|(p, _)| p.clone())
                .collect(),
            ppl: pick(&|k| k.ppl_q.0),
            text_ci95: {
                let ci = |e: (f64, f64)| Some((e.0 - 1.96 * e.1, e.0 + 1.96 * e.1));
                let summary = compare.as_ref().and_then(|c| match i {
                    0 => c.models.first().map(|m| (&m.summary, true)),
                    _ => Some((&c.models[per_type * (i - 1)].summary, false)),
                });
                match summary {
                    None => TextIntervals::default(),
                    Some((k, true)) => TextIntervals {
                        ppl: ci(k.ppl_base),
                        ..TextIntervals::default()
                    },
                    Some((k, false)) => TextIntervals {
                        ppl: ci(k.ppl_q),
                        kld: ci(k.kld),
                        same_top: ci(k.same_top),
                    },
                }
            },
            kld: if i == 0 {
                compare.as_ref().map(|_| 0.0)
            } else {
                pick(&|k| k.kld.0)
            },
            same_top: if i == 0 {
                compare.as_ref().map(|_| 1.0)
            } else {
                pick(&|k| k.same_top.0)
            },
            split,
        });
    }
    let rates = reports.iter().map(rates).collect();
    let report = StudyReport {
        reference: reference_name,
        types,
        problems,
        rates,
        compare,
    };
    let json_path = opts.out.join("study.json");
    let json = serde_json::to_vec_pretty(&report).expect("a study report serializes");
    std::fs::write(&json_path, json).map_err(io(&json_path))?;
    Ok(report)
}

/// Mean of `a − b` over paired items with a 95% interval (normal, `sd/√n`).
fn paired_shift(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n == 0 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some((mean, mean, mean));
    }
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    let half = 1.96 * (var / n as f64).sqrt();
    Some((mean, mean - half, mean + half))
}

/// `0.1234 [0.1000, 0.1500]`, or the value alone without an interval.
fn with_ci(v: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{v:.4} [{lo:.4}, {hi:.4}]"),
        None => format!("{v:.4}"),
    }
}

impl StudyReport {
    /// Text tables.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "reference: {}\n", self.reference);
        let _ = writeln!(
            s,
            "{:<10} {:>6} {:>8} {:>26} {:>26} {:>5} {:>6} {:>9} {:>9} {:>7}",
            "type",
            "bpw",
            "MB",
            "score [95%]",
            "shift vs ref [95%]",
            "lost",
            "gained",
            "PPL",
            "KLD",
            "top-1"
        );
        for t in &self.types {
            let shift = t.shift.map_or("-".into(), |(m, lo, hi)| {
                format!("{m:+.4} [{lo:+.4}, {hi:+.4}]")
            });
            let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
            let _ = writeln!(
                s,
                "{:<10} {:>6.3} {:>8.1} {:>26} {:>26} {:>5} {:>6} {:>9} {:>9} {:>7}",
                t.name,
                t.bits_per_weight,
                t.bytes as f64 / 1e6,
                with_ci(t.score, t.score_ci95),
                shift,
                t.lost.len(),
                t.gained.len(),
                opt(t.ppl, 3),
                opt(t.kld, 5),
                t.same_top
                    .map_or("-".into(), |v| format!("{:.1}%", 100.0 * v)),
            );
        }
        if self.compare.is_some() {
            let _ = writeln!(s, "\non the text, 95% intervals:");
            let iv = |v: Option<(f64, f64)>, d: usize| {
                v.map_or("-".into(), |(lo, hi)| format!("[{lo:.d$}, {hi:.d$}]"))
            };
            for t in &self.types {
                let _ = writeln!(
                    s,
                    "{:<10} PPL {:>22}  KLD {:>22}  top-1 {:>18}",
                    t.name,
                    iv(t.text_ci95.ppl, 3),
                    iv(t.text_ci95.kld, 5),
                    iv(t.text_ci95.same_top, 4)
                );
            }
        }
        let w = self
            .problems
            .iter()
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(7)
            .clamp(7, 30);
        let _ = write!(s, "\npass rate per problem\n{:<w$}", "problem");
        for t in &self.types {
            let _ = write!(s, " {:>10}", t.name);
        }
        s.push('\n');
        for (i, p) in self.problems.iter().enumerate() {
            let id = crate::run::report::fit_id(p, w);
            let _ = write!(s, "{id:<w$}");
            for r in &self.rates {
                let _ = write!(s, " {:>10.4}", r.get(i).copied().unwrap_or(f64::NAN));
            }
            s.push('\n');
        }
        if self.types.iter().any(|t| !t.pass_at_k_shift.is_empty()) {
            let _ = writeln!(s, "\npass@k shift vs reference, paired over problems [95%]");
            for t in &self.types[1..] {
                let cells: Vec<String> = t
                    .pass_at_k_shift
                    .iter()
                    .map(|k| format!("@{}: {:+.4} [{:+.4}, {:+.4}]", k.k, k.mean, k.lo, k.hi))
                    .collect();
                let _ = writeln!(s, "{:<10} {}", t.name, cells.join("   "));
            }
        }
        if self.types.iter().any(|t| t.split.is_some()) {
            let iv = |v: Option<(f64, f64, f64)>, d: usize| {
                v.map_or("-".into(), |(m, lo, hi)| {
                    format!("{m:+.d$} [{lo:+.d$}, {hi:+.d$}]")
                })
            };
            let _ = writeln!(
                s,
                "\nshift split into weights (exact activations vs reference) and 8-bit \
                 activations (same weights) [95%]"
            );
            let _ = writeln!(
                s,
                "{:<10} {:>26} {:>26} {:>26} {:>28} {:>28}",
                "type",
                "exact [95%]",
                "score: weights",
                "score: activations",
                "KLD: weights",
                "KLD: activations"
            );
            for t in &self.types[1..] {
                if let Some(sp) = &t.split {
                    let _ = writeln!(
                        s,
                        "{:<10} {:>26} {:>26} {:>26} {:>28} {:>28}",
                        t.name,
                        with_ci(sp.score_exact, sp.score_exact_ci95),
                        iv(sp.weight_shift, 4),
                        iv(sp.activation_shift, 4),
                        iv(sp.kld_weight, 5),
                        iv(sp.kld_activation, 5),
                    );
                }
            }
        }
        for t in &self.types[1..] {
            if !t.lost.is_empty() || !t.gained.is_empty() {
                let _ = writeln!(s, "{}: lost {:?}, gained {:?}", t.name, t.lost, t.gained);
            }
        }
        s
    }

    /// Writes an SVG of task score against bits per weight at `path`, and, when the types were
    /// compared on a text, one of mean KL divergence against bits per weight (log scale)
    /// beside it (`NAME-kld.svg`). Returns the files written.
    pub fn plot(&self, path: &Path) -> Result<Vec<PathBuf>, StudyError> {
        self.plot_score(path)?;
        let mut written = vec![path.to_path_buf()];
        let points: Vec<(f64, f64, &str)> = self
            .types
            .iter()
            .skip(1)
            .filter_map(|t| t.kld.map(|k| (t.bits_per_weight, k, t.name.as_str())))
            .filter(|&(_, k, _)| k > 0.0 && k.is_finite())
            .collect();
        // With the split: the weights' part (exact activations) beside the total.
        let weights: Vec<(f64, f64)> = self
            .types
            .iter()
            .skip(1)
            .filter_map(|t| {
                let w = t.split.as_ref()?.kld_weight?.0;
                Some((t.bits_per_weight, w))
            })
            .filter(|&(_, k)| k > 0.0 && k.is_finite())
            .collect();
        if !points.is_empty() {
            let stem = path
                .file_stem()
                .map_or("study".into(), |s| s.to_string_lossy());
            let kld_path = path.with_file_name(format!("{stem}-kld.svg"));
            plot_kld(&points, &weights, &kld_path)?;
            written.push(kld_path);
        }
        Ok(written)
    }

    fn plot_score(&self, path: &Path) -> Result<(), StudyError> {
        use plotters::prelude::*;
        let err = |e: String| StudyError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        };
        let xs: Vec<f64> = self.types.iter().map(|t| t.bits_per_weight).collect();
        let (x0, x1) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let ymax = self
            .types
            .iter()
            .map(|t| t.score + t.shift.map_or(0.0, |s| (s.2 - s.0).abs()))
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.15;
        let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("capability vs bits per weight", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((x0 - 0.5)..(x1 + 0.5), 0.0..ymax)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("bits per weight")
            .y_desc("task score (mean pass rate)")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let base = self.types.first().map_or(0.0, |t| t.score);
        chart
            .draw_series(self.types.iter().map(|t| {
                let (lo, hi) = t
                    .shift
                    .map_or((t.score, t.score), |(_, lo, hi)| (base + lo, base + hi));
                ErrorBar::new_vertical(
                    t.bits_per_weight,
                    lo.max(0.0),
                    t.score,
                    hi,
                    BLUE.stroke_width(1),
                    8,
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(self.types.iter().map(|t| {
                EmptyElement::at((t.bits_per_weight, t.score))
                    + Circle::new((0, 0), 4, BLUE.filled())
                    + Text::new(t.name.clone(), (6, -14), ("sans-serif", 13))
            }))
            .map_err(|e| err(e.to_string()))?;
        // With the split: each type's score with exact activations (its weights alone).
        chart
            .draw_series(self.types.iter().filter_map(|t| {
                let sp = t.split.as_ref()?;
                Some(
                    EmptyElement::at((t.bits_per_weight, sp.score_exact))
                        + Circle::new((0, 0), 5, GREEN.stroke_width(2))
                        + Text::new("exact", (8, 4), ("sans-serif", 11)),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

/// Mean KL divergence from the reference against bits per weight, log scale: the total (8-bit
/// activations, red) and, when the study split them, the weights' part (exact activations,
/// blue); the gap between the two is what 8-bit activations add.
fn plot_kld(
    points: &[(f64, f64, &str)],
    weights: &[(f64, f64)],
    path: &Path,
) -> Result<(), StudyError> {
    use plotters::prelude::*;
    let err = |e: String| StudyError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let (x0, x1, y0, y1) = points.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y, _)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (y0, y1) = weights
        .iter()
        .fold((y0, y1), |(c, d), &(_, y)| (c.min(y), d.max(y)));
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "KL divergence from the reference vs bits per weight",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d((x0 - 0.5)..(x1 + 0.5), ((y0 / 2.0)..(y1 * 2.0)).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("bits per weight")
        .y_desc("mean KL divergence (nats, log)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut sorted: Vec<(f64, f64)> = points.iter().map(|&(x, y, _)| (x, y)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(sorted, RED.stroke_width(1)))
        .map_err(|e| err(e.to_string()))?
        .label("8-bit activations (total)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    if !weights.is_empty() {
        let mut w = weights.to_vec();
        w.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(w.clone(), BLUE.stroke_width(1)))
            .map_err(|e| err(e.to_string()))?
            .label("exact activations (weights alone)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(
                w.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, BLUE.filled())),
            )
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .draw_series(points.iter().map(|&(x, y, name)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, RED.filled())
                + Text::new(name.to_owned(), (6, -14), ("sans-serif", 13))
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::paired_shift;

    #[test]
    fn paired_shift_interval() {
        let (m, lo, hi) = paired_shift(&[0.5, 0.2, 0.1], &[0.5, 0.4, 0.1]).unwrap();
        assert!((m + 0.2 / 3.0).abs() < 1e-12);
        assert!(lo < m && m < hi);
        assert_eq!(paired_shift(&[], &[]), None);
    }
}
