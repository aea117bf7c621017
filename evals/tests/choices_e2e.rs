//! Multiple-choice problems in `run` on the default model, natively: each choice scored once
//! after a prompt evaluated once, the same log-likelihoods as `score` computes for each
//! choice alone, records that survive a kill, a mixed task giving both report sections, and
//! BIG-bench's multiple-choice `date_understanding` out of the box.

use std::path::Path;

use evals::generate::BackendKind;
use evals::run::{load_choices, report::report, start, RunOptions, StopRule};

mod common;

const TASK: &str = r#"{"id": "capital", "prompt": "The capital of France is", "choices": [" Paris", " London", " Berlin"], "answer": 0}
{"id": "sum", "prompt": "Q: What is 2 + 2?\nA:", "target": "4", "stop": ["\n"]}
{"id": "sky", "prompt": "On a clear day the sky is", "choices": [" green", " blue", " the colour of a ripe tomato"], "answer": 1}
{"id": "half", "prompt": "Half of ten is", "choices": [" five", " 5", " six"], "scores": [1, 1, 0]}
"#;

fn options(model: &Path, task: &Path, out: &Path) -> RunOptions {
    let mut opts = RunOptions::new(model.to_path_buf(), task.to_path_buf(), out.to_path_buf());
    opts.backend = BackendKind::Native;
    opts.rule = StopRule::Fixed { n: 2, k: vec![1] };
    opts.max_tokens = 4;
    opts.exec.threads = Some(2);
    opts
}

#[test]
fn a_mixed_task_samples_and_scores() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task.jsonl");
    std::fs::write(&task, TASK).unwrap();
    let opts = options(&model, &task, &tmp.path().join("run"));
    let outcome = start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
    assert_eq!((outcome.choices, outcome.choices_scored), (3, 3));
    let path = opts.out.join("choices.jsonl");
    let (records, _) = load_choices(&path).unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.problem.as_str()).collect();
    assert_eq!(ids, ["capital", "sky", "half"]);
    // Each choice's log-likelihood is what `score` gives for it alone, bit for bit (the native
    // engine's rows do not depend on what shares the batch).
    let prompts = [
        "The capital of France is",
        "On a clear day the sky is",
        "Half of ten is",
    ];
    for (r, prompt) in records.iter().zip(prompts) {
        for (j, choice) in r.choices.iter().enumerate() {
            let alone = evals::generate::score(
                BackendKind::Native,
                &model,
                &evals::generate::ScoreRequest {
                    prompt: prompt.into(),
                    continuation: choice.clone(),
                    top: 0,
                    threads: Some(2),
                    activations: engine::Activations::Q8,
                },
            )
            .unwrap();
            assert_eq!(
                r.loglikelihoods[j], alone.logprob,
                "{} {choice:?}",
                r.problem
            );
            assert_eq!(r.tokens[j], alone.tokens.len());
            assert_eq!(r.greedy[j], alone.is_greedy);
        }
    }
    // Both sections in one report.
    let rep = report(&opts.out).unwrap();
    assert_eq!(rep.problems.len(), 1);
    assert_eq!(rep.problems[0].trials, 2);
    let c = rep.choices.as_ref().unwrap();
    assert_eq!((c.problems, c.scored), (3, 3));
    // "half" has two correct choices: either counts.
    let half = &c.lines[2];
    assert_eq!(half.correct, half.chosen < 2);
    for e in [&c.acc, &c.acc_norm, &c.brier, &c.ece] {
        let (lo, hi) = e.ci95.expect("an interval");
        assert!(lo <= e.value && e.value <= hi, "{e:?}");
    }
    // The generative problem's reference answer is teacher-forced too: " 4" after "A:", the
    // log-probability `score` gives it, and the samples' edit distance to it.
    let (refs, _) = load_choices(&opts.out.join("references.jsonl")).unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].choices, [" 4"]);
    let alone = evals::generate::score(
        BackendKind::Native,
        &model,
        &evals::generate::ScoreRequest {
            prompt: "Q: What is 2 + 2?\nA:".into(),
            continuation: " 4".into(),
            top: 0,
            threads: Some(2),
            activations: engine::Activations::Q8,
        },
    )
    .unwrap();
    let line = rep.problems[0]
        .reference
        .as_ref()
        .expect("a reference line");
    assert_eq!(line.logprob, alone.logprob);
    assert_eq!(line.probability, alone.logprob.exp());
    assert!(line.edit_distance.is_some());
    let cont = rep
        .task
        .continuous
        .as_ref()
        .expect("the continuous section");
    assert_eq!((cont.problems, cont.logprob.value), (1, alone.logprob));
    assert!(cont.edit_distance_note.is_none(), "{cont:?}");
    let text = rep.render();
    assert!(
        text.contains("pass@1") && text.contains("acc_norm"),
        "{text}"
    );
    assert!(text.contains("continuous metrics"), "{text}");
    let svg = tmp.path().join("reliability.svg");
    rep.plot_reliability(&svg).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("ECE"));

    // Killed while writing the second record: resuming scores only what is missing, the same.
    let bytes = std::fs::read(&path).unwrap();
    let first_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(&path, &bytes[..first_end + 20]).unwrap();
    let again = evals::run::resume(&opts.out, &opts.exec, &mut |_: &evals::run::Stats| {}).unwrap();
    assert_eq!(again.choices_scored, 2);
    let (after, _) = load_choices(&path).unwrap();
    let strip = |v: &[evals::run::ChoiceRecord]| -> Vec<evals::run::ChoiceRecord> {
        v.iter()
            .map(|r| evals::run::ChoiceRecord {
                session: 0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&records));
    assert_eq!(after[1].session, 1);
    // Nothing left: a third session scores nothing.
    let third = start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
    assert_eq!(third.choices_scored, 0);
}

