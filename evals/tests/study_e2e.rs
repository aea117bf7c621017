//! `study` on the default model through llama.cpp: requantize, run the same problems with the
//! same seeds, compare on a text.
#![cfg(feature = "llama-cpp")]

use engine::quantize::Target;
use evals::compare::CompareOptions;
use evals::generate::BackendKind;
use evals::run::{RunOptions, StopRule};
use evals::study::{study, StudyOptions};

#[test]
fn a_small_study_is_paired_cached_and_reported() {
    let base = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task.jsonl");
    let all = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tasks/arithmetic.jsonl"
    ))
    .unwrap();
    let two: Vec<&str> = all.lines().filter(|l| l.starts_with('{')).take(2).collect();
    std::fs::write(&task, two.join("\n") + "\n").unwrap();
    let mut run = RunOptions::new(base.clone(), task, tmp.path().into());
    // pass@k with n = 4: the study reports paired pass@k shifts.
    run.rule = StopRule::Fixed {
        n: 4,
        k: vec![1, 2],
    };
    run.max_tokens = 6;
    run.exec.threads = Some(2);
    run.exec.batch = 8;
    run.backend = BackendKind::LlamaCpp;
    let opts = StudyOptions {
        base,
        reference: None,
        types: vec![Target::Type(quant::GgmlType::Q8_0)],
        run,
        text: Some((
            concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md").into(),
            CompareOptions {
                ctx: 64,
                chunks: Some(2),
                threads: Some(2),
                backend: BackendKind::LlamaCpp,
                ..Default::default()
            },
        )),
        out: tmp.path().join("study"),
        split: false,
    };
    let mut log = Vec::new();
    let r = study(
        &opts,
        &mut |m| log.push(m.to_owned()),
        &mut |_: &evals::run::Stats| {},
    )
    .unwrap();
    assert!(
        log.iter().any(|m| m.contains("requantizing to q8_0")),
        "{log:?}"
    );
    assert_eq!(r.types.len(), 2);
    assert_eq!(r.problems.len(), 2);
    assert_eq!(r.types[0].name, "reference");
    let q8 = &r.types[1];
    assert!(q8.bits_per_weight > 8.0 && q8.bits_per_weight < 9.0);
    let kld = q8.kld.unwrap();
    assert!(kld > 0.0 && kld < 0.05, "{kld}");
    assert!(q8.shift.is_some());
    let ks: Vec<u64> = q8.pass_at_k_shift.iter().map(|k| k.k).collect();
    assert_eq!(ks, [1, 2]);
    for k in &q8.pass_at_k_shift {
        assert!(k.lo <= k.mean && k.mean <= k.hi, "{k:?}");
        assert!(k.mean.abs() <= 1.0);
    }
    assert!(r.render().contains("pass@k shift vs reference"));
    for t in &r.types {
        assert!(opts
            .out
            .join("runs")
            .join(&t.name)
            .join("samples.jsonl")
            .is_file());
    }
    assert!(r.render().contains("pass rate per problem"));
    let svg = tmp.path().join("study.svg");
    let written = r.plot(&svg).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("q8_0"));
    // With a text, KL divergence gets its own plot beside the score's.
    assert_eq!(written.len(), 2);
    assert!(std::fs::read_to_string(&written[1])
        .unwrap()
        .contains("KL divergence"));

    // Again: the requantized model is reused and the finished runs are not redone.
    let mut log = Vec::new();
    let again = study(
        &opts,
        &mut |m| log.push(m.to_owned()),
        &mut |_: &evals::run::Stats| {},
    )
    .unwrap();
    assert!(!log.iter().any(|m| m.contains("requantizing")), "{log:?}");
    assert_eq!(again.rates, r.rates);
}
