//! `pass-until scale` on synthetic run directories: a planted law is recovered, the held-out
//! run predicted, and bad inputs refused with the reason.

use evals::generate::BackendKind;
use evals::run::{start, RunOptions, StopRule};
use evals::scale::{scale, Axis, ScaleError, ScaleOptions};
use std::path::{Path, PathBuf};

const TASK: &str = "{\"id\": \"a\", \"prompt\": \"1+1=\", \"target\": \"2\"}\n\
                    {\"id\": \"b\", \"prompt\": \"2+2=\", \"target\": \"4\"}\n\
                    {\"id\": \"c\", \"prompt\": \"3+3=\", \"target\": \"6\"}\n";

/// A run directory whose settings are written (the "model" is not a GGUF file, so no sample
/// is drawn) and whose samples are `samples`.
fn run_dir(root: &Path, name: &str, rule: StopRule, samples: &str) -> PathBuf {
    let model = root.join("model.gguf");
    std::fs::write(&model, b"not a model").unwrap();
    let task = root.join("task.jsonl");
    if !task.exists() {
        std::fs::write(&task, TASK).unwrap();
    }
    let mut opts = RunOptions::new(model, task, root.join(name));
    opts.backend = BackendKind::Native;
    opts.rule = rule;
    assert!(start(&opts, &mut |_: &evals::run::Stats| {}).is_err());
    std::fs::write(opts.out.join("samples.jsonl"), samples).unwrap();
    opts.out
}

fn line(p: u64, id: &str, index: u64, passed: bool) -> String {
    serde_json::json!({
        "problem": id, "p": p, "index": index, "passed": passed,
        "verdict": if passed { "pass" } else { "fail" },
        "detail": "", "text": "x", "tokens": [1, 2, 3], "stop": "eog",
        "logprob": -1.0, "sampling_logprob": -1.0,
        "session": 0, "elapsed_s": 1.0, "judge_ms": 0.1
    })
    .to_string()
        + "\n"
}

/// PassUntil with r = 2 where every problem's second success comes at sample `m`: the
/// unbiased estimate (r−1)/(K−1) is exactly 1/m.
fn passuntil_samples(m: u64) -> String {
    let mut s = String::new();
    for (p, id) in [(0, "a"), (1, "b"), (2, "c")] {
        for i in 0..=m {
            s += &line(p, id, i, i == 0 || i == m);
        }
    }
    s
}

const RULE: StopRule = StopRule::PassUntil {
    r: 2,
    max_samples: 1000,
};