#[test]
fn bigbench_multiple_choice_runs_out_of_the_box() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = common::bigbench_tasks_dir().join("date_understanding/task.json");
    let mut task: serde_json::Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    let examples = task["examples"].as_array_mut().unwrap();
    examples.truncate(4);
    let path = tmp.path().join("task.json");
    std::fs::write(&path, serde_json::to_vec(&task).unwrap()).unwrap();
    let opts = options(&model, &path, &tmp.path().join("run"));
    let outcome = start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
    assert_eq!(outcome.choices_scored, 4);
    let rep = report(&opts.out).unwrap();
    assert!(rep.problems.is_empty());
    let c = rep.choices.unwrap();
    assert_eq!(c.scored, 4);
    for l in &c.lines {
        assert!(l.confidence > 0.0 && l.confidence <= 1.0 && l.p_gold <= l.confidence + 1e-12);
    }
}

/// The same problems through llama.cpp: the prompt's cells forked across its per-sequence
/// streams, each choice's log-likelihood close to `score`'s for it alone (llama.cpp's rows
/// depend on the batch they are computed in, so not bit for bit).
#[cfg(feature = "llama-cpp")]
#[test]
fn llama_cpp_scores_the_choices_too() {
    let model = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task.jsonl");
    std::fs::write(&task, TASK).unwrap();
    let mut opts = options(&model, &task, &tmp.path().join("run"));
    opts.backend = BackendKind::LlamaCpp;
    start(&opts, &mut |_: &evals::run::Stats| {}).unwrap();
    let (records, _) = load_choices(&opts.out.join("choices.jsonl")).unwrap();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    for (j, choice) in r.choices.iter().enumerate() {
        let alone = evals::generate::score(
            BackendKind::LlamaCpp,
            &model,
            &evals::generate::ScoreRequest {
                prompt: "The capital of France is".into(),
                continuation: choice.clone(),
                top: 0,
                threads: Some(2),
                activations: engine::Activations::Q8,
            },
        )
        .unwrap();
        assert!(
            (r.loglikelihoods[j] - alone.logprob).abs() < 0.05,
            "{choice:?}: {} vs {}",
            r.loglikelihoods[j],
            alone.logprob
        );
    }
    // " Paris" is the model's answer on either engine.
    assert_eq!(
        evals::metrics::calibration::argmax_first(&r.loglikelihoods),
        Some(0)
    );
}
