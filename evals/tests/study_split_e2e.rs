//! `study --split-activations` on the default model, natively: every type runs with 8-bit and
//! exact activations, the reference with exact ones, and each shift splits into a weights'
//! part and an activations' part that add up to it.

use engine::quantize::Target;
use evals::compare::CompareOptions;
use evals::run::{RunOptions, StopRule};
use evals::study::{study, StudyError, StudyOptions};

#[test]
fn a_split_study_separates_weights_from_activations() {
    let base = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task.jsonl");
    let all = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tasks/arithmetic.jsonl"
    ))
    .unwrap();
    let three: Vec<&str> = all.lines().filter(|l| l.starts_with('{')).take(3).collect();
    std::fs::write(&task, three.join("\n") + "\n").unwrap();
    let mut run = RunOptions::new(base.clone(), task, tmp.path().into());
    run.rule = StopRule::Fixed { n: 4, k: vec![1] };
    run.max_tokens = 6;
    run.exec.threads = Some(2);
    run.exec.batch = 8;
    let mut opts = StudyOptions {
        base,
        reference: None,
        types: vec![Target::Type(quant::GgmlType::Q4_0)],
        run,
        text: Some((
            concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md").into(),
            CompareOptions {
                ctx: 64,
                chunks: Some(3),
                threads: Some(2),
                ..Default::default()
            },
        )),
        out: tmp.path().join("study"),
        split: true,
    };
    let r = study(
        &opts,
        &mut |m| eprintln!("{m}"),
        &mut |_: &evals::run::Stats| {},
    )
    .unwrap();
    assert!(r.reference.contains("exact activations"), "{}", r.reference);
    for dir in ["reference-exact", "q4_0", "q4_0-exact"] {
        assert!(
            opts.out.join("runs").join(dir).join("run.json").is_file(),
            "{dir}"
        );
    }
    let t = &r.types[1];
    let sp = t.split.as_ref().expect("the split");
    assert!(r.types[0].split.is_none());
    // The parts add up to the whole: (q8 − exact) + (exact − reference) = q8 − reference.
    let (total, w, a) = (
        t.shift.unwrap().0,
        sp.weight_shift.unwrap().0,
        sp.activation_shift.unwrap().0,
    );
    assert!((w + a - total).abs() < 1e-12, "{w} + {a} vs {total}");
    let kld = t.kld.unwrap();
    let (kw, ka) = (sp.kld_weight.unwrap(), sp.kld_activation.unwrap());
    assert!(kw.0 > 0.0 && kw.1 <= kw.0 && kw.0 <= kw.2, "{kw:?}");
    assert!(ka.1 <= ka.0 && ka.0 <= ka.2, "{ka:?}");
    assert!((kw.0 + ka.0 - kld).abs() < 1e-9, "{kw:?} + {ka:?} vs {kld}");
    // Q4_0 from Q4_1 moves the weights far more than 8-bit activations move anything.
    assert!(kw.0 > ka.0.abs(), "{kw:?} vs {ka:?}");
    let text = r.render();
    assert!(text.contains("split into weights"), "{text}");
    let written = r.plot(&tmp.path().join("study.svg")).unwrap();
    let kld_svg = std::fs::read_to_string(&written[1]).unwrap();
    assert!(kld_svg.contains("exact activations"));
    // Every score carries its interval.
    for t in &r.types {
        let (lo, hi) = t.score_ci95.expect("an interval");
        assert!(lo <= t.score && t.score <= hi, "{t:?}");
    }
    assert!(sp.score_exact_ci95.is_some());
    let (lo, hi) = t.text_ci95.kld.expect("the KL interval");
    assert!(lo < kld && kld < hi, "{lo} {kld} {hi}");
    assert!(r.types[0].text_ci95.ppl.is_some() && r.types[0].text_ci95.kld.is_none());
    assert!(text.contains("on the text, 95% intervals"), "{text}");
    // The study feeds `scale`: its directory stands for its runs, on the bits-per-weight axis
    // (one model, requantized), the reference's exact-activation run standing for it.
    let s = evals::scale::scale(&evals::scale::ScaleOptions {
        runs: vec![opts.out.clone()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.axis, evals::scale::Axis::BitsPerWeight);
    let dirs: Vec<&str> = s
        .runs
        .iter()
        .map(|p| p.dir.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(dirs, ["reference-exact", "q4_0"]);
    assert!(
        s.runs[0].x > 4.5 && s.runs[1].x < s.runs[0].x,
        "{:?}",
        s.runs
    );
    assert_eq!(s.budget.len(), 2);
    // llama.cpp has no exact mode: the split is refused before anything runs.
    opts.run.backend = engine::BackendKind::LlamaCpp;
    opts.out = tmp.path().join("refused");
    let e = study(&opts, &mut |_| {}, &mut |_: &evals::run::Stats| {}).unwrap_err();
    assert!(matches!(e, StudyError::Settings(_)), "{e}");
    assert!(!opts.out.exists());
}