#[test]
fn a_planted_law_is_recovered_and_the_held_out_run_predicted() {
    let tmp = tempfile::tempdir().unwrap();
    // PU(N) = exp(−3·N^−0.5): the N at which PU = 1/m is (3 / ln m)².
    let (c, alpha) = (3.0f64, 0.5f64);
    let at = |m: f64| (c / m.ln()).powf(1.0 / alpha);
    let ms = [50u64, 10, 4];
    let runs: Vec<PathBuf> = ms
        .iter()
        .map(|&m| run_dir(tmp.path(), &format!("m{m}"), RULE, &passuntil_samples(m)))
        .collect();
    let held = run_dir(tmp.path(), "held", RULE, &passuntil_samples(2));
    let mut x: Vec<f64> = ms.iter().map(|&m| at(m as f64)).collect();
    x.push(at(2.0));
    let r = scale(&ScaleOptions {
        runs: runs.clone(),
        predict: Some(held.clone()),
        x: Some(x.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.axis, Axis::Given);
    assert_eq!(r.problems, 3);
    for (point, &m) in r.runs.iter().zip(&ms) {
        assert!(
            (point.pass_rate.value - 1.0 / m as f64).abs() < 1e-12,
            "{point:?}"
        );
        assert_eq!(point.measure, "PassUntil (unbiased)");
    }
    let fit = r.fit.as_ref().expect("a fit");
    assert!((fit.c.value - c).abs() < 1e-9, "{fit:?}");
    assert!((fit.alpha.value - alpha).abs() < 1e-9, "{fit:?}");
    assert_eq!(fit.points, 3);
    let e = r.emergence.as_ref().expect("three points test emergence");
    assert!(e.q.value.abs() < 1e-9, "{e:?}");
    assert!(e.class.starts_with("linear"), "{e:?}");
    let p = r.prediction.as_ref().expect("a prediction");
    assert!((p.predicted.value - 0.5).abs() < 1e-9, "{p:?}");
    assert!((p.measured.value - 0.5).abs() < 1e-12, "{p:?}");
    assert!(p.error.value.abs() < 1e-9, "{p:?}");
    assert!((p.predicted_by_instances - 0.5).abs() < 1e-9, "{p:?}");
    assert_eq!(p.instance_laws, 3);
    // PassUntil runs have no pass@k against compute, and the report says why.
    assert!(r.budget.is_empty());
    assert!(
        r.notes.iter().any(|n| n.contains("fixed-n")),
        "{:?}",
        r.notes
    );
    let text = r.render();
    assert!(
        text.contains("law: PU(x)") && text.contains("held out"),
        "{text}"
    );
    let svg = tmp.path().join("scale.svg");
    assert_eq!(r.plot(&svg).unwrap(), vec![svg.clone()]);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // High pass rates plot too (the axis floor stays below the ceiling).
    let m3 = run_dir(tmp.path(), "m3", RULE, &passuntil_samples(3));
    let high = scale(&ScaleOptions {
        runs: vec![m3, held.clone()],
        x: Some(vec![at(3.0), at(2.0)]),
        ..Default::default()
    })
    .unwrap();
    high.plot(&tmp.path().join("high.svg")).unwrap();
    // One problem left undecided in one run: the points are the other problems.
    let mut partial = passuntil_samples(10);
    partial = partial
        .lines()
        .filter(|l| !(l.contains("\"problem\":\"c\"") && l.contains("\"index\":10,")))
        .map(|l| format!("{l}\n"))
        .collect();
    let open = run_dir(tmp.path(), "open", RULE, &partial);
    let r = scale(&ScaleOptions {
        runs: vec![runs[0].clone(), open],
        x: Some(x[..2].to_vec()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((r.problems, r.dropped.clone()), (2, vec!["c".to_string()]));
    assert!(r.emergence.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("emergence")),
        "{:?}",
        r.notes
    );
}

#[test]
fn curvature_is_found_with_its_sign() {
    // Multi-step reasoning: PU = exp(−2N^−0.5)·exp(−N^−1) bends upward in ln(−ln PU) (EVALS-SPEC
    // §2). Problems of a run differ, so the bootstrap interval has width.
    let tmp = tempfile::tempdir().unwrap();
    let ns = [1.0f64, 3.0, 10.0, 30.0, 100.0];
    let pu = |n: f64| (-2.0 * n.powf(-0.5)).exp() * (-1.0 / n).exp();
    let mut dirs = Vec::new();
    for (i, &n) in ns.iter().enumerate() {
        // Fixed n = 4000 samples; problem j passes ≈ (1 ± 0.05·j)·PU(N)·4000 of them.
        let mut s = String::new();
        for (p, id) in [(0u64, "a"), (1, "b"), (2, "c")] {
            let rate = pu(n) * (1.0 + 0.05 * (p as f64 - 1.0));
            let c = (rate * 4000.0).round() as u64;
            for k in 0..4000 {
                s += &line(p, id, k, k < c);
            }
        }
        let rule = StopRule::Fixed {
            n: 4000,
            k: vec![1],
        };
        dirs.push(run_dir(tmp.path(), &format!("n{i}"), rule, &s));
    }
    let r = scale(&ScaleOptions {
        runs: dirs,
        x: Some(ns.to_vec()),
        ..Default::default()
    })
    .unwrap();
    let e = r.emergence.unwrap();
    let exact: Vec<f64> = ns.iter().map(|&n| pu(n)).collect();
    let q = evals::metrics::passuntil::curvature(&ns, &exact).unwrap();
    assert!(
        q > 0.0 && (e.q.value - q).abs() < 0.05 * q,
        "{e:?} against {q}"
    );
    assert!(e.class.starts_with("convex"), "{e:?}");
    let (lo, hi) = e.q.ci95.unwrap();
    assert!(lo > 0.0 && lo < e.q.value && e.q.value < hi, "{e:?}");
    // The fake model files cannot size the budget: each run says so.
    assert!(r.budget.is_empty());
    assert_eq!(
        r.notes
            .iter()
            .filter(|n| n.contains("no budget curve"))
            .count(),
        5
    );
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "a", RULE, &passuntil_samples(4));
    let b = run_dir(tmp.path(), "b", RULE, &passuntil_samples(8));
    // No x and no readable model file.
    match scale(&ScaleOptions {
        runs: vec![a.clone(), b.clone()],
        ..Default::default()
    }) {
        Err(e @ ScaleError::Model { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("--x") && msg.contains("model"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // As many x values as runs, each positive.
    for x in [vec![1.0], vec![1.0, -2.0]] {
        match scale(&ScaleOptions {
            runs: vec![a.clone(), b.clone()],
            x: Some(x),
            ..Default::default()
        }) {
            Err(ScaleError::Settings(msg)) => assert!(msg.contains("x"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
    // Another task.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("task.jsonl"),
        "{\"id\": \"a\", \"prompt\": \"9+9=\", \"target\": \"18\"}\n",
    )
    .unwrap();
    let c = run_dir(other.path(), "c", RULE, &line(0, "a", 0, true));
    match scale(&ScaleOptions {
        runs: vec![a.clone(), c],
        x: Some(vec![1.0, 2.0]),
        ..Default::default()
    }) {
        Err(ScaleError::Settings(msg)) => assert!(msg.contains("different task"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // A directory that is not a run.
    match scale(&ScaleOptions {
        runs: vec![tmp.path().join("nothing")],
        x: Some(vec![1.0]),
        ..Default::default()
    }) {
        Err(ScaleError::Run(e)) => assert!(e.to_string().contains("nothing"), "{e}"),
        other => panic!("{other:?}"),
    }
}
