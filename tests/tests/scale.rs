//! `pass-until scale` on real runs of two models of different sizes (SmolLM2 135M and
//! Gemma 3 270M): the size axis read from the files, and pass@k against compute with the
//! FLOPs of each sample and each prompt.

use evals::generate::BackendKind;
use evals::run::{start, RunOptions, StopRule};
use evals::scale::{scale, Axis, ScaleOptions};
use std::path::Path;

/// (parameters, non-embedding parameters, weights multiplied per token) of a GGUF file.
fn params(path: &Path) -> (u64, u64, u64) {
    let f = quant::gguf::GgufFile::open(path).unwrap();
    let all: u64 = f.tensor_infos().iter().map(|t| t.n_elements()).sum();
    let embd = f
        .tensor_infos()
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap()
        .n_elements();
    let tied = !f.tensor_infos().iter().any(|t| t.name == "output.weight");
    (all, all - embd, if tied { all } else { all - embd })
}

#[test]
fn budget_reallocation_on_two_real_models() {
    let tmp = tempfile::tempdir().unwrap();
    let all = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/arithmetic.jsonl"),
    )
    .unwrap();
    let lines: Vec<&str> = all.lines().filter(|l| l.starts_with('{')).take(3).collect();
    let task = tmp.path().join("task.jsonl");
    std::fs::write(&task, lines.join("\n") + "\n").unwrap();
    let models = [
        passuntil_tests::default_model(),
        passuntil_tests::gemma_model(),
    ];
    let mut dirs = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let mut opts = RunOptions::new(
            model.to_path_buf(),
            task.clone(),
            tmp.path().join(format!("m{i}")),
        );
        opts.backend = BackendKind::Native;
        opts.rule = StopRule::Fixed {
            n: 6,
            k: vec![1, 2],
        };
        opts.max_tokens = 6;
        opts.exec.batch = 8;
        start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
        dirs.push(opts.out);
    }
    let r = scale(&ScaleOptions {
        runs: dirs.clone(),
        ..Default::default()
    })
    .unwrap();
    // Different parameter counts: the axis is parameters, in billions.
    assert_eq!(r.axis, Axis::Params);
    let sizes: Vec<(u64, u64, u64)> = models.iter().map(|m| params(m)).collect();
    for (point, &(all, non_embd, flop)) in r.runs.iter().zip(&sizes) {
        assert_eq!(point.x, all as f64 / 1e9);
        let size = point.size.unwrap();
        assert_eq!(
            (size.params, size.non_embedding_params, size.flop_params),
            (all, non_embd, flop)
        );
    }
    // Gemma's 262k-row head makes it the dearer model per token, though it has fewer
    // non-embedding parameters than SmolLM2.
    assert!(sizes[0].2 < sizes[1].2, "{sizes:?}");
    assert!(sizes[0].1 > sizes[1].1, "{sizes:?}");
    // FLOPs: 2 × non-embedding parameters × tokens; prompts tokenized as the run did.
    assert_eq!(r.budget.len(), 2);
    for ((curve, point), (&(_, _, flop), model)) in
        r.budget.iter().zip(&r.runs).zip(sizes.iter().zip(models))
    {
        assert_eq!(curve.n, 6);
        let two_n = 2.0 * flop as f64;
        assert!((curve.flops_per_sample - two_n * point.mean_tokens).abs() < 1.0);
        let m = engine::native::NativeModel::open(model).unwrap();
        let prompt_tokens: usize = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                engine::backend::Model::tokenize(
                    &*m,
                    v["prompt"].as_str().unwrap().as_bytes(),
                    engine::backend::TokenizeOptions {
                        add_special: true,
                        parse_special: false,
                    },
                )
                .unwrap()
                .len()
            })
            .sum();
        assert!(
            (curve.flops_prompt - two_n * prompt_tokens as f64 / 3.0).abs() < 1.0,
            "{curve:?}"
        );
        let ks: Vec<u64> = curve.points.iter().map(|p| p.k).collect();
        assert_eq!(ks, vec![1, 2, 4, 6]);
        for p in &curve.points {
            assert!(
                (p.flops - (curve.flops_prompt + p.k as f64 * curve.flops_per_sample)).abs() < 1.0
            );
            assert!((0.0..=1.0).contains(&p.pass_at_k.value));
        }
    }
    // The smaller model sampled more at each budget of the larger one that it can afford.
    assert!(!r.matches.is_empty());
    let (small, large) = (&r.budget[0], &r.budget[1]);
    for m in &r.matches {
        assert_eq!(
            (m.cheap.as_str(), m.dear.as_str()),
            (small.dir.as_str(), large.dir.as_str())
        );
        let afford = ((m.flops - small.flops_prompt) / small.flops_per_sample).floor() as u64;
        assert_eq!(m.k_cheap, afford.min(small.n));
        assert!(m.k_cheap >= m.k_dear, "{m:?}");
        assert!((m.gain.value - (m.pass_cheap - m.pass_dear)).abs() < 1e-12);
    }
    assert!(r.render().contains("equal compute"));
    let svg = tmp.path().join("scale.svg");
    let written = r.plot(&svg).unwrap();
    assert_eq!(
        written,
        vec![svg.clone(), tmp.path().join("scale-budget.svg")]
    );
}
